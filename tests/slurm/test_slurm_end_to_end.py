"""The demo end to end on the real single-node SLURM cluster (scripts/slurm-up): issue 4's checks.

Each test runs the real `reconcile apply --backend slurm --watch` in its own process (through
cluster_cli, which lets the test cluster be polled every second), on a private copy of the demo
under a fresh experiment name, so its tags (`--comment`) meet no other test's jobs on the shared
cluster. Jobs are counted on the cluster itself (sacct, scontrol and squeue, by tag); SLURM
commands are counted through logging wrappers first on PATH (the `logging_path` fixture).

Two tests stop a daemon (slurmctld, slurmdbd) and always start it again, whatever happens.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from reconciler.jobs import CANCELLED, COMPLETED, FAILED, RUNNING, Job
from tests.integration.demo_env import (
    SYSTEM_BIN,
    assert_one_success_and_no_overlap,
    copy_demo,
    jobs_by_unit,
    journal_events,
    reconcile,
    slurm_jobs_with_prefix,
    start,
    status_json,
)

from .conftest import SCRIPTS, CommandLog, wait_until, write_executable

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

CLI = "tests.slurm.cluster_cli"  # `reconcile`, allowed to poll the test cluster every second
DEMO_UNITS = 10
RUN = "rank4_lr5e-5"
FINETUNE = f"finetune/{RUN}"
# copy_demo(runs=[RUN]): the fine-tune and its evals of epochs 0 and 1.
ONE_RUN_UNITS = 3
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="stopping a SLURM daemon needs root (scripts/slurm-down)")


# ------------------------------------------------------------------ helpers


def unique(what: str) -> str:
    return f"e2e_{what}_{uuid.uuid4().hex[:8]}"


def prefix(experiment: str) -> str:
    return f"reconciler:{experiment}:"


def watch(target: Path, timeout: float = 240, extra_env: dict[str, str] | None = None) -> \
        subprocess.CompletedProcess[str]:
    return reconcile("apply", str(target), "--backend", "slurm", "--watch", "--interval", "1",
                     runner=CLI, timeout=timeout, extra_env=extra_env)


def shown(proc: subprocess.CompletedProcess[str] | Watcher) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


def passes(stdout: str) -> int:
    match = re.search(r"converged after (\d+) pass", stdout)
    assert match, stdout
    return int(match.group(1))


def live_jobs(experiment: str, exact: bool = True) -> list[Job]:
    """Live jobs of the experiment (exact=False: of every experiment whose name starts so)."""
    return [job for job in slurm_jobs_with_prefix(prefix(experiment) if exact else f"reconciler:{experiment}")
            if job.live]


def units_by_key(target: Path) -> dict[str, dict]:
    return {u["key"]: u for u in status_json(target, backend="slurm")["units"]}


def real(name: str) -> str:
    found = shutil.which(name, path=SYSTEM_BIN)
    if found is None:
        pytest.skip(f"no installed {name}")
    return found


class Watcher:
    """`reconcile apply --watch` in the background; its output lines are collected as they come."""

    def __init__(self, target: Path, extra_env: dict[str, str] | None = None) -> None:
        self.proc = start("apply", str(target), "--backend", "slurm", "--watch", "--interval", "1",
                          runner=CLI, extra_env=extra_env)
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
                        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)  # one by one: tests look at the output while the watch runs

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.out))

    def finish(self, timeout: float = 240) -> Watcher:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the watch did not end within {timeout:g}s\n{shown(self)}") from None
        for thread in self.threads:
            thread.join(timeout=10)
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


class Experiments:
    """Fresh experiment names and background watches, cleaned up after the test."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.watchers: list[Watcher] = []

    def new(self, what: str) -> str:
        self.names.append(unique(what))
        return self.names[-1]

    def background(self, target: Path, extra_env: dict[str, str] | None = None) -> Watcher:
        self.watchers.append(Watcher(target, extra_env))
        return self.watchers[-1]

    def clean_up(self) -> None:
        """Stop the watches, then cancel any job of these experiments still live."""
        for watcher in self.watchers:
            watcher.kill()
        for name in self.names:
            with suppress(Exception):
                ids = [job.job_id for job in live_jobs(name, exact=False)]  # with-failure.yaml's too
                if ids:
                    subprocess.run([real("scancel"), *ids], check=False, capture_output=True, timeout=60)


