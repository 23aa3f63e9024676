"""Liveness: a watch always ends, never re-runs what is done, and never holds a job that cannot start.

Real watch passes (observe the files and the journal, plan, apply, journal) against a simulated
scheduler whose jobs write real checkpoints and `.eval` logs (tests/unit/sim_world.py). Hypothesis
generates the worlds: experiments of 1-3 runs x 1-3 epochs with or without a control, scripted
outcomes for every attempt of every unit (failures in any epoch, time-outs, out of memory,
cancellations by someone else, a trainer exiting 0 without its last epoch, evals exiting 0 with an
error log, crashing, or killed with a `started` log), fine-tunes failing after their evals were
queued behind them (DependencyNeverSatisfied), scheduler queries that fail for a while, submissions
lost or refused, and the retry budget changed between runs of the command (as `--max-attempts N`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.engine.loop import PassMemory, PassResult, ReplaceOnce, exit_code_for, watch, watch_pass
from reconciler.observe.checkpoints import epoch_evidence
from reconciler.plan.planner import Policy
from reconciler.spec.units import Desired
from tests.unit.planner_world import make_desired
from tests.unit.sim_world import EVAL_OUTCOMES, FINETUNE_ENDS, Script, SimScheduler, log_complete


@dataclass(frozen=True)
class World:
    runs: int
    epochs: int
    control: bool
    matrix: list[int]
    budgets: list[int]  # --max-attempts of each successive run of the command
    slots: int
    script: Script

    def eval_keys(self) -> list[str]:
        keys = [f"eval/r{i}/t/epoch{n}" for i in range(self.runs) for n in self.matrix]
        return keys + (["eval/ctl/t/base"] if self.control else [])


@st.composite
def worlds(draw: st.DrawFn) -> World:
    runs, epochs, control = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.booleans())
    matrix = sorted(draw(st.sets(st.integers(0, epochs - 1), min_size=1)))
    finetune_end = st.one_of(
        st.just(("ok", 0)),
        st.tuples(st.sampled_from(sorted(set(FINETUNE_ENDS) - {"short"})), st.integers(0, epochs)),
        st.tuples(st.just("short"), st.integers(0, epochs - 1)),
    )
    # A run fails in its own way attempt after attempt (as a bug in its config would), or at random.
    attempts = st.one_of(st.lists(finetune_end, max_size=4), finetune_end.map(lambda end: [end] * 4))
    script = Script(
        finetune={f"finetune/r{i}": draw(attempts) for i in range(runs)},
        unknown_queries=frozenset(draw(st.sets(st.integers(0, 30), max_size=4))),
        lost_submits=frozenset(lost := draw(st.sets(st.integers(0, 20), max_size=2))),
        created_before_loss=frozenset(draw(st.sets(st.sampled_from(sorted(lost)), max_size=2)) if lost else ()),
        refused_submits=frozenset(draw(st.sets(st.integers(0, 20), max_size=2))),
    )
    world = World(runs, epochs, control, matrix, budgets=draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)),
                  slots=draw(st.integers(1, 4)), script=script)
    for key in world.eval_keys():
        script.evals[key] = draw(st.lists(st.sampled_from(EVAL_OUTCOMES), max_size=3))
    return world


def pass_bound(world: World, budget: int) -> int:
    """Passes one run of the command may take, at most: every attempt the budget allows, one after
    the other (as if there were a single slot), plus every fault. A watch that hangs exceeds any bound."""
    finetune = budget * (world.epochs + 4)
    # An eval's own attempts, and one submission cancelled per attempt of its fine-tune.
    evals = 2 * budget * 6
    faults = len(world.script.unknown_queries) + len(world.script.lost_submits) + len(world.script.refused_submits)
    return 10 + faults + world.runs * finetune + len(world.eval_keys()) * evals


def finetune_done(desired: Desired, sim: SimScheduler, key: str) -> bool:
    """Ground truth: every checkpoint whole and the unit's last job exited 0."""
    unit = desired.by_key()[key]
    jobs = [j for j in sim.jobs.values() if j.unit == key]
    if not jobs or any(sim._live(j) for j in jobs):
        return False
    last = max(jobs, key=lambda j: int(j.job_id))
    whole = all(epoch_evidence(desired.layout.epoch_dir(unit.run, n), final=(i == len(unit.epochs) - 1)).state
                == "complete" for i, n in enumerate(unit.epochs))
    return whole and last.state == "COMPLETED" and last.exit_code == 0


def done_now(desired: Desired, sim: SimScheduler) -> set[str]:
    done = set()
    for unit in desired.units:
        if unit.kind == "eval" and log_complete(unit):
            done.add(unit.key)
        elif unit.kind == "finetune" and finetune_done(desired, sim, unit.key):
            done.add(unit.key)
    return done


def check_pass(desired: Desired, sim: SimScheduler, done_before: set[str], result: PassResult, policy: Policy) -> None:
    submitted = {e.unit for e in result.events if e.kind in ("submitted", "resubmitted")}
    # What --replace asked for is re-run although done, and so are the evals of a replaced fine-tune.
    asked = {u.key for u in desired.units if u.key in policy.replace or set(u.depends_on) & policy.replace}
    repeated = (submitted & done_before) - asked
    assert not repeated, f"submitted what was done: {sorted(repeated)}"
    live = {unit: ids for unit, ids in sim.live_by_unit().items() if len(ids) > 1}
    assert not live, f"two live jobs of one unit: {live}"
    acted = {e.job_id for e in result.events if e.kind in ("cancelled", "released")}
    held = sim.last_answer_never - acted
    assert not held, f"jobs that can never start were left waiting: {sorted(held)}"


