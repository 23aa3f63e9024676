"""A plan as Markdown for a pull-request comment: summary, actions, outdated units, GPU-hours estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

from reconciler.timefmt import parse_time_limit
from reconciler.errors import ReconcilerError
from reconciler.plan.planner import ACTIONS, SUBMITTING, Plan
from reconciler.report.plan_render import group_label, plan_record, shared_jobs
from reconciler.scaffold.resources import SIZE_TABLE, model_size, resources_for
from reconciler.spec.units import Desired, Unit

COLLAPSE_AFTER = 10
# Fallback when the scaffold refuses a unit's overrides (validate reports them): GPUs by model size, time limits by kind.
FALLBACK_TIME = {"finetune": "2:00:00", "eval": "0:30:00"}


@dataclass(frozen=True)
class UnitCost:
    key: str
    gpus: int
    seconds: int

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.seconds / 3600


def unit_cost(desired: Desired, unit: Unit) -> tuple[UnitCost, str]:
    """GPUs x time limit of one unit, and where the numbers came from."""
    scaffold = _scaffold_resources(desired, unit)
    if scaffold is not None:
        return scaffold, "as the job scripts ask for them (by model size, with `compute` overrides)"
    return fallback_cost(desired, unit), "from a fallback table (1B/3B/8B: 1 GPU, 70B: 4 GPUs; fine-tune 2:00:00, eval 0:30:00)"


def _scaffold_resources(desired: Desired, unit: Unit) -> UnitCost | None:
    try:
        res = resources_for(desired.loaded, unit)
        seconds = parse_time_limit(str(res.time))
        return UnitCost(unit.key, int(res.gpus), seconds if seconds is not None else 0)
    except (ReconcilerError, ValueError):
        # A bad override is reported by validate and scaffold; an estimate still has the fallback.
        return None


def fallback_cost(desired: Desired, unit: Unit) -> UnitCost:
    spec = desired.loaded.spec
    run = spec.run_named(unit.run)
    compute = run.compute if unit.kind == "finetune" else spec.evaluation.compute
    gpus = compute.gpus if compute is not None and compute.gpus is not None else model_gpus(run.model)
    time = compute.time if compute is not None and compute.time else FALLBACK_TIME[unit.kind]
    seconds = parse_time_limit(time)
    return UnitCost(unit.key, gpus, seconds if seconds is not None else 0)


def model_gpus(name: str) -> int:
    """GPUs by the size table's row for the model's name (its warning is the scaffold's to give)."""
    return SIZE_TABLE[model_size(name)[0]].gpus


def estimate_record(plan: Plan, desired: Desired) -> dict[str, Any]:
    """GPU hours of the units the plan would submit, and at most how many more the unknown ones could need."""
    units = desired.by_key()
    sources: set[str] = set()

    def total(keys: list[str]) -> float:
        hours = 0.0
        for key in keys:
            cost, source = unit_cost(desired, units[key])
            sources.add(source)
            hours += cost.gpu_hours
        return round(hours, 2)

    submit = [p.key for p in plan.units if p.action in SUBMITTING and p.key in units]
    # A shared job asks for one model's GPUs for the sum of its tasks' time limits: the same
    # GPU-hours as its units alone, counted once as one job.
    jobs = len([p for p in plan.units if p.action in SUBMITTING and p.key in units and not p.group]) + \
        len([g for g in shared_jobs(plan) if g[0] in units])
    unknown = [p.key for p in plan.units if p.state == "unknown" and p.action not in SUBMITTING and p.key in units]
    return {
        "basis": "units x GPUs x time limit",
        "submit": {"units": len(submit), "jobs": jobs, "gpu_hours": total(submit), "presumed": plan.presumed},
        "unknown": {"units": len(unknown), "gpu_hours": total(unknown)},
        "sources": sorted(sources),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(plan: Plan, out: TextIO, desired: Desired | None = None) -> None:
    """`desired` adds the GPU-hours estimate; without it the estimate is left out."""
    record = plan_record(plan)
    units = record["units"]
    out.write(f"### reconcile plan: `{record['experiment']}`\n\n**{record['summary_line']}**\n\n")
    if record["scheduler"]["presumed_empty"]:
        presumed = sum(1 for u in units if u["presumed"])
        unknown = sum(1 for u in units if u["state"] == "unknown")
        journal = (f" {unknown} unit(s) the journal says are in flight stay `unknown`." if unknown else "")
        if presumed or unknown:
            out.write(f"> **Scheduler not asked** (offline): presumed empty. {presumed} unit(s) "
                      "whose files are not done are shown as `submit (presumed)`; `apply` asks the scheduler before "
                      f"it acts and submits only what it does not find there.{journal}\n\n")
        else:
            out.write("> **Scheduler not asked** (offline): every unit is settled by its files and the journal.\n\n")
    elif not record["scheduler"]["known"]:
        unknown = sum(1 for u in units if u["state"] == "unknown")
        if unknown:
            settled = (f"{unknown} unit(s) that files alone cannot settle are shown as `unknown`, never as "
                       "submissions; `apply` asks the scheduler before it acts.")
        else:
            settled = "every unit is settled by its files and the journal."
        out.write(f"> **Scheduler state unknown** ({record['scheduler']['note']}): {settled}\n\n")
    estimate = estimate_record(plan, desired) if desired is not None else None
    _summary_table(out, units)
    for action in _labels(units):
        rows = [u for u in units if _label(u) == action]
        table = ["| unit | state | reason |", "|---|---|---|"]
        table += [f"| `{u['key']}` | {u['state']} | {_cell(u['reason'])} |" for u in rows]
        _section(out, f"{action} ({len(rows)})", "\n".join(table) + "\n", len(rows))
    _outdated(out, units)
    groups = shared_jobs(plan)
    if groups:
        body = ("Each of these jobs loads its checkpoint once and runs its tasks one after another; each task "
                "writes its own log and is retried alone if it fails (`evaluation.group_by_checkpoint: false` "
                "turns this off).\n\n| job | units |\n|---|---|\n")
        body += "".join(f"| `{group_label(g)}` | " + ", ".join(f"`{k}`" for k in g) + " |\n" for g in groups)
        _section(out, f"Shared jobs ({len(groups)})", body, len(groups))
    if estimate is not None:
        _estimate(out, estimate)
    if plan.warnings:
        body = "".join(f"- {_cell(w)}\n" for w in plan.warnings)
        _section(out, f"Spec warnings ({len(plan.warnings)})", body, len(plan.warnings))


def _label(unit: dict[str, Any]) -> str:
    return f"{unit['action']} (presumed)" if unit["presumed"] else unit["action"]


def _labels(units: list[dict[str, Any]]) -> list[str]:
    """The actions present, in the vocabulary's order; a presumed one after its certain one."""
    present = {_label(u) for u in units}
    return [label for action in ACTIONS for label in (action, f"{action} (presumed)") if label in present]


def _summary_table(out: TextIO, units: list[dict[str, Any]]) -> None:
    rows = ["| action | units | states |", "|---|---|---|"]
    for action in _labels(units):
        mine = [u for u in units if _label(u) == action]
        states: dict[str, int] = {}
        for u in mine:
            states[u["state"]] = states.get(u["state"], 0) + 1
        rows.append(f"| {action} | {len(mine)} | " + ", ".join(f"{n} {s}" for s, n in states.items()) + " |")
    out.write("\n".join(rows) + "\n\n")


def _outdated(out: TextIO, units: list[dict[str, Any]]) -> None:
    rows = [u for u in units if u["state"] == "outdated"]
    if not rows:
        return
    body = ("Done under an older version of the spec. Left alone unless `reconcile apply --replace outdated` "
            "(old artifacts are moved aside, never deleted); `reconcile diff git:REV:PATH PATH` names the fields "
            "that changed.\n\n")
    body += "| unit | action | why |\n|---|---|---|\n"
    body += "".join(f"| `{u['key']}` | {u['action']} | {_cell(u['reason'])} |\n" for u in rows)
    _section(out, f"Outdated ({len(rows)})", body, len(rows))


def _estimate(out: TextIO, est: dict[str, Any]) -> None:
    submit, unknown = est["submit"], est["unknown"]
    out.write("#### GPU hours (estimate)\n\n")
    if not submit["units"] and not unknown["units"]:
        out.write("Nothing to submit: **0 GPU-h**.\n\n")
        return
    presumed = " (presumed: the scheduler was not asked)" if submit["presumed"] else ""
    jobs = f" in {submit['jobs']} job(s)" if submit["jobs"] != submit["units"] else ""
    out.write(f"- **{submit['gpu_hours']:.1f} GPU-h** for the {submit['units']} unit(s) this plan submits{jobs}{presumed}\n")
    if unknown["units"]:
        out.write(f"- up to **{unknown['gpu_hours']:.1f} GPU-h** more for {unknown['units']} unit(s) whose state "
                  "is unknown, if none of them has run yet\n")
    out.write(f"\nAn estimate from time limits ({est['basis']}), so an upper bound: jobs usually end sooner. "
              f"GPUs and time limits {'; '.join(est['sources'])}.\n\n")


def _section(out: TextIO, title: str, body: str, count: int) -> None:
    if count > COLLAPSE_AFTER:
        out.write(f"<details><summary>{title}</summary>\n\n{body}\n</details>\n\n")
    else:
        out.write(f"#### {title}\n\n{body}\n")
