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

from reconciler.jobs import job_order
from reconciler.apply.crashpoints import crash_point
from reconciler.plan.planner import STATES, PlannedUnit
from reconciler.records.state_file import (
    LEGACY_STATUS,
    StateFile,
    complete_scopes,
    settled_scopes,
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
    from reconciler.engine.loop import PassResult
    from reconciler.records.summary_model import Summary

LogName = Literal["experiment", "finetune", "eval"]
LOG_FILES: dict[str, str] = {
    "experiment": "run-experiment.log",
    "finetune": "run-torchtune.log",
    "eval": "run-inspect.log",
}
SUMMARIZE_LOG = "summarize-experiment.log"
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
    entries += _checkpoint_missing(desired, result, previous, ts)
    entries += _state_changes(desired, result, previous, states, ts, now)
    submitting_evals = any(e.kind in ("submitted", "resubmitted") and units[e.unit].kind == "eval"
                           for e in result.events if e.unit in units)
    if previous is None or submitting_evals:
        entries += _identify(desired, result, states, ts)
    entries += _event_entries(units, planned, result, states, ts)
    entries += _all_submitted(units, result, ts)
    changes = [e for e in entries if e.action not in ("DISCOVER_EXPERIMENT", "VERIFY_FINETUNING", "IDENTIFY_EVALS")]
    check = _status_check(result, states, changes, previous, ts)
    if check is not None:
        entries.append(check)
    entries += _all_complete(desired, result, states, previous, now, ts)
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
    runs = len({u.run for u in desired.units if u.kind == "eval"})
    text = block(ts, "DISCOVER_EXPERIMENT", desired.experiment,
                 ("Details", f"Found experiment at {desired.layout.experiment_dir} "
                             f"({desired.loaded.path.name}, {desired.loaded.dialect} dialect); "
                             f"{_n(runs, 'run')} with evaluations"),
                 ("Result", f"{_n(kinds['finetune'], 'fine-tune')}, {_n(kinds['eval'], 'evaluation')}; "
                            f"{_counts(states)}"))
    return Entry("experiment", "DISCOVER_EXPERIMENT", text)


def _asked(result: PassResult) -> str:
    """What the pass asked the scheduler, as the workflows' logs show the command."""
    if not result.plan.scheduler_known:
        return f"scheduler unknown ({result.plan.scheduler_note})"
    if result.question is None:
        return "scheduler not asked: nothing in flight, nothing left to do"
    ids = len(result.question[1])
    also = f", then sacct for whichever of {_n(ids, 'job')} left the queue" if ids else ""
    return f"squeue --me: one query for every job of the experiment{also}"


def _identify(desired: Desired, result: PassResult, states: dict[str, tuple[str, str | None]],
              ts: str) -> list[Entry]:
    """VERIFY_FINETUNING and IDENTIFY_EVALS, as the workflows' run-inspect module opens a round of evals."""
    out = []
    finetunes = Counter(states[u.key][0] for u in desired.units if u.kind == "finetune")
    if finetunes:
        out.append(Entry("eval", "VERIFY_FINETUNING", block(
            ts, "VERIFY_FINETUNING", None, ("Details", _asked(result)),
            ("Result", ", ".join(f"{finetunes[s]} {s}" for s in STATES if finetunes[s]) + " (fine-tunes)"))))
    evals = [p for p in result.plan.units if p.kind == "eval"]
    if not evals:
        return out
    by_key = {p.key: p for p in evals}
    done = [p for p in evals if p.state == "done"]
    adopted = Counter()
    for p in done:
        source = result.observation.get(p.key).log_source
        if source:
            adopted[source.rsplit(" ", 1)[0] if source.startswith("job name ") else source] += 1
    details = f"{_n(len(evals), 'evaluation')} in the matrix; {len(done)} already complete"
    if adopted:
        details += " (" + ", ".join(f"{n} adopted by {how}" for how, n in sorted(adopted.items())) + ")"
    orphans = result.observation.unattributed
    if orphans:
        details += f"; {_n(len(orphans), 'log')} not attributed to any unit (see reconcile status)"
    ready = sum(1 for p in evals if p.action in ("submit", "resubmit"))
    rest = Counter(states[k][0] for k, p in by_key.items() if p.state != "done" and p.action not in
                   ("submit", "resubmit"))
    result_text = f"{ready} ready to submit" + "".join(f", {n} {s}" for s, n in sorted(rest.items()))
    out.append(Entry("eval", "IDENTIFY_EVALS", block(ts, "IDENTIFY_EVALS", None, ("Details", details),
                                                     ("Result", result_text))))
    return out


def _checkpoint_missing(desired: Desired, result: PassResult, previous: StateFile | None, ts: str) -> list[Entry]:
    """CHECKPOINT_MISSING when an eval is newly blocked because the checkpoint it loads is not there."""
    out = []
    layout = desired.layout
    units = desired.by_key()
    for p in result.plan.units:
        if p.kind != "eval" or p.state != "blocked":
            continue
        prev = previous.units.get(p.key) if previous else None
        if prev is not None and prev.state == "blocked":
            continue
        unit = units[p.key]
        ev = result.observation.get(p.key)
        if ev.model_missing:
            where = f"{unit.model_path} (parameters.checkpoint_path) does not exist"
        elif unit.needs_epoch is not None:
            up = result.observation.get(unit.depends_on[0])
            index = unit.needs_epoch
            if index < len(up.epochs) and up.epochs[index].state == "complete":
                continue  # its checkpoint is there: blocked for another reason
            where = f"epoch_{index} of {unit.run} is not complete at {layout.epoch_dir(unit.run, index)}"
        else:
            continue
        out.append(Entry("eval", "CHECKPOINT_MISSING", block(
            ts, "CHECKPOINT_MISSING", unit_name(p), ("Details", where),
            ("Result", f"evaluation skipped (blocked): {p.reason}"))))
    return out


def _all_submitted(units: dict[str, Unit], result: PassResult, ts: str) -> list[Entry]:
    """ALL_SUBMITTED closing each log's round of submissions: counts and the job id range."""
    out = []
    for log in ("finetune", "eval"):
        mine = [e for e in result.events if e.unit in units and _log_of(units[e.unit].kind) == log]
        ids = sorted((e.job_id for e in mine if e.kind in ("submitted", "resubmitted") and e.job_id), key=job_order)
        failures = sum(1 for e in mine if e.kind == "failed_submit")
        if not ids and not failures:
            continue
        deferred = sum(1 for e in mine if e.kind == "deferred")
        span = f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else (ids[0] if ids else "none")
        out.append(Entry(log, "ALL_SUBMITTED", block(
            ts, "ALL_SUBMITTED", None,
            ("Details", f"{len(ids)} submitted, {failures} failed" + (f", {deferred} deferred" if deferred else "")),
            ("Job IDs", span))))
    return out


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
                   states: dict[str, tuple[str, str | None]], ts: str, now: float) -> list[Entry]:
    """STATE_CHANGE (BLOCKED for a unit newly blocked) against the previous snapshot.

    Not logged: the first pass (DISCOVER_EXPERIMENT says where things stand), moves to or from
    `unknown` (the scheduler did not answer; the unit did not change), and units this pass
    submitted or released (their SUBMIT/RELEASE entry says it). A cancel is logged with the
    state it leaves, so a unit blocked by a failed dependency gets its BLOCKED entry.
    Previous and Current are SLURM's words for the job (the unit's state in them when no job says).
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
        ev = result.observation.get(p.key)
        job = next((j for j in ev.jobs if j.job_id == job_id), None) if job_id else None
        word = f" ({job.state})" if job is not None and state in ("failed", "done") else ""
        lines: list[tuple[str, str]] = [("Details", f"{f'job {job_id}: ' if job_id else ''}{before} -> {state}{word}")]
        same_job = prev is not None and prev.job_id == job_id and prev.job_state
        lines.append(("Previous", str(prev.job_state) if same_job and prev is not None else _slurm_word(before)))
        lines.append(("Current", job.state if job is not None and job.state not in ("GONE", "UNKNOWN")
                      else _slurm_word(state)))
        if job_id:
            lines.append(("Job ID", job_id))
        if state == "done":
            ended = job.ended_at if job is not None else None
            lines.append(("Completed", fmt_ts(ended) or fmt_ts(now) or "-"))
        if job is not None and job.started_at is not None:
            lines.append(("Elapsed", fmt_duration((job.ended_at or now) - job.started_at)))
        if p.kind == "eval" and ev.log is not None:
            lines.append(("Result log", ev.log.path))
        lines.append(("Result", p.reason))
        action = "BLOCKED" if state == "blocked" else "STATE_CHANGE"
        out.append(Entry(_log_of(p.kind), action, block(ts, action, unit_name(p), *lines)))
    return out


def _slurm_word(state: str) -> str:
    return LEGACY_STATUS.get(state, state.upper())


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
    jobs = _job_counts(result, states)
    if jobs:
        extras.insert(0, f"jobs: {jobs}")
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


def _job_counts(result: PassResult, states: dict[str, tuple[str, str | None]]) -> str:
    """Each unit's current job by SLURM state (PENDING, RUNNING, COMPLETED, ...), as the workflows poll them."""
    counts: Counter[str] = Counter()
    for p in result.plan.units:
        job_id = states[p.key][1]
        if not job_id:
            continue
        if p.key in {e.unit for e in result.events if e.kind in ("submitted", "resubmitted")}:
            counts["PENDING"] += 1
            continue
        job = next((j for j in result.observation.get(p.key).jobs if j.job_id == job_id), None)
        if job is not None and job.state not in ("GONE", "UNKNOWN"):
            counts[job.state] += 1
    order = ["PENDING", "RUNNING", "COMPLETED", "FAILED"]
    return ", ".join(f"{counts[s]} {s}" for s in [*order, *sorted(set(counts) - set(order))] if counts[s])


