"""Render a plan as data (JSON, format_version 1) and as a text table; both from the same structure."""

from __future__ import annotations

import json
from typing import Any, TextIO

from reconciler.plan import ACTIONS, Plan, PlannedUnit

FORMAT_VERSION = 1


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
    }


def plan_record(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "format_version": FORMAT_VERSION,
        "experiment": plan.experiment,
        "summary": {action: counts.get(action, 0) for action in ACTIONS},
        "summary_line": plan.summary_line(),
        "scheduler": {"known": plan.scheduler_known, "note": plan.scheduler_note},
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
        rows.append((p.key, p.state, p.action, p.job_id or "-", p.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        out.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:4])) + "  " + r[4] + "\n")
    out.write("\n")
    if not plan.scheduler_known:
        out.write(f"Scheduler: unknown ({plan.scheduler_note}); nothing is submitted on unknown.\n")
    out.write(plan.summary_line() + "\n")
