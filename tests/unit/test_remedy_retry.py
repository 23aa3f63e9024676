"""A fine-tune that ran out of memory is retried with a smaller batch, and the journal remembers it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from reconciler.engine.loop import run_pass
from reconciler.jobs import FAILED, OUT_OF_MEMORY, Job
from reconciler.journal import Journal, JournalView
from reconciler.observe.observation import Observation, UnitEvidence
from reconciler.apply.prepare import prepare_unit
from reconciler.plan.planner import Plan, PlannedUnit, Policy, plan
from reconciler.engine.annotate import annotate
from reconciler.plan.remedies import Remedy, RemedyChoice
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired, expand
from tests.conftest import EXPERIMENTS
from tests.unit.test_summary import FakeBackend

RUN = "finetune/Llama-3.1-8B-Instruct_rank16"


@pytest.fixture
def desired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Desired:
    monkeypatch.setenv("RECONCILER_CONFIG", str(tmp_path / "no-user-config.yaml"))
    exp = tmp_path / "exp"
    shutil.copytree(EXPERIMENTS / "scaffold_8b", exp)
    return expand(load_spec(exp))


def planned_retry(desired: Desired, oom_in_stdout: bool, state: str = FAILED):
    unit = desired.by_key()[RUN]
    evidence = UnitEvidence(jobs=(Job(job_id="7", state=state, exit_code=1),), attempts=1,
                            oom_in_stdout=oom_in_stdout)
    the_plan = plan(desired.units, Observation(units={RUN: evidence}, scheduler_known=True), Policy(max_attempts=3))
    return unit, next(p for p in the_plan.units if p.key == RUN)


def chosen(desired: Desired, planned: PlannedUnit) -> PlannedUnit:
    """The planned unit as a pass hands it to apply: its remedy chosen (annotate) from the journal as it is now."""
    the_plan = Plan(experiment=desired.experiment, units=(planned,))
    return annotate(the_plan, desired, Journal(desired.layout.state_dir).read()).units[0]


def batch_of(desired: Desired) -> tuple[int, int]:
    config = yaml.safe_load(desired.layout.finetune_config(RUN.split("/", 1)[1]).read_text())
    return config["batch_size"], config["gradient_accumulation_steps"]


def test_oom_in_stdout_is_planned_as_out_of_memory(desired: Desired) -> None:
    _, planned = planned_retry(desired, oom_in_stdout=True)
    assert planned.action == "resubmit"
    assert planned.failure_class == "out_of_memory"
    assert "out_of_memory" in planned.reason


def test_each_oom_retry_halves_the_batch_and_keeps_the_effective_batch(desired: Desired) -> None:
    unit, planned = planned_retry(desired, oom_in_stdout=True)
    prepare_unit(desired, unit, chosen(desired, planned))
    assert batch_of(desired) == (64, 4)
    prepare_unit(desired, unit, chosen(desired, planned))  # a second OOM builds on the first remedy
    assert batch_of(desired) == (32, 8)
    remedies = [r for r in Journal(desired.layout.state_dir).read().units[RUN].last_remedy.items()]
    assert ("batch_size", 32) in remedies


def test_a_retry_for_another_cause_keeps_the_last_remedy(desired: Desired) -> None:
    unit, oom = planned_retry(desired, oom_in_stdout=True)
    prepare_unit(desired, unit, chosen(desired, oom))
    _, other = planned_retry(desired, oom_in_stdout=False)
    assert other.failure_class == "other"
    prepare_unit(desired, unit, chosen(desired, other))
    assert batch_of(desired) == (64, 4)


def test_a_plain_failure_renders_the_spec_values(desired: Desired) -> None:
    unit, planned = planned_retry(desired, oom_in_stdout=False)
    prepare_unit(desired, unit, chosen(desired, planned))
    assert batch_of(desired) == (128, 2)
    assert Journal(desired.layout.state_dir).read().history(RUN).last_remedy is None


def test_the_plan_says_which_remedy_a_retry_takes(desired: Desired) -> None:
    unit, planned = planned_retry(desired, oom_in_stdout=True)
    the_plan = plan(desired.units, Observation(units={RUN: UnitEvidence(
        jobs=(Job(job_id="7", state=FAILED, exit_code=1),), attempts=1, oom_in_stdout=True)}, scheduler_known=True),
        Policy(max_attempts=3))
    noted = next(p for p in annotate(the_plan, desired, JournalView()).units if p.key == RUN)
    assert "remedy: out of memory: batch size 128 -> 64, gradient accumulation 2 -> 4" in noted.reason


def test_the_plan_says_a_users_script_is_used_as_it_is_and_no_remedy_reaches_it(desired: Desired) -> None:
    unit, planned = planned_retry(desired, oom_in_stdout=True)
    unit.script.parent.mkdir(parents=True, exist_ok=True)
    unit.script.write_text("#!/bin/bash\ntune run my_recipe --config mine.yaml\n")
    the_plan = plan(desired.units, Observation(units={RUN: UnitEvidence(
        jobs=(Job(job_id="7", state=FAILED, exit_code=1),), attempts=1, oom_in_stdout=True)}, scheduler_known=True),
        Policy(max_attempts=3))
    noted = next(p for p in annotate(the_plan, desired, JournalView()).units if p.key == RUN)
    assert "was not rendered by the reconciler: used as it is" in noted.reason and "remedy" not in noted.reason
    prepare_unit(desired, unit, chosen(desired, planned))
    assert unit.script.read_text() == "#!/bin/bash\ntune run my_recipe --config mine.yaml\n"
    assert Journal(desired.layout.state_dir).read().history(RUN).last_remedy is None


def test_a_pass_chooses_a_retrys_remedy_once_and_journals_the_one_its_plan_shows(
        desired: Desired, monkeypatch: pytest.MonkeyPatch) -> None:
    import reconciler.engine.annotate as annotate_module
    import reconciler.plan.remedies as remedies

    backend = FakeBackend()
    run_pass(desired, backend, Policy(max_attempts=3), act=True, prepare=prepare_unit)
    job_id = next(j.job_id for j in backend.jobs.values() if (j.tag or "").endswith(RUN))
    backend.set(job_id, OUT_OF_MEMORY, exit_code=0)

    choices: list[str] = []
    worked_out: list[str | None] = []
    choose, work_out = remedies.choose_remedy, remedies.next_remedy
    monkeypatch.setattr(annotate_module, "choose_remedy", lambda p, *a: choices.append(p.key) or choose(p, *a))
    monkeypatch.setattr(remedies, "next_remedy", lambda failure, *a, **k: worked_out.append(failure) or
                        work_out(failure, *a, **k))
    result = run_pass(desired, backend, Policy(max_attempts=3), act=True, prepare=prepare_unit)

    planned = next(p for p in result.plan.units if p.key == RUN)
    assert planned.action == "resubmit" and planned.failure_class == "out_of_memory"
    assert choices.count(RUN) == 1 and worked_out == ["out_of_memory"]  # once per pass: not again in apply
    journaled = Remedy.from_dict(Journal(desired.layout.state_dir).read().history(RUN).last_remedy)
    assert journaled is not None and planned.remedy == RemedyChoice(journaled, new=True)
    assert f"remedy: {journaled.reason}" in planned.reason
    assert batch_of(desired) == (64, 4)
