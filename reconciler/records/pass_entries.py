"""What one pass logs (pure): the entries of each workflow log, from the pass's plan, its events and the
previous snapshot. The experiment's own entries are here (DISCOVER_EXPERIMENT, VERIFY_FINETUNING and
IDENTIFY_EVALS, STATUS_CHECK, ALL_COMPLETE); the units' are in records/unit_entries.py."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from reconciler.plan.planner import STATES
from reconciler.records.log_format import Entry, LogName, block, counts_line, flat, plural, unit_name
from reconciler.records.state_file import (
    LEGACY_STATUS,
    StateFile,
    complete_scopes,
    effective_states,
    fmt_duration,
    fmt_ts,
    parse_ts,
    settled_scopes,
)
from reconciler.records.unit_entries import (
    all_submitted_entries,
    checkpoint_entries,
    checkpoint_missing_entries,
    event_entries,
    state_change_entries,
)
from reconciler.spec.units import Desired, Unit

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult


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
    entries += checkpoint_entries(desired, result, previous, ts)
    entries += checkpoint_missing_entries(desired, result, previous, ts)
    entries += state_change_entries(desired, result, previous, states, ts, now)
    submitting_evals = any(e.kind in ("submitted", "resubmitted") and units[e.unit].kind == "eval"
                           for e in result.events if e.unit in units)
    if previous is None or submitting_evals:
        entries += _identify(desired, result, states, ts)
    entries += event_entries(units, planned, result, states, ts)
    entries += all_submitted_entries(units, result, ts)
    changes = [e for e in entries if e.action not in ("DISCOVER_EXPERIMENT", "VERIFY_FINETUNING", "IDENTIFY_EVALS")]
    check = _status_check(result, states, changes, previous, ts)
    if check is not None:
        entries.append(check)
    entries += _all_complete(desired, result, states, previous, now, ts)
    return entries


def _discover(desired: Desired, states: dict[str, tuple[str, str | None]], ts: str) -> Entry:
    kinds = Counter(u.kind for u in desired.units)
    runs = len({u.run for u in desired.units if u.kind == "eval"})
    text = block(ts, "DISCOVER_EXPERIMENT", desired.experiment,
                 ("Details", f"Found experiment at {desired.layout.experiment_dir} "
                             f"({desired.loaded.path.name}, {desired.loaded.dialect} dialect); "
                             f"{plural(runs, 'run')} with evaluations"),
                 ("Result", f"{plural(kinds['finetune'], 'fine-tune')}, {plural(kinds['eval'], 'evaluation')}; "
                            f"{counts_line(states)}"))
    return Entry("experiment", "DISCOVER_EXPERIMENT", text)


def _asked(result: PassResult) -> str:
    """What the pass asked the scheduler, as the workflows' logs show the command."""
    if not result.plan.scheduler_known:
        return f"scheduler unknown ({result.plan.scheduler_note})"
    if result.question is None:
        return "scheduler not asked: nothing in flight, nothing left to do"
    ids = len(result.question[1])
    also = f", then sacct for whichever of {plural(ids, 'job')} left the queue" if ids else ""
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
    details = f"{plural(len(evals), 'evaluation')} in the matrix; {len(done)} already complete"
    if adopted:
        details += " (" + ", ".join(f"{n} adopted by {how}" for how, n in sorted(adopted.items())) + ")"
    orphans = result.observation.unattributed
    if orphans:
        details += f"; {plural(len(orphans), 'log')} not attributed to any unit (see reconcile status)"
    ready = sum(1 for p in evals if p.action in ("submit", "resubmit"))
    rest = Counter(states[k][0] for k, p in by_key.items() if p.state != "done" and p.action not in
                   ("submit", "resubmit"))
    result_text = f"{ready} ready to submit" + "".join(f", {n} {s}" for s, n in sorted(rest.items()))
    out.append(Entry("eval", "IDENTIFY_EVALS", block(ts, "IDENTIFY_EVALS", None, ("Details", details),
                                                     ("Result", result_text))))
    return out


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
    details = counts_line(states) + "".join(f"; {x}" for x in extras)
    errors = list(result.applied.errors) if result.applied is not None else []
    if not changes and not errors:
        if previous is None:
            return None
        return Entry("experiment", "STATUS_CHECK", f"[{ts}] STATUS_CHECK: no change; {flat(details)}\n")
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
