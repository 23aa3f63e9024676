"""What a pass logs about its units (pure): checkpoints written, evals blocked by a missing checkpoint,
state changes against the previous snapshot, one entry per thing apply did, each round of submissions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.jobs import job_order
from reconciler.plan.planner import PlannedUnit
from reconciler.records.log_format import Entry, block, log_of, slurm_word, unit_name
from reconciler.records.state_file import StateFile, fmt_duration, fmt_ts
from reconciler.spec.units import Desired, Unit

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult


def checkpoint_entries(desired: Desired, result: PassResult, previous: StateFile | None, ts: str) -> list[Entry]:
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


def checkpoint_missing_entries(desired: Desired, result: PassResult, previous: StateFile | None, ts: str) -> list[Entry]:
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


def state_change_entries(desired: Desired, result: PassResult, previous: StateFile | None,
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
        lines.append(("Previous", str(prev.job_state) if same_job and prev is not None else slurm_word(before)))
        lines.append(("Current", job.state if job is not None and job.state not in ("GONE", "UNKNOWN")
                      else slurm_word(state)))
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
        out.append(Entry(log_of(p.kind), action, block(ts, action, unit_name(p), *lines)))
    return out


def event_entries(units: dict[str, Unit], planned: dict[str, PlannedUnit], result: PassResult,
                   states: dict[str, tuple[str, str | None]], ts: str) -> list[Entry]:
    """One entry per thing apply did. Only SUBMIT_JOB / SUBMIT_EVAL blocks carry a `Job ID:` line."""
    out = []
    new_ids = {e.unit: str(e.job_id) for e in result.events if e.kind in ("submitted", "resubmitted") and e.job_id}
    for event in result.events:
        unit, p = units.get(event.unit), planned.get(event.unit)
        if unit is None or p is None:
            continue
        log, name = log_of(unit.kind), unit_name(unit)
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


def all_submitted_entries(units: dict[str, Unit], result: PassResult, ts: str) -> list[Entry]:
    """ALL_SUBMITTED closing each log's round of submissions: counts and the job id range."""
    out = []
    for log in ("finetune", "eval"):
        mine = [e for e in result.events if e.unit in units and log_of(units[e.unit].kind) == log]
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