@pytest.fixture
def experiments() -> Iterator[Experiments]:
    made = Experiments()
    yield made
    made.clean_up()


@contextmanager
def daemon_stopped(name: str) -> Iterator[None]:
    """`scripts/slurm-down --only NAME`, and `scripts/slurm-up` afterwards whatever happened."""
    try:
        subprocess.run([str(SCRIPTS / "slurm-down"), "--only", name], check=True, capture_output=True, timeout=120)
        yield
    finally:
        up = subprocess.run([str(SCRIPTS / "slurm-up")], check=False, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, f"scripts/slurm-up failed after stopping {name}:\n{up.stderr[-2000:]}"


def all_submitted(exp: Path, units: int) -> Callable[[], bool | None]:
    return lambda: True if len(journal_events(exp, "submitted")) >= units else None


def one_job_each(jobs: dict[str, list[Job]], units: int) -> None:
    """No duplicate: each unit got exactly one job, and it completed with exit 0."""
    assert len(jobs) == units, sorted(jobs)
    for unit, unit_jobs in jobs.items():
        assert [(j.state, j.exit_code) for j in unit_jobs] == [(COMPLETED, 0)], (unit, unit_jobs)


# ------------------------------------------------------------------ 1. the demo converges


def test_demo_converges_one_job_per_unit_and_one_squeue_per_pass(
    tmp_path: Path, logging_path: CommandLog, experiments: Experiments
) -> None:
    name = experiments.new("demo")
    exp = copy_demo(tmp_path / "demo", experiment=name)
    proc = watch(exp)
    assert proc.returncode == 0, shown(proc)
    calls = [line.split(" ", 1)[0] for line in logging_path.lines()]  # before any check adds its own
    n = passes(proc.stdout)

    # One submission per unit, nothing resubmitted.
    assert calls.count("sbatch") == DEMO_UNITS, calls
    # Every pass asks squeue once, first; only the last may skip it (nothing in flight, all done).
    assert calls[0] == "squeue", calls
    assert n - 1 <= calls.count("squeue") <= n, (n, calls)
    # ... and accounting at most once, for all the jobs squeue no longer lists.
    per_pass: list[list[str]] = []
    for call in calls:
        if call == "squeue":
            per_pass.append([])
        per_pass[-1].append(call)
    assert all(p.count("sacct") <= 1 for p in per_pass), per_pass
    assert any(p.count("sacct") == 1 for p in per_pass)  # finished jobs were looked up in accounting

    units = units_by_key(exp)
    assert len(units) == DEMO_UNITS
    assert {u["state"] for u in units.values()} == {"done"}, units
    jobs = jobs_by_unit(exp, name, backend="slurm")
    one_job_each(jobs, DEMO_UNITS)
    assert_one_success_and_no_overlap(exp, name, DEMO_UNITS, backend="slurm")
    assert len(journal_events(exp, "submitted")) == DEMO_UNITS
    assert not live_jobs(name)

    # Converged means converged: a second run submits nothing and asks the scheduler nothing.
    logging_path.clear()
    again = watch(exp)
    assert again.returncode == 0, shown(again)
    assert [line.split(" ", 1)[0] for line in logging_path.lines()] == [], logging_path.lines()


# ------------------------------------------------------------------ 2. scancel mid-watch


def test_scancel_of_a_running_finetune_is_retried_and_converges(
    tmp_path: Path, experiments: Experiments
) -> None:
    name = experiments.new("scancel")
    # Slow epochs: the job is cancelled while its first epoch runs, before any checkpoint exists.
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=3, experiment=name, runs=[RUN])
    watcher = experiments.background(exp)
    tag = prefix(name) + FINETUNE

    def running() -> Job | None:
        return next((j for j in live_jobs(name) if j.tag == tag and j.state == RUNNING), None)

    first = wait_until("the fine-tune to run", running, timeout=120, every=0.2)
    subprocess.run([real("scancel"), first.job_id], check=True, capture_output=True, timeout=60)

    watcher.finish()
    assert watcher.returncode == 0, shown(watcher)
    assert re.search(rf"resubmitted {re.escape(FINETUNE)}: job \d+ .*CANCELLED", watcher.stdout), watcher.stdout
    jobs = jobs_by_unit(exp, name, backend="slurm")
    assert jobs[FINETUNE][0].job_id == first.job_id
    assert [j.state for j in jobs[FINETUNE]] == [CANCELLED, COMPLETED], jobs[FINETUNE]
    assert_one_success_and_no_overlap(exp, name, ONE_RUN_UNITS, backend="slurm")
    units = units_by_key(exp)
    assert {u["state"] for u in units.values()} == {"done"}, units
    assert units[FINETUNE]["attempts"] == 2  # within the budget of 3
    assert not live_jobs(name)


