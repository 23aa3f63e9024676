"""A watch's adaptive polling, on real passes: it waits longer while nothing changes, comes back to the
floor when something changes or a running fine-tune's next epoch is due, and says the interval in use."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import main
from reconciler.engine.loop import PassResult, adaptive_pace, load_desired, run_pass
from reconciler.apply.prepare import prepare_unit
from reconciler.plan.planner import Policy
from reconciler.engine.polling import PollPolicy
from reconciler.spec.units import Desired, job_stdout
from tests.integration.demo_env import copy_demo
from tests.unit.sim_world import write_epoch
from tests.unit.test_summary import FakeBackend

FINETUNE = "finetune/rank4_lr5e-5"
T0 = 1_800_000_000.0


def test_quiet_passes_stretch_the_wait_a_change_resets_it_and_each_new_wait_is_said(tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo", runs=["rank4_lr5e-5"]))
    backend = FakeBackend()
    said: list[float] = []
    pace = adaptive_pace(PollPolicy(floor=2, cap=10), lambda: desired, said.append, clock=lambda: T0)

    def one() -> float:
        return pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit))

    waits = [one(), one()]  # submits, then sees its jobs queued: changes
    waits += [one() for _ in range(5)]  # pending: nothing changes, nothing is expected
    assert waits == [2, 2, 3, 4.5, 6.75, 10, 10]
    assert said == [3, 4.5, 6.75, 10]  # the floor is where it starts; every later change is said
    job_id = next(j for j in backend.jobs.values() if j.tag and j.tag.endswith(FINETUNE)).job_id
    backend.set(job_id, "RUNNING", started_at=T0 - 30)
    assert one() == 2  # started: a change
    assert said[-1] == 2


def running_finetune(tmp_path: Path) -> tuple[Desired, FakeBackend, Callable[[PassResult], float], list[float], str]:
    """The demo cut to one run, its fine-tune submitted and running since T0; a pace (floor 10 s, cap
    1000 s) on a clock the test sets (`now[0]`)."""
    desired = load_desired(copy_demo(tmp_path / "demo", runs=["rank4_lr5e-5"]))
    backend = FakeBackend()
    now = [T0]
    pace = adaptive_pace(PollPolicy(floor=10, cap=1000), lambda: desired, lambda _: None, clock=lambda: now[0])
    run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)
    job_id = next(j for j in backend.jobs.values() if j.tag and j.tag.endswith(FINETUNE)).job_id
    backend.set(job_id, "RUNNING", started_at=T0)
    return desired, backend, pace, now, job_id


def test_a_fine_tunes_next_epoch_due_brings_the_wait_back_down(tmp_path: Path) -> None:
    desired, backend, pace, now, job_id = running_finetune(tmp_path)
    # Epoch 0 of 2 took 100 s: epoch 1 is due at T0 + 200 (the 10-minute limit is later).
    write_epoch(desired, desired.by_key()[FINETUNE], 0, when=T0 + 100)
    now[0] = T0 + 150
    pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit))
    for _ in range(12):  # quiet passes would stretch the wait to the cap
        wait = pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit))
    assert 45 <= wait <= 50.3  # not past the epoch that is due (written 0.2 s after `when`)
    now[0] = T0 + 400  # due and not written: look again as soon as allowed
    assert pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)) == 10


def test_a_cap_below_the_floor_is_refused_before_anything_is_submitted(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo", runs=["rank4_lr5e-5"])
    result = CliRunner().invoke(main, ["apply", str(exp), "--backend", "local", "--watch", "--interval", "5",
                                       "--max-interval", "2"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "--max-interval 2 is below the polling floor of 5s" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (exp / ".reconciler" / "journal.jsonl").exists()


def test_slurm_stretches_to_five_floors_by_default_and_the_local_backend_stays_at_its_floor() -> None:
    from reconciler.backends.local.backend import CAPABILITIES as LOCAL
    from reconciler.backends.slurm.backend import CAPABILITIES as SLURM
    from reconciler.app.options import poll_policy

    assert poll_policy(60, None, SLURM.max_poll_factor) == PollPolicy(floor=60, cap=300)
    assert poll_policy(2, None, LOCAL.max_poll_factor) == PollPolicy(floor=2, cap=2)
    assert poll_policy(2, 30, LOCAL.max_poll_factor) == PollPolicy(floor=2, cap=30)


def test_a_running_eval_is_expected_to_end_at_the_typical_duration_of_finished_ones(tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo"))
    backend = FakeBackend()
    pace = adaptive_pace(PollPolicy(floor=10, cap=1000), lambda: desired, lambda _: None, clock=lambda: T0)
    run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)
    by_tag = {j.tag.rsplit(":", 1)[1]: j.job_id for j in backend.jobs.values() if j.tag}
    backend.set(by_tag["eval/base/capitalization/base"], "COMPLETED", exit_code=0, started_at=T0 - 300,
                ended_at=T0 - 260)  # took 40 s
    backend.set(by_tag["eval/rank4_lr5e-5/capitalization/epoch0"], "RUNNING", started_at=T0 - 10, depends_on=())
    for _ in range(12):  # the completed job is in the first pass's answer only: the watch remembers it
        wait = pace(run_pass(desired, backend, Policy(max_attempts=1), act=True, prepare=prepare_unit))
    assert wait == 30  # not the cap: the running eval should end in about 30 s


def test_before_its_first_epoch_a_fine_tune_is_due_when_its_progress_bar_says(tmp_path: Path) -> None:
    from tests.unit.test_progress import SLURM_OUT, cut_after

    desired, backend, pace, now, job_id = running_finetune(tmp_path)
    now[0] = T0 + 64
    pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit))
    waits = [pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)) for _ in range(12)]
    # No epoch yet: the only guess is halfway through epoch 0's share of the 10-minute limit (150 s in).
    assert waits[-1] == 150 - 64
    # torchtune's bar, 64 s in: 47 s left in epoch 0. The checkpoint is due then, not at the guess.
    out = job_stdout(desired.by_key()[FINETUNE].stdout, job_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(cut_after(SLURM_OUT.read_bytes(), b"30/64 [01:04<00:47,  1.38s/it]"))
    os.utime(out, (T0 + 64, T0 + 64))
    assert pace(run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)) == 47
