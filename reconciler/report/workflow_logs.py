"""Logs in the workflows' format: `{experiment}/logs/run-{experiment,torchtune,inspect}.log`, appended each pass."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from reconciler.crashpoints import crash_point
from reconciler.plan import STATES, PlannedUnit
from reconciler.report.state_file import (
    StateFile,
    complete_scopes,
    effective_states,
    fmt_duration,
    fmt_ts,
    parse_ts,
    read_state,
    update_legacy_summary,
    write_state,
)
from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.write import check_inside
from reconciler.spec.units import Desired, Unit

if TYPE_CHECKING:
    from reconciler.loop import PassResult

LogName = Literal["experiment", "finetune", "eval"]
LOG_FILES: dict[str, str] = {
    "experiment": "run-experiment.log",
    "finetune": "run-torchtune.log",
    "eval": "run-inspect.log",
}
# The start of an entry; used to cut an entry left half-written by a crash.
ENTRY_START = re.compile(rb"(?m)^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")
TAIL_BYTES = 65536
ALL_COMPLETE_LINE = re.compile(r"^\[[\d :-]+\] ALL_COMPLETE\b")


@dataclass(frozen=True)
class Entry:
    """One entry for one log: a one-line STATUS_CHECK or a block ending with a blank line."""

    log: LogName
    action: str
    text: str


@dataclass
class PassRecord:
    """What record_pass left behind."""

    state: StateFile | None
    entries: list[Entry] = field(default_factory=list)
    legacy_updated: bool = False
    warnings: list[str] = field(default_factory=list)


def record_pass(desired: Desired, result: PassResult, now: float | None = None) -> PassRecord:
    """Everything a pass leaves for people: logs, then state.json, then the legacy table.

    Logs first: they compare with the previous state.json, which this call then replaces. A disk
    problem here is reported as a warning, never allowed to stop the reconciler.
    """
    now = time.time() if now is None else now
    record = PassRecord(state=None)
    previous = read_state(desired.layout.state_dir)
    try:
        record.entries = write_pass_logs(desired, result, now, previous=previous)
    except (OSError, ScaffoldError) as exc:
        record.warnings.append(f"cannot write logs in {desired.layout.logs_dir}: {exc}")
    try:
        record.state = write_state(desired, result, now, previous=previous)
        record.legacy_updated = update_legacy_summary(desired.layout.experiment_dir, record.state)
    except OSError as exc:
        record.warnings.append(f"cannot write {desired.layout.state_dir / 'state.json'}: {exc}")
    return record


def write_pass_logs(desired: Desired, result: PassResult, now: float | None = None,
                    previous: StateFile | None = None) -> list[Entry]:
    """Append this pass's entries (compared with `previous`, read from state.json when not given)."""
    now = time.time() if now is None else now
    if previous is None:
        previous = read_state(desired.layout.state_dir)
    entries = pass_entries(desired, result, previous, now)
    if previous is None:
        # No state.json (deleted, or the first pass): a log that already says ALL_COMPLETE keeps its one.
        entries = [e for e in entries if not (e.action == "ALL_COMPLETE" and
                                               _says_all_complete(desired.layout.logs_dir / LOG_FILES[e.log]))]
    # A logs directory that is a symlink out of the experiment is not ours to write in.
    check_inside(desired.layout.logs_dir, (desired.layout.experiment_dir,))
    for log, filename in LOG_FILES.items():
        texts = [e.text for e in entries if e.log == log]
        if texts:
            append_entries(desired.layout.logs_dir / filename, texts)
    return entries


