"""`.reconciler/state.json`: a per-unit snapshot after each pass, and the legacy experiment_summary.md table."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.jobs import Job
from reconciler.apply.crashpoints import crash_point
from reconciler.fsutil import atomic_write_text
from reconciler.plan.planner import PlannedUnit
from reconciler.spec.units import Desired, Unit, job_stdout

if TYPE_CHECKING:  # loop imports the report modules' callers; keep the import for types only
    from reconciler.apply.apply import Event
    from reconciler.engine.loop import PassResult
    from reconciler.observe.checkpoints import EpochEvidence
    from reconciler.observe.evallogs import LogSummary
    from reconciler.observe.observation import UnitEvidence

STATE_NAME = "state.json"
LEGACY_SUMMARY = "experiment_summary.md"
FORMAT_VERSION = 1
TS_FORMAT = "%Y-%m-%d %H:%M:%S"
# Scopes that get one ALL_COMPLETE each: the whole experiment, its fine-tunes, its evals.
SCOPES = ("experiment", "finetune", "eval")


class UnitRecord(BaseModel):
    """One unit as the last pass left it."""

    model_config = ConfigDict(frozen=True)

    key: str
    kind: str
    run: str
    task: str | None = None
    epoch: int | None = None
    state: str = Field(description="Unit state after the pass (a submission this pass counts as queued)")
    last_known: str | None = Field(None, description="The last state that was not `unknown`")
    job_id: str | None = None
    job_state: str | None = Field(None, description="The scheduler's word for the job (PENDING, COMPLETED, ...)")
    submitted: str | None = None
    started: str | None = None
    ended: str | None = None
    completed: str | None = Field(None, description="When the unit became done")
    elapsed_seconds: float | None = None
    attempts: int = 0
    reason: str = ""
    stdout: str | None = Field(None, description="The job's stdout file, %j expanded")
    log: str | None = Field(None, description="The .eval log that speaks for an eval")
    metric: str | None = None
    value: float | None = None
    checkpoints: list[int] = Field(default_factory=list, description="Fine-tune: epochs whose checkpoint is complete")


class StateFile(BaseModel):
    """What `.reconciler/state.json` holds; readers should check `format_version`."""

    format_version: int = FORMAT_VERSION
    experiment: str
    updated: str
    first_seen: str = Field(description="The first pass that wrote this file")
    complete: dict[str, str] = Field(default_factory=dict, description="scope -> when it first became all done")
    settled: dict[str, str] = Field(default_factory=dict, description="scope -> when every unit of it first ended "
                                                                      "(done, failed or blocked) without all done")
    units: dict[str, UnitRecord] = Field(default_factory=dict)


def fmt_ts(t: float | None) -> str | None:
    return None if t is None else time.strftime(TS_FORMAT, time.localtime(t))


def parse_ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text, TS_FORMAT))
    except ValueError:
        return None


def fmt_duration(seconds: float | None) -> str:
    """`45s`, `8m 15s`, `2h 05m`: short enough for a table cell."""
    if seconds is None:
        return "-"
    total = max(0, int(round(seconds)))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, mins = divmod(minutes, 60)
    return f"{hours}h {mins:02d}m"


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_NAME


def read_state(state_dir: Path) -> StateFile | None:
    """The previous snapshot, or None when there is none (or it cannot be read: the next write replaces it)."""
    try:
        return StateFile.model_validate_json(state_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None


def effective_states(plan_units: tuple[PlannedUnit, ...], events: list[Event]) -> dict[str, tuple[str, str | None]]:
    """State and job id of each unit once the pass has acted: what it submitted is queued now."""
    out = {p.key: (str(p.state), p.job_id) for p in plan_units}
    for event in events:
        if event.kind in ("submitted", "resubmitted") and event.job_id and event.unit in out:
            out[event.unit] = ("queued", event.job_id)
    return out


def complete_scopes(desired: Desired, states: dict[str, tuple[str, str | None]], previous: StateFile | None,
                    now: float) -> dict[str, str]:
    """Scope -> when it became all done. A scope with no units is never complete (zero work is not done)."""
    kinds = {"experiment": None, "finetune": "finetune", "eval": "eval"}
    out: dict[str, str] = {}
    for scope, kind in kinds.items():
        keys = [u.key for u in desired.units if kind is None or u.kind == kind]
        if keys and all(states.get(k, ("missing", None))[0] == "done" for k in keys):
            earlier = previous.complete.get(scope) if previous else None
            out[scope] = earlier or fmt_ts(now) or ""
    return out


SETTLED = ("done", "failed", "blocked", "outdated")


def settled_scopes(desired: Desired, states: dict[str, tuple[str, str | None]], previous: StateFile | None,
                   now: float) -> dict[str, str]:
    """Scope -> when every unit of it ended, some failed or blocked (the workflows' ALL_COMPLETE with failures)."""
    kinds = {"experiment": None, "finetune": "finetune", "eval": "eval"}
    out: dict[str, str] = {}
    for scope, kind in kinds.items():
        found = [states.get(u.key, ("missing", None))[0] for u in desired.units if kind is None or u.kind == kind]
        if found and all(s in SETTLED for s in found) and any(s in ("failed", "blocked") for s in found):
            earlier = previous.settled.get(scope) if previous else None
            out[scope] = earlier or fmt_ts(now) or ""
    return out


def build_state(desired: Desired, result: PassResult, previous: StateFile | None,
                now: float | None = None) -> StateFile:
    """The snapshot after a pass. Times the scheduler did not give this pass are kept from the previous one."""
    now = time.time() if now is None else now
    plan, observation = result.plan, result.observation
    events = list(result.events)
    states = effective_states(plan.units, events)
    submitted_now = {e.unit for e in events if e.kind in ("submitted", "resubmitted")}
    units = desired.by_key()
    records: dict[str, UnitRecord] = {}
    for p in plan.units:
        prev = previous.units.get(p.key) if previous else None
        state, job_id = states[p.key]
        records[p.key] = _record(units[p.key], p, observation.get(p.key), state, job_id, prev,
                                 p.key in submitted_now, now)
    return StateFile(
        experiment=desired.experiment,
        updated=fmt_ts(now) or "",
        first_seen=previous.first_seen if previous else fmt_ts(now) or "",
        complete=complete_scopes(desired, states, previous, now),
        settled=settled_scopes(desired, states, previous, now),
        units=records,
    )


def _record(unit: Unit, p: PlannedUnit, ev: UnitEvidence, state: str, job_id: str | None, prev: UnitRecord | None,
            submitted_now: bool, now: float) -> UnitRecord:
    job = _job(ev, job_id)
    same = prev if prev is not None and job_id is not None and prev.job_id == job_id else None
    submitted = fmt_ts(job.submitted_at) if job and job.submitted_at else (same.submitted if same else None)
    if submitted is None and submitted_now:
        submitted = fmt_ts(now)
    started = fmt_ts(job.started_at) if job and job.started_at else (same.started if same else None)
    ended = fmt_ts(job.ended_at) if job and job.ended_at else (same.ended if same else None)
    elapsed = _elapsed(job, state, now)
    if elapsed is None and same is not None:
        elapsed = same.elapsed_seconds
    log, epochs = ev.log, ev.epochs
    completed = None
    if state == "done":
        completed = prev.completed if prev is not None and prev.state == "done" and prev.completed else None
        completed = completed or ended or fmt_ts(_artifact_time(log, epochs))
    checkpoints = [unit.epochs[i] for i, e in enumerate(epochs) if e.state == "complete" and i < len(unit.epochs)]
    return UnitRecord(
        key=p.key, kind=p.kind, run=p.run, task=p.task, epoch=p.epoch, state=state,
        last_known=state if state != "unknown" else (prev.last_known if prev else None),
        job_id=job_id, job_state=job.state if job else (same.job_state if same else None),
        submitted=submitted, started=started, ended=ended, completed=completed, elapsed_seconds=elapsed,
        attempts=p.attempts + (1 if submitted_now else 0), reason=p.reason,
        stdout=str(job_stdout(unit.stdout, job_id)) if job_id else None,
        log=log.path if log is not None else None,
        metric=log.metric if log is not None else None, value=log.value if log is not None else None,
        checkpoints=checkpoints,
    )


def _job(ev: UnitEvidence, job_id: str | None) -> Job | None:
    if job_id is None:
        return None
    for job in ev.jobs:
        if job.job_id == job_id:
            return job
    return None


def _elapsed(job: Job | None, state: str, now: float) -> float | None:
    """Running: now - started. Ended: ended - started."""
    if job is None or job.started_at is None:
        return None
    if job.ended_at is not None:
        return job.ended_at - job.started_at
    if state == "running" or job.live:
        return now - job.started_at
    return None


def _artifact_time(log: LogSummary | None, epochs: tuple[EpochEvidence, ...]) -> float | None:
    """When no scheduler remembers the job: the eval log's or the last checkpoint's mtime."""
    if log is not None and log.mtime:
        return float(log.mtime)
    times = [e.mtime for e in epochs if e.mtime is not None]
    return max(times) if times else None


def write_state(desired: Desired, result: PassResult, now: float | None = None,
                previous: StateFile | None = None) -> StateFile:
    """Build the snapshot and write it atomically (readers see the old or the new file, never half)."""
    if previous is None:
        previous = read_state(desired.layout.state_dir)
    state = build_state(desired, result, previous, now)
    atomic_write_text(state_path(desired.layout.state_dir), state.model_dump_json(indent=2) + "\n",
                      before_rename=lambda: crash_point("state-write"))
    return state


# ------------------------------------------------------------------ legacy experiment_summary.md

LEGACY_STATUS = {"done": "COMPLETED", "queued": "PENDING", "running": "RUNNING", "failed": "FAILED",
                 "blocked": "BLOCKED", "waiting": "WAITING", "missing": "NOT_SUBMITTED", "outdated": "OUTDATED",
                 "unknown": "UNKNOWN"}
_HEADING = re.compile(r"^ {0,3}#{1,6}\s")
_REQUIRED = ("run name", "task", "epoch", "status")


def update_legacy_summary(experiment_dir: Path, state: StateFile) -> bool:
    """Rewrite the rows of the "Evaluations" status table in experiment_summary.md; True if the file changed."""
    path = experiment_dir / LEGACY_SUMMARY
    try:
        with open(path, encoding="utf-8", newline="") as fh:  # newline="": keep \r\n as written
            text = fh.read()
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    new = update_evaluations_table(text, state)
    if new is None or new == text:
        return False
    atomic_write_text(path, new, mode=mode)
    return True


def update_evaluations_table(text: str, state: StateFile) -> str | None:
    """Pure: the text with the table's rows updated and missing eval rows added; None if there is no such table."""
    lines = text.splitlines(keepends=True)
    span = _find_table(lines)
    if span is None:
        return None
    start, end = span  # header line index, one past the last table line
    header = _cells(lines[start])
    cols = {name.strip().lower(): i for i, name in enumerate(header)}
    if not all(c in cols for c in _REQUIRED):
        return None
    evals = {(r.run, r.task, r.epoch): r for r in state.units.values() if r.kind == "eval"}
    seen: set[tuple[str, str | None, int | None]] = set()
    key: tuple[str, str | None, int | None]
    for i in range(start + 2, end):
        cells = _cells(lines[i])
        cells += [""] * (len(header) - len(cells))
        key = (cells[cols["run name"]].strip(), cells[cols["task"]].strip(), _epoch(cells[cols["epoch"]]))
        record = evals.get(key)
        if record is None:
            continue  # a row we do not know: leave it as the user wrote it
        seen.add(key)
        updated = _fill(list(cells), cols, record)
        if [c.strip() for c in updated] != [c.strip() for c in cells]:
            lines[i] = _row(updated) + _eol(lines[i])
    eol = _eol(lines[start]) or "\n"
    added = []
    for key, record in evals.items():
        if key not in seen:
            cells = [""] * len(header)
            cells[cols["run name"]], cells[cols["task"]] = record.run, record.task or ""
            cells[cols["epoch"]] = "-" if record.epoch is None else str(record.epoch)
            added.append(_row(_fill(cells, cols, record)) + eol)
    if added and not _eol(lines[end - 1]):
        lines[end - 1] += eol  # the table ended the file without a newline
    lines[end:end] = added
    return "".join(lines)


def _find_table(lines: list[str]) -> tuple[int, int] | None:
    heading = next((i for i, line in enumerate(lines)
                    if _HEADING.match(line) and "evaluations" in line.lower()), None)
    if heading is None:
        return None
    i = heading + 1
    while i < len(lines) and not lines[i].lstrip().startswith("|"):
        if _HEADING.match(lines[i]):
            return None  # the section has no table
        i += 1
    if i + 1 >= len(lines) or not re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1].rstrip("\r\n")):
        return None  # a header row needs its --- separator row
    end = i + 2
    while end < len(lines) and lines[end].lstrip().startswith("|"):
        end += 1
    return i, end


def _cells(line: str) -> list[str]:
    """Cells of a Markdown table row; `\\|` inside a cell is not a separator."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _eol(line: str) -> str:
    return line[len(line.rstrip("\r\n")):]


def _epoch(cell: str) -> int | None:
    text = cell.strip().lower().replace("epoch", "").replace("_", "").strip()
    return int(text) if text.isdigit() else None


def _fill(cells: list[str], cols: dict[str, int], record: UnitRecord) -> list[str]:
    cells[cols["status"]] = LEGACY_STATUS.get(record.state, record.state.upper())
    if "job id" in cols and (record.job_id or not cells[cols["job id"]].strip()):
        cells[cols["job id"]] = record.job_id or "-"  # a job id we never knew is the user's: keep it
    if "completed" in cols:
        cells[cols["completed"]] = record.completed or "-"
    if "notes" in cols:
        if record.state == "done" and record.value is not None:
            note = f"{record.metric or 'score'} {record.value:.3f}"
        else:
            note = record.reason
        cells[cols["notes"]] = note.replace("|", "\\|").replace("\n", " ")
    return cells