# ------------------------------------------------------------------ 3. a run that always fails


def test_a_failing_finetune_blocks_its_later_eval_and_leaves_nothing_pending(
    tmp_path: Path, experiments: Experiments
) -> None:
    name = experiments.new("failing")
    exp = copy_demo(tmp_path / "demo", experiment=name)
    target = exp / "with-failure.yaml"
    experiment = f"{name}_failing"  # with-failure.yaml's name (the fixture cleans up by prefix)
    proc = watch(target)
    assert proc.returncode == 3, shown(proc)  # converged with failed or blocked units
    # Nothing pending forever: the evals waiting on the failed run were cancelled, not left
    # PENDING with DependencyNeverSatisfied.
    assert not live_jobs(experiment), live_jobs(experiment)
    units = units_by_key(target)
    broken = units["finetune/broken"]
    assert broken["state"] == "failed" and broken["attempts"] == 2, broken
    assert "budget" in broken["reason"]
    assert units["eval/broken/capitalization/epoch1"]["state"] == "blocked", units
    # Epoch 0 was complete before the failure: its eval still ran.
    assert units["eval/broken/capitalization/epoch0"]["state"] == "done", units
    assert units["finetune/rank4_lr1e-4"]["state"] == "done"
    assert units["eval/rank4_lr1e-4/capitalization/epoch1"]["state"] == "done"

    jobs = jobs_by_unit(exp, experiment, backend="slurm")
    assert [j.state for j in jobs["finetune/broken"]] == [FAILED, FAILED], jobs["finetune/broken"]
    for unit in ("finetune/rank4_lr1e-4", "eval/rank4_lr1e-4/capitalization/epoch1"):
        assert [j.state for j in jobs[unit]] == [COMPLETED], jobs[unit]
    # The blocked eval never ran: its jobs (if any) were cancelled while pending, and left no log.
    assert all(j.state == CANCELLED for j in jobs.get("eval/broken/capitalization/epoch1", [])), jobs
    cell = exp / "with-failure" / "broken" / "eval" / "capitalization_epoch1"
    assert cell.is_dir() and not list(cell.glob("logs/*.eval"))


# ------------------------------------------------------------------ 4. killed right after sbatch


def test_killed_right_after_sbatch_then_rerun_adopts_the_job(
    tmp_path: Path, logging_path: CommandLog, experiments: Experiments
) -> None:
    name = experiments.new("sigkill")
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=3, experiment=name, runs=[RUN])
    marker = tmp_path / "first-sbatch.out"
    # The first sbatch reaches the controller, then the reconciler is SIGKILLed before it reads
    # the job id: the journal holds the intent and no job id.
    write_executable(
        logging_path.path.parent / "logging-bin" / "sbatch",
        f'#!/bin/bash\necho "sbatch $*" >> "{logging_path.path}"\n'
        f'out=$("{real("sbatch")}" "$@"); rc=$?\n'
        f'if (( rc == 0 )) && [[ ! -e "{marker}" ]]; then\n'
        f'  printf "%s\\n" "$out" > "{marker}"; kill -KILL "$PPID"; exit 1\nfi\n'
        'printf "%s\\n" "$out"; exit $rc\n',
    )
    killed = watch(exp, timeout=120)
    assert killed.returncode == -9, shown(killed)
    job_id = marker.read_text().strip().split(";")[0]
    assert job_id.isdigit(), job_id
    intents = journal_events(exp, "intent")
    assert [e["unit"] for e in intents] == [FINETUNE]
    assert journal_events(exp, "submitted") == []

    proc = watch(exp)
    assert proc.returncode == 0, shown(proc)
    assert f"adopted {FINETUNE}: job {job_id}" in proc.stdout, proc.stdout
    assert [(e["unit"], e["job_id"]) for e in journal_events(exp, "adopted")] == [(FINETUNE, job_id)]
    assert logging_path.count("sbatch") == ONE_RUN_UNITS  # the killed one included: no resubmission
    jobs = jobs_by_unit(exp, name, backend="slurm")
    one_job_each(jobs, ONE_RUN_UNITS)
    assert jobs[FINETUNE][0].job_id == job_id
    assert {u["state"] for u in units_by_key(exp).values()} == {"done"}


