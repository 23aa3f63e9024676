"""Drift: after one run's lr changes, exactly its units are outdated; --replace moves artifacts aside, deletes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.apply.artifacts import move_aside
from reconciler.jobs import Snapshot
from reconciler.spec.diff import diff_specs
from reconciler.journal import Journal
from reconciler.engine.loop import load_desired
from reconciler.observe.evallogs import HeaderCache
from reconciler.observe.observation import observe
from reconciler.plan.planner import SUBMITTING, Plan, Policy, plan
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired
from tests.unit.converged_fixture import build_converged

pytestmark = pytest.mark.slow  # the converged fixture runs real `inspect eval`s (once per session)

RUN = "rank8_lr1e-4"
OLD_LINE = "lora_rank: 8, lr: 1e-4"
NEW_LINE = "lora_rank: 8, lr: 3e-4"
CHANGED = {f"finetune/{RUN}", f"eval/{RUN}/capitalization/epoch0", f"eval/{RUN}/capitalization/epoch1"}
STAMP_TIME = 1_700_000_000.0


def plan_now(desired: Desired, policy: Policy = Policy()) -> Plan:
    """Observe with a scheduler that answered "no jobs", then plan: the library path `plan` and `apply` take."""
    view = Journal(desired.layout.state_dir).read()
    observation = observe(desired, view, Snapshot(), HeaderCache(None))
    return plan(desired.units, observation, policy, experiment=desired.experiment)


def inventory(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), the reconciler's own state left out."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            if rel.parts[0] != ".reconciler":
                out[str(rel)] = path.read_bytes()
    return out


@pytest.fixture
def drifted(tmp_path: Path) -> tuple[Desired, str]:
    """A converged demo whose spec then changed one run's learning rate; returns (desired, old spec text)."""
    desired = build_converged(tmp_path / "exp")
    spec = desired.loaded.path
    old_text = spec.read_text()
    assert old_text.count(OLD_LINE) == 1
    spec.write_text(old_text.replace(OLD_LINE, NEW_LINE))
    return load_desired(spec), old_text


def test_converged_fixture_is_converged(tmp_path: Path) -> None:
    the_plan = plan_now(build_converged(tmp_path / "exp"))
    assert the_plan.converged and not the_plan.has_changes
    assert {p.state for p in the_plan.units} == {"done"}


def test_changed_lr_makes_exactly_that_run_outdated(drifted: tuple[Desired, str]) -> None:
    desired, old_text = drifted
    the_plan = plan_now(desired)
    outdated = {p.key for p in the_plan.units if p.state == "outdated"}
    assert outdated == CHANGED
    assert {p.state for p in the_plan.units if p.key not in CHANGED} == {"done"}
    # Without --replace, outdated units are reported and left alone.
    assert not the_plan.has_changes and the_plan.converged
    assert all(p.reason.startswith("outdated: made under spec") for p in the_plan.units if p.key in CHANGED)
    assert "3 outdated" in the_plan.summary_line()

    # ... and `diff` names the field that made them so.
    diff = diff_specs(load_spec(desired.loaded.path, text=old_text), desired.loaded)
    assert [(f.path, f.old, f.new) for f in diff.fields] == [(f"runs[{RUN}].parameters.lr", 1e-4, 3e-4)]
    assert set(diff.fields[0].units) == CHANGED
    assert diff.fields[0].described == f"finetune/{RUN} and its 2 evals"


def test_replace_outdated_reruns_only_what_changed(drifted: tuple[Desired, str]) -> None:
    desired, _ = drifted
    the_plan = plan_now(desired, Policy(replace_outdated=True))
    rerun = {p.key: p for p in the_plan.units if p.action in SUBMITTING}
    assert set(rerun) == CHANGED
    assert rerun[f"finetune/{RUN}"].action == "resubmit"
    # The evals wait for the new fine-tune: their checkpoints will be rewritten.
    for key in CHANGED - {f"finetune/{RUN}"}:
        assert rerun[key].after == (f"finetune/{RUN}",)
    assert all(p.action == "none" for p in the_plan.units if p.key not in CHANGED)


def test_replace_by_key_reruns_that_unit_only(tmp_path: Path) -> None:
    desired = build_converged(tmp_path / "exp")
    key = "eval/base/capitalization/base"
    the_plan = plan_now(desired, Policy(replace=frozenset({key})))
    assert [(p.key, p.action, p.reason) for p in the_plan.units if p.action != "none"] == \
        [(key, "resubmit", "replace: asked to re-run")]


def test_move_aside_renames_with_a_timestamp_and_deletes_nothing(drifted: tuple[Desired, str]) -> None:
    desired, _ = drifted
    root = desired.layout.experiment_dir
    before = inventory(root)
    units = desired.by_key()
    moved = [pair for key in sorted(CHANGED) for pair in move_aside(desired, units[key], now=STAMP_TIME)]

    assert len(moved) == len(CHANGED)
    for old, new in moved:
        assert not old.exists() and new.is_dir()
        assert new.parent == old.parent and new.name.startswith(f"{old.name}.replaced-")
    assert desired.layout.output_dir(RUN) in [old for old, _ in moved]
    # Every byte is still there, under the renamed directories.
    renames = {str(old.relative_to(root)): str(new.relative_to(root)) for old, new in moved}
    after = inventory(root)
    assert len(after) == len(before)
    for rel, data in before.items():
        for old_prefix, new_prefix in renames.items():
            if rel.startswith(old_prefix + os.sep):
                rel = new_prefix + rel[len(old_prefix):]
        assert after[rel] == data, rel

    # Only the changed run lost its outputs: it is re-run; the rest stays done.
    the_plan = plan_now(desired)
    assert {p.key for p in the_plan.units if p.action in SUBMITTING} == CHANGED
    assert {p.state for p in the_plan.units if p.key not in CHANGED} == {"done"}


def test_moving_aside_twice_in_one_second_keeps_both(drifted: tuple[Desired, str]) -> None:
    desired, _ = drifted
    unit = desired.by_key()[f"eval/{RUN}/capitalization/epoch0"]
    assert unit.log_dir is not None
    [(_, first)] = move_aside(desired, unit, now=STAMP_TIME)
    unit.log_dir.mkdir(parents=True)
    (unit.log_dir / "again.eval").write_bytes(b"second attempt")
    [(_, second)] = move_aside(desired, unit, now=STAMP_TIME)
    assert first != second and first.is_dir() and second.is_dir()
    assert (second / "again.eval").read_bytes() == b"second attempt"
    assert any(first.glob("*.eval"))
