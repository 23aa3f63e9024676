"""Render a plan as data (JSON, format_version 3) and as a text table; both from the same structure."""

from __future__ import annotations

import json
from typing import Any, TextIO

from reconciler.plan.planner import ACTIONS, Plan, PlannedUnit

# 2: `presumed` per unit, `scheduler.presumed_empty` (an offline plan presumes an empty scheduler) and
# `scheduler.backend` (the backend asked). 3: `group` per unit (the evals that share its job).
FORMAT_VERSION = 3


def unit_record(p: PlannedUnit) -> dict[str, Any]:
    return {
        "key": p.key,
        "kind": p.kind,
        "run": p.run,
        "task": p.task,
        "epoch": p.epoch,
        "state": p.state,
        "action": p.action,
        "reason": p.reason,
        "depends_on": list(p.depends_on),
        "job_id": p.job_id,
        "fingerprint": p.fingerprint,
        "attempts": p.attempts,
        "failure_class": p.failure_class,
        "after": list(p.after),
        "untouched": p.untouched,
        "presumed": p.presumed,
        "group": list(p.group),
    }


def action_label(p: PlannedUnit) -> str:
    return f"{p.action} (presumed)" if p.presumed else p.action


def plan_record(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "format_version": FORMAT_VERSION,
        "experiment": plan.experiment,
        "summary": {action: counts.get(action, 0) for action in ACTIONS},
        "summary_line": plan.summary_line(),
        "scheduler": {"backend": plan.backend, "known": plan.scheduler_known, "note": plan.scheduler_note,
                      "presumed_empty": plan.presumed_empty},
        "has_changes": plan.has_changes,
        "converged": plan.converged,
        "units": [unit_record(p) for p in plan.units],
    }


def write_json(plan: Plan, out: TextIO) -> None:
    json.dump(plan_record(plan), out, indent=2)
    out.write("\n")


def _epoch(p: PlannedUnit) -> str:
    if p.kind == "finetune":
        return "-"
    return "base" if p.epoch is None else str(p.epoch)


def write_text(plan: Plan, out: TextIO) -> None:
    rows = [("UNIT", "STATE", "ACTION", "JOB", "REASON")]
    for p in plan.units:
        rows.append((p.key, p.state, action_label(p), p.job_id or "-", p.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:4])) + "  " + r[4] + "\n")
    out.write("\n")
    for line in shared_job_lines(plan):
        out.write(line + "\n")
    out.write(scheduler_line(plan) + "\n")
    out.write(plan.summary_line() + "\n")


def shared_jobs(plan: Plan) -> list[tuple[str, ...]]:
    """The groups of evals that go into one job each (evaluation.group_by_checkpoint), in plan order."""
    return list(dict.fromkeys(p.group for p in plan.units if p.group))


def group_label(keys: tuple[str, ...]) -> str:
    """`eval/run/{a,b,c}/epoch0`: the evals of one checkpoint, by task."""
    parts = [key.split("/") for key in keys]
    return f"eval/{parts[0][1]}/{{{','.join(p[2] for p in parts)}}}/{parts[0][3]}"


def shared_job_lines(plan: Plan) -> list[str]:
    groups = shared_jobs(plan)
    if not groups:
        return []
    evals = sum(len(g) for g in groups)
    lines = [f"Shared jobs: {evals} evals in {len(groups)} job(s), one model load per checkpoint:"]
    lines += [f"  {group_label(g)} ({len(g)} tasks)" for g in groups]
    return lines


def scheduler_line(plan: Plan) -> str:
    """What the plan knew of the scheduler, in one line (a plan that asked it and was answered says so too)."""
    if plan.presumed_empty:
        unknown = sum(1 for p in plan.units if p.state == "unknown")
        journal = (f"; {unknown} unit(s) the journal says are in flight stay unknown" if unknown else "")
        if not plan.presumed and not unknown:
            return "Scheduler: not asked (offline); every unit is settled by its files and the journal."
        return (f"Scheduler: not asked (offline), presumed empty: what is not done on disk is shown as to submit "
                f"(presumed){journal}. `apply` asks the scheduler before it acts.")
    if not plan.scheduler_known:
        return f"Scheduler: {plan.backend or 'none'}, unknown ({plan.scheduler_note}); nothing is submitted on unknown."
    return f"Scheduler: {plan.backend}."
