"""Remedies on retry, chosen once per pass (pure): a smaller batch after running out of memory, more
time after a timeout. The engine chooses (annotate.py, with the journal's last remedy and the spec's
values); the plan carries the choice (PlannedUnit.remedy); apply renders and journals it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from reconciler.jobs import shows_oom
from reconciler.timefmt import format_time_limit, parse_time_limit

if TYPE_CHECKING:
    from reconciler.plan.planner import PlannedUnit

TIME_FACTOR = 1.5
MIN_BATCH_SIZE = 1


@dataclass(frozen=True)
class Remedy:
    """Values a retry renders instead of the spec's; None keeps the spec's value."""

    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    time: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """For the journal (`remedy` event) and JSON plans."""
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Remedy | None:
        """From a journal record (unknown keys ignored); None when it carries no remedy values."""
        if not data:
            return None
        batch, accum = _count(data.get("batch_size")), _count(data.get("gradient_accumulation_steps"))
        time = data.get("time") if isinstance(data.get("time"), str) else None
        if batch is None and accum is None and time is None:
            return None
        return cls(batch_size=batch, gradient_accumulation_steps=accum, time=time,
                   reason=str(data.get("reason") or ""))


@dataclass(frozen=True)
class RemedyChoice:
    """The remedy a resubmission renders, and whether it is new this pass (apply journals it once
    rendered) or kept from the last retry."""

    remedy: Remedy
    new: bool


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def failure_cause(failure: str | None, stdout_tail: str = "") -> str | None:
    """'out_of_memory', 'timeout' or None, from a failure class (or SLURM state) and the job's stdout tail."""
    word = (failure or "").lower()
    if word in ("out_of_memory", "oom"):
        return "out_of_memory"
    if word in ("timeout", "deadline"):
        return "timeout"
    if word in ("other", "failed") and shows_oom(stdout_tail):
        return "out_of_memory"
    return None


def next_remedy(failure: str | None, previous: Remedy | None, stdout_tail: str = "", *, start: Remedy,
                max_time: str | None = None, kind: str = "finetune") -> Remedy | None:
    """The remedy for the next attempt, or None when none applies (or the last one is exhausted).

    `start` is `scaffold.remedies.baseline(...)`; `previous` the remedy the failed attempt ran with
    (it builds on it). OOM (fine-tunes only): batch size halved, gradient accumulation doubled (same
    effective batch), down to a batch of 1. TIMEOUT: 1.5x the time limit, capped at `max_time` (the
    partition's limit, when known).
    """
    cause = failure_cause(failure, stdout_tail)
    current = _merge(start, previous)
    if cause == "out_of_memory" and kind == "finetune":
        batch, accum = current.batch_size, current.gradient_accumulation_steps or 1
        if batch is None or batch <= MIN_BATCH_SIZE:
            return None
        smaller = max(MIN_BATCH_SIZE, batch // 2)
        return replace(previous or Remedy(), batch_size=smaller, gradient_accumulation_steps=accum * 2,
                       reason=f"out of memory: batch size {batch} -> {smaller}, "
                              f"gradient accumulation {accum} -> {accum * 2}")
    if cause == "timeout" and current.time is not None:
        seconds = parse_time_limit(current.time)
        if seconds is None:
            return None  # no limit to raise
        longer = math.ceil(seconds * TIME_FACTOR / 60) * 60  # whole minutes
        cap = parse_time_limit(max_time) if max_time else None
        if cap is not None:
            longer = min(longer, cap)
        if longer <= seconds:
            return None
        new_time = format_time_limit(longer)
        capped = " (the partition's limit)" if cap is not None and longer == cap else ""
        return replace(previous or Remedy(), time=new_time,
                       reason=f"timeout: time limit {current.time} -> {new_time}{capped}")
    return None


def _merge(start: Remedy, previous: Remedy | None) -> Remedy:
    if previous is None:
        return start
    return Remedy(
        batch_size=previous.batch_size if previous.batch_size is not None else start.batch_size,
        gradient_accumulation_steps=previous.gradient_accumulation_steps
        if previous.gradient_accumulation_steps is not None else start.gradient_accumulation_steps,
        time=previous.time if previous.time is not None else start.time,
    )


def choose_remedy(p: PlannedUnit, previous: Remedy | None, start: Callable[[], Remedy]) -> RemedyChoice | None:
    """The remedy a resubmission renders: a new one for an OOM or a timeout, else the last retry's
    (`previous`, from the journal), else None. `start` gives the spec's values (scaffold.remedies.baseline),
    asked only when a new remedy is worked out."""
    if p.action != "resubmit" or p.state in ("done", "outdated"):
        return None  # first submissions and replacements run the spec as it is now
    kept = None if previous is None else RemedyChoice(previous, new=False)
    if failure_cause(p.failure_class) is None:
        return kept
    remedy = next_remedy(p.failure_class, previous, start=start(), kind=p.kind)
    if remedy is None:
        return kept  # nothing left to shrink or extend: the retry budget decides
    return RemedyChoice(remedy, new=True)