def _says_all_complete(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(ALL_COMPLETE_LINE.match(line) for line in fh)
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------ what to log (pure)


def pass_entries(desired: Desired, result: PassResult, previous: StateFile | None, now: float) -> list[Entry]:
    """The entries of one pass, from its plan, its events and the previous snapshot. No I/O."""
    ts = fmt_ts(now) or ""
    plan = result.plan
    units = desired.by_key()
    planned = {p.key: p for p in plan.units}
    states = effective_states(plan.units, result.events)
    entries: list[Entry] = []
    if previous is None:
        entries.append(_discover(desired, states, ts))
    entries += _checkpoints(desired, result, previous, ts)
    entries += _state_changes(desired, result, previous, states, ts)
    entries += _event_entries(units, planned, result, states, ts)
    changes = [e for e in entries if e.action != "DISCOVER_EXPERIMENT"]
    check = _status_check(result, states, changes, previous, ts)
    if check is not None:
        entries.append(check)
    entries += _all_complete(desired, states, previous, now, ts)
    return entries


def block(ts: str, action: str, subject: str | None, *lines: tuple[str, str]) -> str:
    """`[ts] ACTION: subject` then `Field: value` lines and a blank line, as the workflows write them."""
    head = f"[{ts}] {action}" + (f": {_flat(subject)}" if subject else "")
    return "\n".join([head, *(f"{k}: {_flat(v)}" for k, v in lines)]) + "\n\n"


def _flat(text: str) -> str:
    # One value per line: a newline inside a value could fake a `Job ID:` line for the harvest regexes.
    return " ".join(str(text).split())


def unit_name(unit: Unit | PlannedUnit) -> str:
    """The workflows' identifiers: `{run}` for a fine-tune, `{run}/{task}/epoch{N}` or `{run}/{task}` for an eval."""
    if unit.kind == "finetune":
        return unit.run
    return f"{unit.run}/{unit.task}" + (f"/epoch{unit.epoch}" if unit.epoch is not None else "")


def _log_of(kind: str) -> LogName:
    return "finetune" if kind == "finetune" else "eval"


def _counts(states: dict[str, tuple[str, str | None]]) -> str:
    c = Counter(s for s, _ in states.values())
    return ", ".join(f"{c[s]} {s}" for s in STATES if c[s]) or "no units"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _discover(desired: Desired, states: dict[str, tuple[str, str | None]], ts: str) -> Entry:
    kinds = Counter(u.kind for u in desired.units)
    text = block(ts, "DISCOVER_EXPERIMENT", desired.experiment,
                 ("Details", f"Found experiment at {desired.layout.experiment_dir} "
                             f"({desired.loaded.path.name}, {desired.loaded.dialect} dialect)"),
                 ("Result", f"{_n(kinds['finetune'], 'fine-tune')}, {_n(kinds['eval'], 'evaluation')}; "
                            f"{_counts(states)}"))
    return Entry("experiment", "DISCOVER_EXPERIMENT", text)


def _checkpoints(desired: Desired, result: PassResult, previous: StateFile | None, ts: str) -> list[Entry]:
    """VERIFY_CHECKPOINTS when a fine-tune's epoch checkpoint has become complete since the last pass."""
    out = []
    for unit in desired.units:
        if unit.kind != "finetune":
            continue
        ev = result.observation.get(unit.key)
        before = set(previous.units[unit.key].checkpoints) if previous and unit.key in previous.units else set()
        # zip stops at the shorter: evidence may lag a spec that just added epochs
        new = [(n, e) for n, e in zip(unit.epochs, ev.epochs, strict=False)
               if e.state == "complete" and n not in before]
        if not new:
            continue
        done = sum(1 for e in ev.epochs if e.state == "complete")
        details = "; ".join(f"epoch_{n} complete ({e.detail}) at {desired.layout.epoch_dir(unit.run, n)}"
                            for n, e in new)
        out.append(Entry("eval", "VERIFY_CHECKPOINTS", block(
            ts, "VERIFY_CHECKPOINTS", unit.run, ("Details", details),
            ("Result", f"{done} of {len(unit.epochs)} checkpoints complete"))))
    return out


def _state_changes(desired: Desired, result: PassResult, previous: StateFile | None,
                   states: dict[str, tuple[str, str | None]], ts: str) -> list[Entry]:
    """STATE_CHANGE (BLOCKED for a unit newly blocked) against the previous snapshot.

    Not logged: the first pass (DISCOVER_EXPERIMENT says where things stand), moves to or from
    `unknown` (the scheduler did not answer; the unit did not change), and units this pass
    submitted or released (their SUBMIT/RELEASE entry says it). A cancel is logged with the
    state it leaves, so a unit blocked by a failed dependency gets its BLOCKED entry.
    """
    if previous is None:
        return []
    acted = {e.unit for e in result.events if e.kind in ("submitted", "resubmitted", "released")}
    out = []
    for p in result.plan.units:
        state, job_id = states[p.key]
        prev = previous.units.get(p.key)
        before = (prev.last_known if prev.state == "unknown" else prev.state) if prev else "missing"
        if state == "unknown" or before is None or state == before or p.key in acted:
            continue
        if prev is None and state == "waiting":
            continue  # a unit new in the spec that cannot start yet: nothing happened
        job, word = "", ""
        if job_id:
            job = f"job {job_id}: "
            scheduler = next((j.state for j in result.observation.get(p.key).jobs if j.job_id == job_id), None)
            if scheduler and state in ("failed", "done"):
                word = f" ({scheduler})"
        action = "BLOCKED" if state == "blocked" else "STATE_CHANGE"
        out.append(Entry(_log_of(p.kind), action, block(
            ts, action, unit_name(p), ("Details", f"{job}{before} -> {state}{word}"), ("Result", p.reason))))
    return out


def _event_entries(units: dict[str, Unit], planned: dict[str, PlannedUnit], result: PassResult,
                   states: dict[str, tuple[str, str | None]], ts: str) -> list[Entry]:
    """One entry per thing apply did. Only SUBMIT_JOB / SUBMIT_EVAL blocks carry a `Job ID:` line."""
    out = []
    new_ids = {e.unit: str(e.job_id) for e in result.events if e.kind in ("submitted", "resubmitted") and e.job_id}
    for event in result.events:
        unit, p = units.get(event.unit), planned.get(event.unit)
        if unit is None or p is None:
            continue
        log, name = _log_of(unit.kind), unit_name(unit)
        if event.kind in ("submitted", "resubmitted"):
            if event.kind == "resubmitted":
                action = "RETRY" if p.state == "failed" else "REPLACE"
                out.append(Entry(log, action, block(ts, action, name, ("Details", p.reason),
                                                    ("Result", f"resubmitted as job {event.job_id}"))))
            out.append(Entry(log, _submit_action(unit), _submit_block(ts, unit, p, event.job_id or "", new_ids,
                                                                      states)))
        elif event.kind == "failed_submit":
            # Not SUBMIT_JOB: a SUBMIT_JOB block without `Job ID:` would make the harvest regex
            # pair this name with the next block's job id.
            out.append(Entry(log, "SUBMIT_FAILED", block(ts, "SUBMIT_FAILED", name,
                                                         ("Details", f"sbatch {unit.script.name}"),
                                                         ("Result", f"failure: {event.detail}"))))
        elif event.kind == "cancelled":
            out.append(Entry(log, "CANCEL", block(ts, "CANCEL", name,
                                                  ("Details", f"job {event.job_id}: {event.detail}"),
                                                  ("Result", "cancelled"))))
        elif event.kind == "released":
            out.append(Entry(log, "RELEASE", block(ts, "RELEASE", name,
                                                   ("Details", f"job {event.job_id}: {event.detail}"),
                                                   ("Result", "dependency released; the job may start now"))))
        elif event.kind == "adopted":
            out.append(Entry(log, "ADOPT", block(ts, "ADOPT", name, ("Details", event.detail),
                                                 ("Result", "tracked (journal rebuilt from the scheduler)"))))
        elif event.kind == "moved_aside":
            out.append(Entry(log, "MOVE_ASIDE", block(ts, "MOVE_ASIDE", name, ("Details", event.detail),
                                                      ("Result", "kept beside the new run (never deleted)"))))
    return out


def _submit_action(unit: Unit) -> str:
    return "SUBMIT_JOB" if unit.kind == "finetune" else "SUBMIT_EVAL"


def _submit_block(ts: str, unit: Unit, p: PlannedUnit, job_id: str, new_ids: dict[str, str],
                  states: dict[str, tuple[str, str | None]]) -> str:
    """Exactly the workflows' four lines, which `SUBMIT_JOB: ([\\w.-]+)\\n.*?\\nJob ID: (\\d+)` parses."""
    details = f"sbatch {unit.script.name}"
    deps = [new_ids.get(k) or states.get(k, ("", None))[1] for k in p.after]
    if unit.kind == "eval" and any(deps):
        details += f" (afterok:{':'.join(d for d in deps if d)})"
    return (f"[{ts}] {_submit_action(unit)}: {unit_name(unit)}\nDetails: {details}\n"
            f"Job ID: {job_id}\nResult: success\n\n")


def _status_check(result: PassResult, states: dict[str, tuple[str, str | None]], changes: list[Entry],
                  previous: StateFile | None, ts: str) -> Entry | None:
    """A pass that changed nothing is one line (none on the first pass: DISCOVER_EXPERIMENT says it all)."""
    extras = []
    deferred = sum(1 for e in result.events if e.kind == "deferred")
    if deferred:
        extras.append(f"{deferred} deferred")
    if not result.plan.scheduler_known and result.plan.scheduler_note:
        extras.append(f"scheduler unknown: {result.plan.scheduler_note}")
    details = _counts(states) + "".join(f"; {x}" for x in extras)
    errors = list(result.applied.errors) if result.applied is not None else []
    if not changes and not errors:
        if previous is None:
            return None
        return Entry("experiment", "STATUS_CHECK", f"[{ts}] STATUS_CHECK: no change; {_flat(details)}\n")
    acted = Counter(e.action for e in changes)
    what = ", ".join(f"{n} {a}" for a, n in sorted(acted.items())) or "errors"
    lines: list[tuple[str, str]] = [("Details", details)]
    if errors:
        lines.append(("Errors", "; ".join(errors)))
    submitted = any(e.action in ("SUBMIT_JOB", "SUBMIT_EVAL") for e in changes)
    lines.append(("Result", "converged" if result.plan.converged and not submitted else "in progress"))
    return Entry("experiment", "STATUS_CHECK", block(ts, "STATUS_CHECK", what, *lines))


def _all_complete(desired: Desired, states: dict[str, tuple[str, str | None]], previous: StateFile | None,
                  now: float, ts: str) -> list[Entry]:
    """ALL_COMPLETE once per scope, on the pass where every unit of it is done (never for zero units)."""
    now_complete = complete_scopes(desired, states, previous, now)
    before = previous.complete if previous else {}
    out = []
    what: dict[LogName, tuple[str, str | None]] = {
        "experiment": ("units", None), "finetune": ("fine-tunes", "finetune"), "eval": ("evaluations", "eval")}
    for scope, (noun, kind) in what.items():
        if scope not in now_complete or scope in before:
            continue
        n = sum(1 for u in desired.units if kind is None or u.kind == kind)
        started = parse_ts(previous.first_seen) if previous else None
        out.append(Entry(scope, "ALL_COMPLETE", block(
            ts, "ALL_COMPLETE", None, ("Details", f"All {n} {noun} of {desired.experiment} are done"),
            ("Result", f"{n} COMPLETED, 0 FAILED"),
            ("Duration", fmt_duration(now - started) if started is not None else "-"))))
    return out


# ------------------------------------------------------------------ appending (crash-safe)


def append_entries(path: Path, texts: list[str]) -> None:
    """Append entries with one write, then fsync. Holds an flock so two writers never interleave.

    A crash can leave a last entry cut short; before appending, such a tail is cut back to the
    start of its entry, so a half `SUBMIT_JOB` can never be paired with a later `Job ID:`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a log planted as a symlink (to ~/.bashrc, say) must not make us append to its target.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = _repair_tail(fd)
        tail = os.pread(fd, 2, size - 2) if size >= 2 else b""
        data = _join(texts, tail if size else b"\n\n").encode()
        crash_point("log-write", lambda: os.write(fd, data[: len(data) // 2]))
        written = os.write(fd, data)
        if written != len(data):
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _join(texts: list[str], tail: bytes) -> str:
    """Blocks are set apart by a blank line, also after one-line entries; one-liners stack."""
    out, ends_blank = [], tail.endswith(b"\n\n")
    for text in texts:
        if text.count("\n") > 1 and not ends_blank:
            out.append("\n")
        out.append(text)
        ends_blank = text.endswith("\n\n")
    return "".join(out)


def _repair_tail(fd: int) -> int:
    """Cut an entry a crash left without its final newline; returns the file size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = max(0, size - TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    starts = [m.start() for m in ENTRY_START.finditer(tail)]
    if starts:
        cut = start + starts[-1]
        os.ftruncate(fd, cut)
        return cut
    # Not our entry (someone else's text without a newline): end its line instead of cutting it.
    os.write(fd, b"\n\n")
    return size + 2
