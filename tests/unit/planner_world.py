"""A fake world for planner tests: evidence built by hand, and 'pretend apply' of a plan."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.jobs import PENDING, Job
from reconciler.observe.checkpoints import EpochEvidence
from reconciler.observe.evallogs import LogSummary
from reconciler.observe.observation import Observation, UnitEvidence
from reconciler.plan.planner import Plan
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired, expand


def make_desired(tmp: Path, runs: int, epochs: int, control: bool, matrix_epochs: list[int] | None = None) -> Desired:
    matrix_epochs = matrix_epochs if matrix_epochs is not None else list(range(epochs))
    run_lines, matrix_lines = [], []
    for i in range(runs):
        run_lines.append(f'  - {{name: "r{i}", type: "fine-tuned", model: "M-1B", parameters: {{lora_rank: {4 * (i + 1)}}}}}')
        matrix_lines.append(f'    - {{run: "r{i}", tasks: ["t"], epochs: {matrix_epochs}}}')
    if control:
        run_lines.append('  - {name: "ctl", type: "control", model: "M-1B", parameters: {}}')
        matrix_lines.append('    - {run: "ctl", tasks: ["t"], epochs: null}')
    text = f"""experiment: {{name: "w", question: "q", date: "2026-01-01", dir: "."}}
tools: {{preparation: "torchtune", evaluation: "inspect-ai"}}
controls: {{system_prompt: "", prompt: "{{input}}", dataset_type: "chat_completion", epochs: {epochs}, batch_size: 1}}
models: {{base: [{{name: "M-1B", path: "/m"}}]}}
data: {{training: {{path: "/d.json"}}}}
runs:
{chr(10).join(run_lines)}
evaluation:
  tasks: [{{name: "t", script: "/t.py"}}]
  matrix:
{chr(10).join(matrix_lines)}
"""
    path = tmp / "experiment_summary.yaml"
    path.write_text(text)
    return expand(load_spec(path))


def complete_epochs(n: int) -> tuple[EpochEvidence, ...]:
    return tuple(EpochEvidence("complete", "", 1.0) for _ in range(n))


def absent_epochs(n: int) -> tuple[EpochEvidence, ...]:
    return tuple(EpochEvidence("absent", "") for _ in range(n))


def log(state: str) -> LogSummary:
    return LogSummary(path="/x.eval", state=state, status="success" if state == "complete" else state,  # type: ignore[arg-type]
                      metric="accuracy", value=0.5, created="2026-01-01T00:00:00")


def pretend_apply(plan: Plan, obs: Observation, next_id: list[int]) -> Observation:
    """What the scheduler would look like right after apply: new pending jobs, cancelled ones gone."""
    units = dict(obs.units)
    for p in plan.units:
        ev = units.get(p.key, UnitEvidence())
        if p.action in ("submit", "resubmit"):
            next_id[0] += 1
            job = Job(job_id=str(next_id[0]), state=PENDING, depends_on=("x",) if p.after else ())
            units[p.key] = replace(ev, jobs=ev.jobs + (job,), attempts=ev.attempts + 1,
                                   log=None if p.state in ("done", "outdated") else ev.log,
                                   produced_fingerprint=None if p.state in ("done", "outdated") else ev.produced_fingerprint)
        elif p.action == "cancel":
            gone = set(p.job_ids)
            units[p.key] = replace(ev, jobs=tuple(replace(j, state="CANCELLED") if j.job_id in gone else j
                                                  for j in ev.jobs))
        elif p.action == "release":
            units[p.key] = replace(ev, jobs=tuple(replace(j, depends_on=()) if j.job_id in p.job_ids else j
                                                  for j in ev.jobs))
    return Observation(units=units, scheduler_known=obs.scheduler_known)
