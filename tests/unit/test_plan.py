"""The planner: a table of cases, and property tests of its invariants."""

from __future__ import annotations

import builtins
import io
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.jobs import (
    COMPLETED,
    DEPENDENCY_NEVER_SATISFIED,
    FAILED,
    PENDING,
    RUNNING,
    TIMEOUT,
    UNKNOWN,
    Job,
)
from reconciler.observe.checkpoints import EpochEvidence
from reconciler.observe.observation import GONE, Observation, UnitEvidence
from reconciler.plan.planner import Policy, plan
from tests.conftest import EXPERIMENTS
from tests.unit.planner_world import absent_epochs, complete_epochs, log, make_desired, pretend_apply

from reconciler.spec.load import load_spec
from reconciler.spec.units import expand


def test_realistic_sweep_plans_8_finetunes_and_17_gated_evals() -> None:
    desired = expand(load_spec(EXPERIMENTS / "sweep8"))
    result = plan(desired.units, Observation(units={}, scheduler_known=True), Policy(), "x")
    finetunes = [p for p in result.units if p.kind == "finetune"]
    evals = [p for p in result.units if p.kind == "eval"]
    assert len(finetunes) == 8 and all(p.action == "submit" for p in finetunes)
    assert len(evals) == 17 and all(p.action == "submit" for p in evals)
    for p in evals:
        expected = () if p.run == "base" else (f"finetune/{p.run}",)
        assert p.after == expected, p.key
    assert result.summary_line() == "Plan: 25 to submit, 0 to resubmit, 0 to cancel; 0 done, 0 in flight, 0 blocked"


@pytest.fixture
def world(tmp_path: Path):
    return make_desired(tmp_path, runs=1, epochs=2, control=True)


def _obs(units: dict[str, UnitEvidence], known: bool = True) -> Observation:
    return Observation(units=units, scheduler_known=known)


def by_key(result):
    return {p.key: p for p in result.units}


FT, E0, E1, BASE = "finetune/r0", "eval/r0/t/epoch0", "eval/r0/t/epoch1", "eval/ctl/t/base"


def test_running_finetune_with_epoch0_ready_releases_the_pending_eval(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", RUNNING, started_at=0.5),), attempts=1,
                      epochs=(EpochEvidence("complete", "", 1.0), EpochEvidence("absent", "")))
    e0 = UnitEvidence(jobs=(Job("11", PENDING, reason="Dependency", depends_on=("10",)),), attempts=1)
    e1 = UnitEvidence(jobs=(Job("12", PENDING, reason="Dependency", depends_on=("10",)),), attempts=1)
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0, E1: e1}), Policy()))
    assert p[E0].action == "release" and p[E0].job_ids == ("11",)
    assert p[E1].action == "none" and p[E1].state == "queued"  # final epoch waits for the job's clean exit


def test_stale_checkpoint_from_a_failed_attempt_is_not_released(world) -> None:
    ft = UnitEvidence(jobs=(Job("9", FAILED), Job("10", RUNNING, started_at=5.0)), attempts=2,
                      epochs=(EpochEvidence("complete", "", 1.0), EpochEvidence("absent", "")))
    e0 = UnitEvidence(jobs=(Job("11", PENDING, reason="Dependency", depends_on=("10",)),), attempts=1)
    assert by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy()))[E0].action == "none"


def test_failed_finetune_is_retried_then_blocks_its_evals(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", TIMEOUT),), attempts=1, epochs=absent_epochs(2))
    p = by_key(plan(world.units, _obs({FT: ft}), Policy(max_attempts=3)))
    assert p[FT].action == "resubmit" and p[FT].failure_class == "timeout"
    assert "attempt 2 of 3" in p[FT].reason
    assert p[E0].action == "submit" and p[E0].after == (FT,)

    ft = replace(ft, jobs=(Job("10", TIMEOUT), Job("13", FAILED), Job("14", FAILED)), attempts=3)
    p = by_key(plan(world.units, _obs({FT: ft}), Policy(max_attempts=3)))
    assert p[FT].state == "failed" and p[FT].action == "none" and "budget" in p[FT].reason
    assert p[E0].state == "blocked" and p[E0].action == "none"
    assert p[BASE].action == "submit"  # the control does not depend on any fine-tune


def test_dependency_never_satisfied_is_cancelled(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", FAILED),), attempts=3, epochs=absent_epochs(2))
    e0 = UnitEvidence(jobs=(Job("11", PENDING, reason=DEPENDENCY_NEVER_SATISFIED, depends_on=("10",)),), attempts=1)
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy(max_attempts=3)))
    assert p[E0].action == "cancel" and p[E0].state == "blocked" and p[E0].job_ids == ("11",)


