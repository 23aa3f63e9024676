"""The workflows' log vocabulary: an entry for one log, the `[ts] ACTION: subject` block with its
`Field: value` lines, the workflows' unit names, and the small words every entry uses."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from reconciler.plan.planner import STATES, PlannedUnit
from reconciler.records.state_file import LEGACY_STATUS
from reconciler.spec.units import Unit

LogName = Literal["experiment", "finetune", "eval"]


@dataclass(frozen=True)
class Entry:
    """One entry for one log: a one-line STATUS_CHECK or a block ending with a blank line."""

    log: LogName
    action: str
    text: str


def block(ts: str, action: str, subject: str | None, *lines: tuple[str, str]) -> str:
    """`[ts] ACTION: subject` then `Field: value` lines and a blank line, as the workflows write them."""
    head = f"[{ts}] {action}" + (f": {flat(subject)}" if subject else "")
    return "\n".join([head, *(f"{k}: {flat(v)}" for k, v in lines)]) + "\n\n"


def flat(text: str) -> str:
    # One value per line: a newline inside a value could fake a `Job ID:` line for the harvest regexes.
    return " ".join(str(text).split())


def unit_name(unit: Unit | PlannedUnit) -> str:
    """The workflows' identifiers: `{run}` for a fine-tune, `{run}/{task}/epoch{N}` or `{run}/{task}` for an eval."""
    if unit.kind == "finetune":
        return unit.run
    return f"{unit.run}/{unit.task}" + (f"/epoch{unit.epoch}" if unit.epoch is not None else "")


def log_of(kind: str) -> LogName:
    return "finetune" if kind == "finetune" else "eval"


def counts_line(states: dict[str, tuple[str, str | None]]) -> str:
    c = Counter(s for s, _ in states.values())
    return ", ".join(f"{c[s]} {s}" for s in STATES if c[s]) or "no units"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def slurm_word(state: str) -> str:
    return LEGACY_STATUS.get(state, state.upper())
