"""`--stage finetune|eval` and `--target PATTERN`: only the selected units (and what they depend on) are
acted on; the rest are reported, untouched."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.jobs import COMPLETED, RUNNING, Job
from reconciler.cli import main
from reconciler.errors import UsageError
from reconciler.engine.loop import run_pass
from reconciler.observe.observation import Observation, UnitEvidence
from reconciler.plan.planner import Policy, plan
from reconciler.spec.selection import select_units
from reconciler.spec.units import Desired
from tests.unit.planner_world import absent_epochs, complete_epochs, make_desired
from tests.unit.test_summary import FIXTURE, FakeBackend


@pytest.fixture
def desired(tmp_path: Path) -> Desired:
    # finetune/r0, finetune/r1 (2 epochs each), their evals at epoch0 and epoch1, eval/ctl/t/base
    return make_desired(tmp_path, runs=2, epochs=2, control=True)


def world(desired: Desired, done: set[str] = frozenset()) -> Observation:  # type: ignore[assignment]
    units = {}
    for unit in desired.units:
        if unit.kind == "finetune":
            epochs = complete_epochs(2) if unit.key in done else absent_epochs(2)
            units[unit.key] = UnitEvidence(epochs=epochs)
    return Observation(units=units, scheduler_known=True)


def actions(p) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {u.key: u.action for u in p.units}


def test_stage_eval_runs_the_evals_whose_checkpoints_exist_and_never_a_fine_tune(desired: Desired) -> None:
    selected = select_units(desired.units, "eval", ())
    p = plan(desired.units, world(desired, {"finetune/r0"}), Policy(selected=selected))
    assert actions(p) == {
        "finetune/r0": "none", "finetune/r1": "none",
        "eval/r0/t/epoch0": "submit", "eval/r0/t/epoch1": "submit",
        "eval/r1/t/epoch0": "wait", "eval/r1/t/epoch1": "wait", "eval/ctl/t/base": "submit",
    }
    by_key = {u.key: u for u in p.units}
    assert by_key["finetune/r1"].untouched and by_key["finetune/r1"].reason.startswith("not selected: would submit")
    assert by_key["eval/r1/t/epoch0"].untouched and "finetune/r1 is not selected" in by_key["eval/r1/t/epoch0"].reason
    assert not by_key["eval/r0/t/epoch0"].after  # its checkpoint is there: no afterok
    assert p.summary_line().endswith("; 4 untouched (not selected)")


def test_stage_eval_waits_afterok_on_a_fine_tune_already_in_flight(desired: Desired) -> None:
    obs = world(desired)
    running = Job("7", RUNNING, tag="x", started_at=1.0)
    obs = replace(obs, units={**obs.units, "finetune/r0": UnitEvidence(epochs=absent_epochs(2), jobs=(running,),
                                                                        attempts=1)})
    p = plan(desired.units, obs, Policy(selected=select_units(desired.units, "eval", ())))
    by_key = {u.key: u for u in p.units}
    assert by_key["eval/r0/t/epoch0"].action == "submit" and by_key["eval/r0/t/epoch0"].after == ("finetune/r0",)
    assert by_key["finetune/r0"].action == "none" and by_key["finetune/r0"].state == "running"
    assert not p.converged  # a job of an untouched unit is in flight: a watch waits for it


def test_stage_finetune_submits_no_eval_and_converges_when_the_fine_tunes_are_done(desired: Desired) -> None:
    policy = Policy(selected=select_units(desired.units, "finetune", ()))
    fresh = plan(desired.units, world(desired), policy)
    assert {k for k, a in actions(fresh).items() if a == "submit"} == {"finetune/r0", "finetune/r1"}
    assert all(u.untouched for u in fresh.units if u.kind == "eval")
    ok = Job("1", COMPLETED, exit_code=0)
    done = world(desired, {"finetune/r0", "finetune/r1"})
    done = replace(done, units={k: replace(v, jobs=(ok,)) for k, v in done.units.items()})
    after = plan(desired.units, done, policy)
    assert not after.has_changes and after.converged
    assert not plan(desired.units, done, Policy()).converged  # without --stage the evals are still to run


def test_target_brings_what_it_depends_on(desired: Desired) -> None:
    selected = select_units(desired.units, None, ("eval/r1/t/epoch1",))
    assert selected == {"eval/r1/t/epoch1", "finetune/r1"}
    assert select_units(desired.units, None, ("eval/*/t/epoch0", "eval/ctl/*")) == \
        {"eval/r0/t/epoch0", "eval/r1/t/epoch0", "finetune/r0", "finetune/r1", "eval/ctl/t/base"}
    assert select_units(desired.units, "eval", ("eval/r1/*",)) == {"eval/r1/t/epoch0", "eval/r1/t/epoch1"}
    p = plan(desired.units, world(desired), Policy(selected=selected))
    assert {k for k, a in actions(p).items() if a == "submit"} == {"finetune/r1", "eval/r1/t/epoch1"}
    assert {u.key: u.after for u in p.units}["eval/r1/t/epoch1"] == ("finetune/r1",)


def test_a_target_matching_nothing_is_an_error(desired: Desired) -> None:
    with pytest.raises(UsageError, match=r"--target 'eval/r9/\*' matches no unit"):
        select_units(desired.units, None, ("eval/r0/t/epoch0", "eval/r9/*"))
    with pytest.raises(UsageError, match="selects no unit"):
        select_units(desired.units, "finetune", ("eval/ctl/*",))


def copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "summary_fixture"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("__pycache__", ".reconciler", "logs"))
    return dst


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_cli_target_matching_nothing_exits_2_and_submits_nothing(tmp_path: Path, command: str) -> None:
    exp = copy_fixture(tmp_path)
    result = CliRunner().invoke(main, [command, str(exp), "--backend", "local", "--target", "eval/nope/*"])
    assert result.exit_code == 2, result.output
    assert "error: --target 'eval/nope/*' matches no unit of this experiment" in result.stderr
    assert not (exp / ".reconciler" / "journal.jsonl").exists()


def test_cli_plan_reports_the_rest_untouched(tmp_path: Path) -> None:
    exp = copy_fixture(tmp_path)
    result = CliRunner().invoke(main, ["plan", str(exp), "--backend", "local", "--format", "json",
                                       "--stage", "finetune"])
    assert result.exit_code == 0, result.output
    units = json.loads(result.stdout)["units"]
    assert all(u["untouched"] == (u["kind"] == "eval") for u in units)
    assert all(u["action"] == "none" for u in units if u["kind"] == "eval")


def test_apply_acts_only_on_the_target(tmp_path: Path) -> None:
    from reconciler.engine.loop import load_desired

    exp = copy_fixture(tmp_path)
    desired = load_desired(exp)
    backend = FakeBackend()
    key = next(u.key for u in desired.units if u.kind == "eval" and u.epoch == 0)
    policy = Policy(selected=select_units(desired.units, None, (key,)))
    result = run_pass(desired, backend, policy, act=True)
    submitted = {e.unit for e in result.events if e.kind == "submitted"}
    assert submitted <= {key, f"finetune/{key.split('/')[1]}"} and submitted
    assert {j.tag.split(":", 2)[2] for j in backend.jobs.values()} == submitted  # type: ignore[union-attr]