def test_a_dead_dependency_of_an_eval_whose_checkpoint_is_there_is_released(world) -> None:
    """The fine-tune saved epoch 0, then failed for good: the eval queued behind it is let go, not resubmitted."""
    ft = UnitEvidence(jobs=(Job("10", FAILED, exit_code=1),), attempts=3,
                      epochs=(EpochEvidence("complete", "", 1.0), EpochEvidence("absent", "")))
    e0 = UnitEvidence(jobs=(Job("11", PENDING, reason=DEPENDENCY_NEVER_SATISFIED, depends_on=("10",)),), attempts=1)
    e1 = UnitEvidence(jobs=(Job("12", PENDING, reason=DEPENDENCY_NEVER_SATISFIED, depends_on=("10",)),), attempts=1)
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0, E1: e1}), Policy(max_attempts=3)))
    assert (p[E0].action, p[E0].job_ids) == ("release", ("11",)) and "failed" in p[E0].reason
    assert (p[E1].action, p[E1].state) == ("cancel", "blocked")  # the final epoch was never written


def test_an_evaluated_epoch_stays_done_when_its_finetune_is_retried(world) -> None:
    """issue 16: the epoch-0 eval was resubmitted ("retry: job 9 COMPLETED without a complete log")
    when the fine-tune that had failed in epoch 1 was given more attempts."""
    ft = UnitEvidence(jobs=(Job("2", FAILED, exit_code=1), Job("6", FAILED, exit_code=1)), attempts=2,
                      epochs=(EpochEvidence("complete", "", 1.0), EpochEvidence("absent", "")))
    e0 = UnitEvidence(jobs=(Job("9", COMPLETED, exit_code=0),), attempts=1, log=log("complete"))
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy(max_attempts=3)))
    assert p[FT].action == "resubmit"
    assert (p[E0].state, p[E0].action) == ("done", "none"), p[E0].reason
    assert p[E1].action == "submit" and p[E1].after == (FT,)


def test_a_pending_job_of_an_eval_already_done_is_cancelled(world) -> None:
    """issue 16: `finishing: log complete; job 11 still PENDING` forever, its afterok never to be met."""
    ft = UnitEvidence(jobs=(Job("10", FAILED, exit_code=1),), attempts=3,
                      epochs=(EpochEvidence("complete", "", 1.0), EpochEvidence("absent", "")))
    for reason in (DEPENDENCY_NEVER_SATISFIED, "Dependency", "Priority"):
        e0 = UnitEvidence(jobs=(Job("9", COMPLETED, exit_code=0), Job("11", PENDING, reason=reason, depends_on=("10",))),
                          attempts=2, log=log("complete"))
        p = by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy(max_attempts=3)))[E0]
        assert (p.state, p.action, p.job_ids) == ("done", "cancel", ("11",)), p.reason
    # A job that is running has written its log and is about to exit: it is left to finish.
    e0 = UnitEvidence(jobs=(Job("11", RUNNING),), attempts=1, log=log("complete"))
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy(max_attempts=3)))[E0]
    assert (p.state, p.action) == ("running", "none") and p.reason.startswith("finishing")


def test_a_complete_log_whose_job_cannot_be_asked_about_is_not_converged(world) -> None:
    """The job may still hold its slot: a watch must look again rather than call it converged."""
    ft = UnitEvidence(jobs=(Job("10", COMPLETED, exit_code=0),), attempts=1, epochs=complete_epochs(2))
    e0 = UnitEvidence(jobs=(Job("11", "UNKNOWN"),), attempts=1, log=log("complete"))
    result = plan(world.units, _obs({FT: ft, E0: e0}, known=False), Policy())
    assert by_key(result)[E0].state == "unknown" and not result.converged


def test_evals_of_a_replaced_finetune_are_moved_aside_and_rerun(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", COMPLETED, exit_code=0),), attempts=1, epochs=complete_epochs(2))
    e0 = UnitEvidence(jobs=(Job("11", COMPLETED, exit_code=0),), attempts=1, log=log("complete"))
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy(replace=frozenset({FT}))))
    assert p[FT].action == "resubmit"
    # state done: apply moves the old log aside before the eval runs again, behind the new fine-tune
    assert (p[E0].state, p[E0].action, p[E0].after) == ("done", "resubmit", (FT,))


def test_eval_error_log_is_a_failure_even_when_the_job_completed(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", COMPLETED, exit_code=0),), attempts=1, epochs=complete_epochs(2))
    e0 = UnitEvidence(jobs=(Job("11", COMPLETED, exit_code=0),), attempts=1, log=log("error"))
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0}), Policy()))
    assert p[FT].state == "done"
    assert p[E0].action == "resubmit" and "eval log says error" in p[E0].reason


