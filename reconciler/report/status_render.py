"""`reconcile status`: one row per unit, counts per stage x state, sources and unknowns, readable at a glance."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Span, Text

from reconciler.jobs import Job
from reconciler.plan.planner import STATES, PlannedUnit
from reconciler.report import plan_render
from reconciler.report.progress import STATE_STYLE
from reconciler.records.state_file import StateFile, UnitRecord, effective_states, fmt_duration, parse_ts

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult

STAGES = ("finetune", "eval")


@dataclass(frozen=True)
class StatusRow:
    """One unit as `status` shows it; the table and `--json` are both made from these."""

    key: str
    run: str
    stage: str
    task: str | None
    epoch: str
    state: str
    job_id: str | None
    elapsed_seconds: float | None
    attempts: int
    reason: str


def status_rows(result: PassResult, state: StateFile | None = None, now: float | None = None) -> list[StatusRow]:
    """Rows in spec order. Elapsed comes from the scheduler's timestamps, else from the last state.json."""
    now = time.time() if now is None else now
    states = effective_states(result.plan.units, result.events)
    rows = []
    for p in result.plan.units:
        shown, job_id = states[p.key]
        job = _job(result, p, job_id)
        rows.append(StatusRow(
            key=p.key, run=p.run, stage=p.kind, task=p.task, epoch=_epoch(p), state=shown, job_id=job_id,
            elapsed_seconds=_elapsed(job, shown, now, state.units.get(p.key) if state else None, job_id),
            attempts=p.attempts, reason=p.reason,
        ))
    return rows


def _job(result: PassResult, p: PlannedUnit, job_id: str | None) -> Job | None:
    return next((j for j in result.observation.get(p.key).jobs if j.job_id == job_id), None) if job_id else None


def _epoch(p: PlannedUnit) -> str:
    if p.kind == "finetune":
        return "-"
    return "base" if p.epoch is None else str(p.epoch)


def _elapsed(job: Job | None, state: str, now: float, record: UnitRecord | None, job_id: str | None) -> float | None:
    """Running: now - started. Ended: ended - started."""
    if job is not None and job.started_at is not None:
        if job.ended_at is not None:
            return job.ended_at - job.started_at
        if job.live:
            return now - job.started_at
    if record is None or record.job_id != job_id or job_id is None:
        return None
    # The scheduler was not asked this pass (nothing in flight): the last snapshot remembers.
    started = parse_ts(record.started)
    if state == "running" and started is not None:
        return now - started
    return record.elapsed_seconds


def stage_counts(rows: list[StatusRow]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    for row in rows:
        counts[row.stage][row.state] += 1
    return counts


def sources(result: PassResult, now: float | None = None) -> dict[str, str]:
    """When each source was last read, and what is unknown about it."""
    now = time.time() if now is None else now
    read = result.observation.read_at
    out: dict[str, str] = {}
    for name in ("files", "journal"):
        if name in read:
            out[name] = _when(read[name], now)
    backend = f"{result.plan.backend} " if result.plan.backend else ""
    if not result.plan.scheduler_known:
        out["scheduler"] = f"{backend}unknown ({result.plan.scheduler_note or 'not asked'})"
    elif not result.scheduler_queried:
        out["scheduler"] = f"{backend}not asked (nothing in flight, nothing left to do)"
    else:
        out["scheduler"] = backend + _when(read.get("scheduler", now), now)
    return out


def _when(ts: float, now: float) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(ts))} ({fmt_duration(now - ts)} ago)"