def drive(desired: Desired, sim: SimScheduler, policy: Policy, max_passes: int) -> tuple[PassResult, int]:
    """`reconcile apply --watch`'s passes, with the simulated scheduler's clock as the watch's sleep."""
    replaced = ReplaceOnce()
    passes = 0
    memory = PassMemory()  # the watch's

    def one() -> PassResult:
        nonlocal passes
        passes += 1
        done_before = done_now(desired, sim)
        sim.last_answer_never = set()
        this_policy = replaced.policy(policy)
        result = watch_pass(desired, sim, this_policy, act=True, memory=memory)  # type: ignore[arg-type]
        replaced.note(result)
        check_pass(desired, sim, done_before, result, this_policy)
        return result

    result = watch(one, 1.0, lambda _: None, sleep=sim.tick, max_passes=max_passes)
    return result, passes


def check_converged(desired: Desired, sim: SimScheduler, result: PassResult, budgets: list[int]) -> None:
    assert result.converged
    assert exit_code_for(result) in (0, 3)
    assert not sim.live_by_unit(), "converged with jobs still in flight"
    done = done_now(desired, sim)
    planned = {p.key: p for p in result.plan.units}
    for p in result.plan.units:
        if p.state == "done":
            assert p.key in done, f"{p.key} reported done without its artifacts"
        elif p.state == "failed":
            assert p.attempts >= budgets[-1], f"{p.key} given up before its budget: {p}"
        elif p.state == "blocked":
            up = planned[p.depends_on[0]]
            assert up.state in ("failed", "blocked"), (p, up)
        else:
            raise AssertionError(f"converged with {p.key} {p.state}")
    unseen = sim.unseen_lost()
    for unit, started in sim.started.items():
        allowed = max(budgets) + unseen.get(unit, 0)
        assert started <= allowed, f"{unit} ran {started} times; budget {max(budgets)}, unseen lost jobs {unseen}"


# The sequence: tests/standin/experiment/with-failure.yaml (a run that fails in its second
# epoch, every time), run with its budget of 2, then again with --max-attempts 3.
WITH_FAILURE = World(runs=2, epochs=2, control=False, matrix=[0, 1], budgets=[2, 3], slots=2,
                     script=Script(finetune={"finetune/r1": [("fail", 1)] * 4}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds())
@example(WITH_FAILURE)
def test_a_watch_always_ends_and_never_repeats_or_holds_work(world: World) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        desired = make_desired(Path(tmp), world.runs, world.epochs, world.control, world.matrix)
        sim = SimScheduler(desired, world.script, world.slots)
        for i, budget in enumerate(world.budgets):
            bound = pass_bound(world, budget)
            result, passes = drive(desired, sim, Policy(max_attempts=budget), bound)
            assert result.converged, f"run {i + 1} (budget {budget}) not converged after {passes} passes: " + \
                "; ".join(f"{p.key}: {p.reason}" for p in result.plan.units if p.state not in ("done", "failed", "blocked"))
            check_converged(desired, sim, result, world.budgets[: i + 1])


def test_a_watch_asked_to_replace_a_unit_replaces_it_once() -> None:
    """`apply --watch --replace KEY`: the replacement's own result is not replaced again, pass after pass."""
    with tempfile.TemporaryDirectory() as tmp:
        desired = make_desired(Path(tmp), runs=1, epochs=2, control=False, matrix_epochs=[1])
        sim = SimScheduler(desired, Script())
        result, _ = drive(desired, sim, Policy(), max_passes=30)
        assert result.converged and exit_code_for(result) == 0
        keys = frozenset({"finetune/r0", "eval/r0/t/epoch1"})
        result, passes = drive(desired, sim, Policy(replace=keys), max_passes=30)
        assert result.converged and exit_code_for(result) == 0, passes
        assert sim.started == {"finetune/r0": 2, "eval/r0/t/epoch1": 2}


def test_a_watch_that_cannot_write_ends_unless_something_is_in_flight() -> None:
    """A full disk: the unit waits without spending an attempt, but a watch with nothing in flight
    would wait forever for a person to free space. It ends, saying why; with jobs in flight it goes on."""
    import errno

    from reconciler.engine.loop import run_pass

    with tempfile.TemporaryDirectory() as tmp:
        desired = make_desired(Path(tmp), runs=1, epochs=1, control=True)
        sim = SimScheduler(desired, Script())
        full = {"eval/ctl/t/base"}

        def prepare(_desired: Desired, unit: object, _planned: object, _journal: object) -> None:
            if getattr(unit, "key") in full:
                raise OSError(errno.ENOSPC, "No space left on device")

        def one() -> PassResult:
            return run_pass(desired, sim, Policy(), act=True, prepare=prepare)  # type: ignore[arg-type]

        seen: list[PassResult] = []
        result = watch(one, 1.0, seen.append, sleep=sim.tick, max_passes=40)
        # The fine-tune and its eval ran and finished meanwhile; then only the refused unit is left,
        # and the watch ends at the first pass where nothing is in flight.
        assert not result.converged and result.stalled and "No space left on device" in result.stalled
        assert len(seen) < 40 and not any(r.stalled for r in seen[:-1])
        assert any(p.state in ("queued", "running") for p in seen[-2].plan.units)
        assert exit_code_for(result) == 1 and not sim.live_by_unit()
        assert {p.key: p.state for p in result.plan.units} == {
            "finetune/r0": "done", "eval/r0/t/epoch0": "done", "eval/ctl/t/base": "missing"}
        full.clear()  # space freed: the next run converges
        result = watch(one, 1.0, lambda _: None, sleep=sim.tick, max_passes=40)
        assert result.converged and exit_code_for(result) == 0