def test_finetune_checkpoints_complete_but_job_failed_is_not_done(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", FAILED, exit_code=1),), attempts=1, epochs=complete_epochs(2))
    assert by_key(plan(world.units, _obs({FT: ft}), Policy()))[FT].action == "resubmit"


def test_gone_job_with_complete_checkpoints_is_done(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", GONE),), attempts=1, epochs=complete_epochs(2))
    assert by_key(plan(world.units, _obs({FT: ft}), Policy()))[FT].state == "done"


def test_duplicate_live_jobs_keep_the_oldest(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", RUNNING), Job("12", PENDING)), attempts=2, epochs=absent_epochs(2))
    p = by_key(plan(world.units, _obs({FT: ft}), Policy()))[FT]
    assert p.action == "cancel" and p.job_ids == ("12",) and p.job_id == "10"


def test_outdated_is_reported_and_replaced_only_on_request(world) -> None:
    ft = UnitEvidence(jobs=(Job("10", COMPLETED, exit_code=0),), attempts=1, epochs=complete_epochs(2),
                      produced_fingerprint="0000000000000000")
    p = by_key(plan(world.units, _obs({FT: ft}), Policy()))
    assert p[FT].state == "outdated" and p[FT].action == "none"
    p = by_key(plan(world.units, _obs({FT: ft}), Policy(replace_outdated=True)))
    assert p[FT].action == "resubmit"
    assert p[E0].action == "submit" and p[E0].after == (FT,)  # the new checkpoints, not the old ones


def test_started_log_of_a_job_that_is_gone_is_not_done(world) -> None:
    """A `.eval` log left `started` by a dead eval: retried, never done (inspect writes it before any sample)."""
    ft = UnitEvidence(jobs=(Job("10", COMPLETED, exit_code=0),), attempts=1, epochs=complete_epochs(2))
    e0 = UnitEvidence(jobs=(Job("11", GONE),), attempts=1, log=log("started"))
    e1 = UnitEvidence(jobs=(Job("12", RUNNING),), attempts=1, log=log("started"))
    base = UnitEvidence(jobs=(), attempts=0, log=log("started"))
    p = by_key(plan(world.units, _obs({FT: ft, E0: e0, E1: e1, BASE: base}), Policy()))
    assert (p[E0].state, p[E0].action) == ("failed", "resubmit") and "left 'started'" in p[E0].reason
    assert (p[E1].state, p[E1].action) == ("running", "none")  # still being written
    assert (p[BASE].state, p[BASE].action) == ("missing", "submit")


def test_scheduler_unknown_never_submits(world) -> None:
    result = plan(world.units, _obs({}, known=False), Policy())
    assert {p.action for p in result.units} == {"none"}
    assert {p.state for p in result.units} == {"unknown"}


# ---- properties -------------------------------------------------------------------------

JOB_STATES = [PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, "CANCELLED", "OUT_OF_MEMORY", GONE]
# What a job can be when the scheduler did not answer: UNKNOWN, or the end state the journal kept.
JOB_STATES_UNASKED = [UNKNOWN, UNKNOWN, COMPLETED, FAILED, TIMEOUT, "CANCELLED"]


@st.composite
def worlds(draw):
    runs = draw(st.integers(1, 3))
    epochs = draw(st.integers(1, 3))
    control = draw(st.booleans())
    known = draw(st.booleans())
    tmp = Path(tempfile.mkdtemp())
    desired = make_desired(tmp, runs, epochs, control)
    units = {}
    next_id = 100
    for unit in desired.units:
        n_jobs = draw(st.integers(0, 3))
        jobs = []
        for _ in range(n_jobs):
            next_id += 1
            state = draw(st.sampled_from(JOB_STATES if known else JOB_STATES_UNASKED))
            reason = draw(st.sampled_from([None, "Dependency", DEPENDENCY_NEVER_SATISFIED])) if state == PENDING else None
            jobs.append(Job(str(next_id), state, reason=reason, exit_code=draw(st.sampled_from([0, 1])),
                            depends_on=("1",) if reason else (), started_at=draw(st.sampled_from([None, 0.5, 2.0]))))
        if unit.kind == "finetune":
            states = draw(st.lists(st.sampled_from(["complete", "partial", "absent"]), min_size=epochs, max_size=epochs))
            ev = UnitEvidence(jobs=tuple(jobs), attempts=len(jobs),
                              epochs=tuple(EpochEvidence(s, "", 1.0 if s == "complete" else None) for s in states),
                              produced_fingerprint=draw(st.sampled_from([None, unit.fingerprint, "old"])))
        else:
            state = draw(st.sampled_from([None, "complete", "error", "started", "partial", "cancelled"]))
            ev = UnitEvidence(jobs=tuple(jobs), attempts=len(jobs), log=log(state) if state else None,
                              produced_fingerprint=draw(st.sampled_from([None, unit.fingerprint])))
        units[unit.key] = ev
    policy = Policy(max_attempts=draw(st.integers(1, 4)), replace_outdated=draw(st.booleans()))
    return desired, Observation(units=units, scheduler_known=known), policy


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds())
def test_idempotence_after_apply_nothing_to_submit(world) -> None:
    desired, obs, policy = world
    first = plan(desired.units, obs, policy)
    after = pretend_apply(first, obs, [10_000])
    second = plan(desired.units, after, policy)
    # A cancelled job (a dead dependency, a duplicate) may be replaced in a later pass; nothing else.
    cancelled = {p.key for p in first.units if p.action == "cancel"}
    resubmitted = [p.key for p in second.units if p.action in ("submit", "resubmit") and p.key not in cancelled]
    assert not resubmitted, (resubmitted, [p for p in first.units if p.key in resubmitted])


@SETTINGS
@given(worlds())
def test_at_most_one_live_job_per_unit(world) -> None:
    desired, obs, policy = world
    first = plan(desired.units, obs, policy)
    after = pretend_apply(first, obs, [10_000])
    for p in first.units:
        live_before = [j for j in obs.get(p.key).jobs if j.live]
        if p.action in ("submit", "resubmit"):
            assert not live_before, p
        if len(live_before) <= 1 or p.action == "cancel":
            assert len([j for j in after.get(p.key).jobs if j.live]) <= 1, p


@SETTINGS
@given(worlds())
def test_no_eval_submitted_without_checkpoint_or_afterok(world) -> None:
    desired, obs, policy = world
    result = plan(desired.units, obs, policy)
    planned = {p.key: p for p in result.units}
    units = desired.by_key()
    for p in result.units:
        if p.kind != "eval" or p.action not in ("submit", "resubmit") or not p.depends_on:
            continue
        up = planned[p.depends_on[0]]
        ft_ev = obs.get(up.key)
        unit = units[p.key]
        ready = (up.state in ("done", "outdated") and up.action == "none") or (
            unit.needs_epoch is not None and unit.needs_epoch < len(ft_ev.epochs) - 1
            # a fine-tune whose duplicate job is being cancelled keeps its first job and checkpoints
            and ft_ev.epochs[unit.needs_epoch].state == "complete" and up.action in ("none", "cancel"))
        with_dependency = p.after == (up.key,) and (up.action in ("submit", "resubmit") or up.state in ("queued", "running"))
        assert ready or with_dependency, (p, up)


@contextmanager
def no_io() -> Iterator[None]:
    """Every way from Python to a file, a directory or the clock raises while the block runs."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"I/O in plan(): {args[:1]}")

    with ExitStack() as stack:
        for target, name in [(builtins, "open"), (io, "open"), (os, "open"), (os, "stat"), (os, "lstat"),
                             (os, "scandir"), (os, "listdir"), (os, "access"), (os, "readlink"),
                             (time, "time"), (time, "monotonic"), (time, "localtime")]:
            stack.enter_context(patch.object(target, name, refuse))
        yield


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_plan_is_pure(world) -> None:
    """Invariant 1: no file, no directory, no clock; the same input gives the same plan."""
    desired, obs, policy = world
    with no_io():
        first = plan(desired.units, obs, policy)
        again = plan(desired.units, obs, policy)
    assert again == first


@SETTINGS
@given(worlds())
def test_done_only_on_a_complete_log_or_complete_checkpoints(world) -> None:
    desired, obs, policy = world
    for p in plan(desired.units, obs, policy).units:
        if p.state not in ("done", "outdated"):
            continue
        ev = obs.get(p.key)
        if p.kind == "eval":
            assert ev.log is not None and ev.log.state == "complete", (p, ev.log)
        else:
            assert ev.epochs and all(e.state == "complete" for e in ev.epochs), (p, ev.epochs)


@SETTINGS
@given(worlds())
def test_nothing_is_done_on_unknown(world) -> None:
    desired, obs, policy = world
    unknown = Observation(units=obs.units, scheduler_known=False)
    result = plan(desired.units, unknown, policy)
    for p in result.units:
        live = [j for j in obs.get(p.key).jobs if j.live]
        if not live:
            assert p.action in ("none", "wait") or p.state in ("done", "outdated"), p


def test_the_budget_label_says_attempts_of_budget() -> None:
    """`(3 of 3)`, never `(3/2)`: a budget lowered below the attempts already made says both plainly."""
    from reconciler.plan.planner import budget_used

    assert budget_used(3, 3) == "retry budget used (3 of 3)"
    assert budget_used(3, 2) == "retry budget used (3 attempts; the budget is 2)"