def _all_complete(desired: Desired, result: PassResult, states: dict[str, tuple[str, str | None]],
                  previous: StateFile | None, now: float, ts: str) -> list[Entry]:
    """ALL_COMPLETE once per scope, on the pass where every unit of it is done, or has ended with some failed or
    blocked (never for zero units): counts, total time, then each unit with its job id, duration and the paths
    of its `.eval` log and `slurm-*.out`. A scope that ended with failures and later is all done gets another."""
    now_complete = complete_scopes(desired, states, previous, now)
    now_settled = settled_scopes(desired, states, previous, now)
    before = previous.complete if previous else {}
    settled_before = previous.settled if previous else {}
    out = []
    what: dict[LogName, tuple[str, str | None]] = {
        "experiment": ("units", None), "finetune": ("fine-tunes", "finetune"), "eval": ("evaluations", "eval")}
    for scope, (noun, kind) in what.items():
        newly_done = scope in now_complete and scope not in before
        newly_ended = scope in now_settled and scope not in settled_before
        if not newly_done and not newly_ended:
            continue
        scoped = [u for u in desired.units if kind is None or u.kind == kind]
        n = len(scoped)
        started = parse_ts(previous.first_seen) if previous else None
        total = fmt_duration(now - started) if started is not None else "-"
        ended = Counter(states[u.key][0] for u in scoped)
        done = ended["done"] + ended["outdated"]
        counts = f"{done} COMPLETED, {ended['failed']} FAILED" + (f", {ended['blocked']} BLOCKED" if ended["blocked"]
                                                                  else "")
        details = f"All {n} {noun} of {desired.experiment} are done" if newly_done else \
            f"All {n} {noun} of {desired.experiment} have ended; {n - done} did not complete"
        lines = [("Details", details), ("Result", counts), ("Duration", total), ("Total time", total)]
        lines += [(unit_name(u), _unit_report(u, result, states, previous)) for u in scoped]
        logs = sorted({str(u.log_dir) for u in scoped if u.kind == "eval" and u.log_dir is not None})
        if logs:
            lines.append(("Next", f"inspect view --log-dir {logs[0]}" + (" (one log dir per cell)" if len(logs) > 1
                                                                          else "")
                          + f"; inspect log export <log> --format csv; reconcile summarize {desired.loaded.path}"))
        out.append(Entry(scope, "ALL_COMPLETE", block(ts, "ALL_COMPLETE", None, *lines)))
    return out