def status_record(result: PassResult, state: StateFile | None = None, now: float | None = None) -> dict[str, Any]:
    """The same content as the table, as data (`status --json`)."""
    rows = status_rows(result, state, now)
    counts = stage_counts(rows)
    return {
        "format_version": 1,
        "experiment": result.plan.experiment,
        "scheduler": {"backend": result.plan.backend, "known": result.plan.scheduler_known,
                      "note": result.plan.scheduler_note},
        "sources": sources(result, now),
        "counts": {stage: {s: counts[stage][s] for s in STATES if counts[stage][s]} for stage in STAGES},
        "unknown": [r.key for r in rows if r.state == "unknown"],
        # eval logs no source attributes to a unit: never ignored, never taken as proof of an epoch
        "unattributed": [{"path": o.path, "problem": o.problem, "candidates": list(o.candidates)}
                         for o in result.observation.unattributed],
        # The plan's unit records (the contract shared with `plan --format json`), with what status adds.
        "units": [{**plan_render.unit_record(p), "state": r.state, "job_id": r.job_id, "stage": r.stage,
                   "elapsed_seconds": r.elapsed_seconds, "attempts": r.attempts}
                  for p, r in zip(result.plan.units, rows)],
        "summary_line": result.plan.summary_line(),
    }


UNIT_COLUMNS = ("run", "stage", "task", "epoch", "state", "job", "elapsed", "attempts", "reason")
_RIGHT = {"elapsed", "attempts"}


def unit_table(rows: list[StatusRow]) -> Text:
    """One line per unit in aligned columns, as squeue and kubectl print them: a sweep has
    thousands of units, and a boxed rich.Table takes 0.5 ms a row to lay out (5 s at 10k units)."""
    cells = [(r.run, r.stage, r.task or "-", r.epoch, r.state, r.job_id or "-", fmt_duration(r.elapsed_seconds),
              str(r.attempts), r.reason) for r in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(UNIT_COLUMNS)]
    state_column = UNIT_COLUMNS.index("state")
    state_at = sum(width + 2 for width in widths[:state_column])  # where the state word starts in a line
    lines: list[str] = []
    spans: list[Span] = []
    offset = 0
    for n, values in enumerate([UNIT_COLUMNS, *cells]):
        parts = [value.rjust(widths[i]) if name in _RIGHT else value.ljust(widths[i])
                 for i, (name, value) in enumerate(zip(UNIT_COLUMNS[:-1], values))]
        line = "  ".join([*parts, values[-1]])
        if n == 0:
            spans.append(Span(0, len(line), "bold"))
        elif style := STATE_STYLE.get(values[state_column], ""):
            spans.append(Span(offset + state_at, offset + state_at + len(values[state_column]), style))
        lines.append(line)
        offset += len(line) + 1
    return Text("\n".join(lines) + "\n", spans=spans, no_wrap=True, overflow="ignore")


def write_status(result: PassResult, out: TextIO, state: StateFile | None = None, now: float | None = None,
                 backend_note: str = "") -> None:
    """The table, the counts, when each source was read, and what is unknown. Colour only on a terminal.
    `backend_note` says which backend was asked, and why that one."""
    tty = out.isatty()
    console = Console(file=out, highlight=False, soft_wrap=False, width=None if tty else 200,
                      no_color=not tty, force_terminal=tty)
    rows = status_rows(result, state, now)
    console.print(f"[bold]{escape(result.plan.experiment)}[/]" + (f" ({escape(backend_note)})" if backend_note else ""))
    console.print(unit_table(rows), end="", soft_wrap=True)  # soft: the terminal wraps a long reason

    counts = stage_counts(rows)
    used = [s for s in STATES if any(counts[stage][s] for stage in STAGES)]
    summary = Table()
    summary.add_column("stage")
    for s in used:
        summary.add_column(f"[{STATE_STYLE.get(s, '')}]{s}[/]", justify="right")
    summary.add_column("total", justify="right")
    for stage in STAGES:
        if sum(counts[stage].values()):
            summary.add_row(stage, *[str(counts[stage][s] or "") for s in used], str(sum(counts[stage].values())))
    console.print(summary)

    console.print("sources read: " + escape("; ".join(f"{k} {v}" for k, v in sources(result, now).items())))
    unknown = [r for r in rows if r.state == "unknown"]
    if unknown:
        console.print(f"[yellow]unknown:[/] {len(unknown)} unit(s), nothing is done to them until the scheduler "
                      f"answers: " + escape(", ".join(r.key for r in unknown)))
    for orphan in result.observation.unattributed:
        console.print(f"[yellow]unattributed log:[/] {escape(str(orphan))}", soft_wrap=True)
    console.print(escape(result.plan.summary_line()))