# ------------------------------------------------------------------ 5. controller outage


@root_only
def test_slurmctld_outage_mid_watch_gives_unknown_passes_then_converges(
    tmp_path: Path, logging_path: CommandLog, experiments: Experiments
) -> None:
    name = experiments.new("ctld")
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=2, experiment=name, runs=[RUN, "base"])
    units = ONE_RUN_UNITS + 1
    # A pass during the outage gives up after one squeue try (about 9 s: the client's own
    # connect retries) instead of the product's minute of retries.
    watcher = experiments.background(exp, extra_env={"E2E_RETRY_SECONDS": "3"})
    wait_until("every unit submitted", all_submitted(exp, units), timeout=120, every=0.2)
    tag = prefix(name) + FINETUNE
    # The outage starts while the fine-tune runs, and lasts two passes: the job ends (and its
    # evals' dependency is met) while nobody can ask the controller.
    wait_until("the fine-tune to run", lambda: any(j.tag == tag and j.state == RUNNING for j in live_jobs(name)) or None,
               timeout=120, every=0.2)
    with daemon_stopped("slurmctld"):
        stopped_at = len(watcher.out)
        wait_until("two passes reporting the scheduler unknown",
                   lambda: sum("scheduler unknown" in line for line in watcher.out[stopped_at:]) >= 2 or None,
                   timeout=90, every=0.2)
    watcher.finish()
    assert watcher.returncode == 0, shown(watcher)
    assert "unavailable" in "".join(line for line in watcher.out if "scheduler unknown" in line)
    assert any(re.search(r"pass \d+ .*\d+ unknown", line) for line in watcher.out[stopped_at:]), watcher.stdout
    # After the outage: nothing resubmitted, nothing lost, and convergence.
    assert not any(word in line for line in watcher.out[stopped_at:] for word in ("submitted ", "resubmitted "))
    assert logging_path.count("sbatch") == units
    jobs = jobs_by_unit(exp, name, backend="slurm")
    one_job_each(jobs, units)
    assert {u["state"] for u in units_by_key(exp).values()} == {"done"}
    assert not live_jobs(name)


# ------------------------------------------------------------------ 6. accounting outage


@root_only
def test_slurmdbd_down_the_scontrol_fallback_keeps_it_correct(
    tmp_path: Path, logging_path: CommandLog, experiments: Experiments
) -> None:
    name = experiments.new("dbd")
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=1, experiment=name, runs=[RUN, "base"])
    units = ONE_RUN_UNITS + 1
    watcher = experiments.background(exp)
    wait_until("every unit submitted", all_submitted(exp, units), timeout=120, every=0.2)
    with daemon_stopped("slurmdbd"):
        mark = len(logging_path.lines())
        watcher.finish()  # converges while accounting is down
        assert watcher.returncode == 0, shown(watcher)
        during = [line.split()[:2] for line in logging_path.lines()[mark:]]
        assert ["sacct", "--noheader"] in during  # accounting was asked and could not answer...
        assert ["scontrol", "show"] in during  # ...so the controller was
        states = {u["key"]: u["state"] for u in status_json(exp, backend="slurm")["units"]}
        jobs = jobs_by_unit(exp, name, backend="slurm")  # from the controller's memory
    assert set(states.values()) == {"done"}, states
    assert logging_path.count("sbatch") == units
    one_job_each(jobs, units)
    assert not live_jobs(name)