def _unit_report(unit: Unit, result: PassResult, states: dict[str, tuple[str, str | None]],
                 previous: StateFile | None) -> str:
    """`job 102, 20s, log <.eval>, stdout <slurm-102.out>` for one unit of the final report."""
    job_id = states[unit.key][1]
    ev = result.observation.get(unit.key)
    job = next((j for j in ev.jobs if j.job_id == job_id), None) if job_id else None
    record = previous.units.get(unit.key) if previous else None
    elapsed = job.ended_at - job.started_at if job is not None and job.started_at and job.ended_at else (
        record.elapsed_seconds if record is not None and record.job_id == job_id else None)
    state = states[unit.key][0]
    parts = [] if state == "done" else [LEGACY_STATUS.get(state, state.upper())]
    parts.append(f"job {job_id}" if job_id else "no job (adopted from earlier work)" if ev.log_source
                 else "no job")
    if elapsed is not None:
        parts.append(fmt_duration(elapsed))
    if unit.kind == "eval" and ev.log is not None:
        parts.append(f"log {ev.log.path}")
    if job_id:
        parts.append(f"stdout {str(unit.stdout).replace('%j', job_id)}")
    return ", ".join(parts)


# ------------------------------------------------------------------ summarize-experiment.log


def summary_entries(summary: Summary, path: Path, now: float) -> list[str]:
    """EXTRACT_LOSS for each fine-tune whose training stdout (or its loss lines) is missing, then WRITE_SUMMARY."""
    ts = fmt_ts(now) or ""
    out = []
    for training in summary.training:
        if training.final_loss is not None:
            continue
        why = training.note or "no loss lines"
        where = f" in {training.stdout}" if training.stdout else ""
        out.append(block(ts, "EXTRACT_LOSS", training.run, ("Details", f"{why}{where}"),
                         ("Result", "N/A recorded for the final loss")))
    out.append(block(ts, "WRITE_SUMMARY", summary.experiment, ("Details", str(path)),
                     ("Result", f"{summary.units_done}/{summary.units_total} units done"
                                + ("" if summary.complete else "; partial results"))))
    return out


def record_summary(desired: Desired, summary: Summary, path: Path, now: float | None = None) -> None:
    """Append the summary's entries to logs/summarize-experiment.log (a disk problem is the caller's warning)."""
    check_inside(desired.layout.logs_dir, (desired.layout.experiment_dir,))
    append_entries(desired.layout.logs_dir / SUMMARIZE_LOG, summary_entries(summary, path, time.time() if now is None
                                                                            else now))


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
