"""Scheduler faults through `reconcile apply`, end to end on the real cluster.

Wrappers placed before the real sbatch/squeue/sacct/scontrol/scancel on PATH (faultbin.py)
time out, fail with SLURM's own error texts, print garbage, answer slowly or in part. The
promise checked here: a transient fault is retried and then reported unknown; no fault leads
to a second job for a unit whose job is alive; after the faults clear, the experiment
converges with exactly one successful job per unit.

The reconciler runs through runner.py: the real CLI with a retry policy of 3 tries and a 1.5 s
command timeout instead of the product's 5 tries and 60 s.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.faultbin import (
    DBD_DOWN,
    NO_CONTROLLER,
    SBATCH_NO_CONTROLLER,
    SBATCH_TIMEOUT,
    SCANCEL_TIMEOUT,
    SOCKET_TIMEOUT,
    Faults,
)
from tests.reliability.harness import (
    RETRY_ATTEMPTS,
    UNIT_KEYS,
    Record,
    Tally,
    command_env,
    converge,
    journal,
    real_command,
    reconcile,
    slurm_jobs,
    small_experiment,
    status_states,
    unique_name,
    verdict,
    wait_for_slurm_jobs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

# While every job is held PENDING, a unit may be reported as one of these; anything else is wrong.
TRUE_WHILE_HELD = {"queued", "waiting", "unknown"}

ERROR = "error"
# (case, command, fault, transient: the scheduler cannot be asked, so units must read unknown)
QUERY_FAULTS: list[tuple[str, dict[str, dict[str, Any]], bool]] = [
    ("squeue hangs past the timeout", {"squeue": {"mode": "timeout"}}, True),
    ("squeue: socket timed out", {"squeue": {"mode": ERROR, "text": SOCKET_TIMEOUT, "rc": 1}}, True),
    ("squeue: no controller", {"squeue": {"mode": ERROR, "text": NO_CONTROLLER, "rc": 1}}, True),
    ("squeue slow (under the timeout)", {"squeue": {"mode": "slow", "seconds": 0.8}}, False),
    ("squeue garbage, exit 0", {"squeue": {"mode": "garbage"}}, False),
    ("squeue cut short, exit 0", {"squeue": {"mode": "partial", "fraction": 0.5}}, False),
    ("squeue empty + sacct: dbd down", {"squeue": {"mode": "partial", "fraction": 0.0},
                                        "sacct": {"mode": ERROR, "text": DBD_DOWN, "rc": 1}}, False),
    ("squeue empty + sacct garbage", {"squeue": {"mode": "partial", "fraction": 0.0},
                                      "sacct": {"mode": "garbage"}}, False),
    ("squeue empty + sacct hangs", {"squeue": {"mode": "partial", "fraction": 0.0},
                                    "sacct": {"mode": "timeout"}}, False),
    ("squeue garbage + scontrol: socket timed out", {"squeue": {"mode": "garbage"},
                                                     "sacct": {"mode": ERROR, "text": DBD_DOWN, "rc": 1},
                                                     "scontrol": {"mode": ERROR, "text": SOCKET_TIMEOUT, "rc": 1}},
     True),
]


@pytest.fixture
def faults(tmp_path: Path) -> Faults:
    return Faults(tmp_path)


def fault_env(faults: Faults) -> dict[str, str]:
    return command_env(path_first=faults.bin)


def submissions(exp: Path) -> int:
    return len(journal(exp, "intent")) + len(journal(exp, "submitted"))


def release_holds(experiment: str, since: float) -> None:
    ids = [j.job_id for jobs in slurm_jobs(experiment, since).values() for j in jobs if j.live]
    if ids:
        subprocess.run([real_command("scontrol"), "release", ",".join(ids)], check=False, capture_output=True,
                       timeout=30)


def finish(exp: Path, name: str, since: float, faults: Faults, tally: Tally, case: str, fault_count: int,
           runs: int, wrong: int, started: float) -> None:
    """Converge with no faults, then count jobs per unit and record the case."""
    faults.clear()
    env = fault_env(faults)
    converge(exp, "slurm", env=env)
    states = status_states(exp, "slurm", env=env)
    jobs = wait_for_slurm_jobs(name, since, UNIT_KEYS)
    result = verdict(jobs, UNIT_KEYS)
    wrong += sum(1 for key in UNIT_KEYS if states.get(key) != "done")
    tally.add(Record("scheduler fault", "slurm", case, fault_count, runs + 2, result.units, result.duplicates,
                     result.lost, wrong, time.monotonic() - started))
    assert result.duplicates == 0 and result.lost == 0, result.detail
    assert wrong == 0, states


def test_query_faults_never_resubmit_live_jobs(tmp_path: Path, faults: Faults, tally: Tally, since: float) -> None:
    """Every job held PENDING (live); each query fault in turn; not one new submission."""
    started = time.monotonic()
    name = unique_name("sf_query")
    exp = small_experiment(tmp_path / "exp", name, slurm=True)
    env = fault_env(faults)
    faults.always("sbatch", mode="hold")
    first = reconcile("apply", str(exp), "--backend", "slurm", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(journal(exp, "submitted")) == 3
    faults.clear("sbatch")
    runs, wrong, injected = 1, 0, 0
    problems = []
    try:
        for case, plan, transient in QUERY_FAULTS:
            faults.clear()
            for command, fault in plan.items():
                faults.always(command, **fault)
            before, mark = submissions(exp), faults.mark()
            proc = reconcile("apply", str(exp), "--backend", "slurm", env=env)
            states = status_states(exp, "slurm", env=env)
            runs += 2
            injected += faults.faults_injected(mark)
            if "Traceback" in proc.stderr or proc.returncode not in (0, 1):
                problems.append(f"{case}: exit {proc.returncode}: {proc.stderr[-500:]}")
            if submissions(exp) != before:
                problems.append(f"{case}: submitted while every job was alive: {proc.stdout}")
            bad = {k: s for k, s in states.items() if s not in TRUE_WHILE_HELD}
            wrong += len(bad)
            if bad:
                problems.append(f"{case}: wrong states {bad}")
            if transient:
                if "unknown" not in proc.stdout:
                    problems.append(f"{case}: not reported unknown: {proc.stdout}")
                if set(states.values()) - {"unknown", "waiting"}:
                    problems.append(f"{case}: states should be unknown: {states}")
            if "squeue" in plan and plan["squeue"]["mode"] in ("timeout", ERROR):
                tries = len(faults.since(mark, "squeue"))
                if tries != 2 * RETRY_ATTEMPTS:  # apply and status, each retried RETRY_ATTEMPTS times
                    problems.append(f"{case}: squeue ran {tries} times, expected {2 * RETRY_ATTEMPTS}")
        faults.clear()
        release_holds(name, since)
    finally:
        faults.clear()
        release_holds(name, since)
    assert not problems, "\n".join(problems)
    finish(exp, name, since, faults, tally, "query faults (10 kinds), jobs live", injected, runs, wrong, started)


def test_sbatch_faults_after_the_job_exists_adopt_it(tmp_path: Path, faults: Faults, tally: Tally,
                                                     since: float) -> None:
    """sbatch acts and then fails, or fails before acting, or answers garbage: one job per unit."""
    started = time.monotonic()
    name = unique_name("sf_sbatch")
    exp = small_experiment(tmp_path / "exp", name, slurm=True, seconds_per_epoch=2)
    env = fault_env(faults)
    faults.plan("sbatch",
                {"mode": "after-error", "text": SBATCH_TIMEOUT, "rc": 1},  # finetune: submitted, then "failed"
                {"mode": ERROR, "text": SBATCH_NO_CONTROLLER, "rc": 1},  # eval epoch0: failed before acting
                {"mode": "pass"},  # its retry
                {"mode": "after-garbage"})  # base eval: submitted, answer unreadable
    proc = reconcile("apply", str(exp), "--backend", "slurm", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    injected = faults.faults_injected()
    assert injected == 3
    assert len(faults.since(0, "sbatch")) == 4, faults.calls()
    assert len(journal(exp, "submitted")) == 3
    finish(exp, name, since, faults, tally, "sbatch fails after or before acting", injected, 1, 0, started)


def test_sbatch_down_then_timeout_with_squeue_down(tmp_path: Path, faults: Faults, tally: Tally,
                                                   since: float) -> None:
    """A pass where sbatch never answers, then one where sbatch submits and hangs while squeue fails.

    The second leaves a live job the journal does not know; the next pass must find it by tag.
    """
    started = time.monotonic()
    name = unique_name("sf_down")
    exp = small_experiment(tmp_path / "exp", name, slurm=True, seconds_per_epoch=4)
    env = fault_env(faults)
    faults.always("sbatch", mode=ERROR, text=SBATCH_NO_CONTROLLER, rc=1)
    down = reconcile("apply", str(exp), "--backend", "slurm", env=env)
    assert down.returncode == 1 and "Traceback" not in down.stderr, down.stdout + down.stderr
    assert "scheduler unavailable" in down.stdout + down.stderr
    assert len(faults.since(0, "sbatch")) == RETRY_ATTEMPTS
    assert len(journal(exp, "submitted")) == 0 and len(journal(exp, "intent")) == 1

    mark = faults.mark()
    faults.plan("sbatch", {"mode": "after-timeout"})
    faults.plan("squeue", {"mode": "pass"}, *[{"mode": ERROR, "text": SOCKET_TIMEOUT, "rc": 1}] * RETRY_ATTEMPTS)
    hung = reconcile("apply", str(exp), "--backend", "slurm", env=env)
    assert hung.returncode == 1 and "Traceback" not in hung.stderr, hung.stdout + hung.stderr
    assert len(journal(exp, "submitted")) == 0, "the job id never came back"
    live = [j for j in slurm_jobs(name, since).get(UNIT_KEYS[0], []) if j.live]
    assert len(live) == 1, "sbatch did submit the fine-tune before hanging"
    injected = faults.faults_injected()
    faults.clear()
    found = reconcile("apply", str(exp), "--backend", "slurm", env=env)
    assert found.returncode == 0, found.stdout + found.stderr
    assert [r["job_id"] for r in journal(exp, "adopted")] == [live[0].job_id], found.stdout
    assert len(faults.since(mark, "sbatch")) == 1 + 2, "fine-tune once (hung); then the two evals"
    finish(exp, name, since, faults, tally, "sbatch down; sbatch hangs after acting + squeue down", injected, 3, 0,
           started)


def test_release_fails_and_scancel_fails(tmp_path: Path, faults: Faults, tally: Tally, since: float) -> None:
    """scontrol update (release) keeps timing out: evals still run once, after the fine-tune.

    Then `reconcile cancel` against a failing scancel: retried, reported, nothing marked cancelled.
    """
    started = time.monotonic()
    name = unique_name("sf_release")
    exp = small_experiment(tmp_path / "exp", name, slurm=True, seconds_per_epoch=3, epochs=2)
    keys = (UNIT_KEYS[0], f"eval/{UNIT_KEYS[0].split('/')[1]}/capitalization/epoch0",
            f"eval/{UNIT_KEYS[0].split('/')[1]}/capitalization/epoch1", UNIT_KEYS[2])
    env = fault_env(faults)
    faults.always("scontrol", mode=ERROR, text=SOCKET_TIMEOUT, rc=1)
    watch = reconcile("apply", str(exp), "--watch", "--interval", "1", "--backend", "slurm", env=env)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    injected = faults.faults_injected()
    assert injected >= RETRY_ATTEMPTS, "a release was tried and failed"
    assert not journal(exp, "released")
    jobs = wait_for_slurm_jobs(name, since, keys)
    result = verdict(jobs, keys)
    runs = 1

    # Cancel with scancel failing: exit 1 with the reason, nothing journaled as cancelled, job still live.
    faults.clear()
    exp2 = small_experiment(tmp_path / "exp2", name + "c", slurm=True)
    faults.always("sbatch", mode="hold")
    assert reconcile("apply", str(exp2), "--backend", "slurm", env=env).returncode == 0
    faults.clear()
    faults.always("scancel", mode=ERROR, text=SCANCEL_TIMEOUT, rc=1)
    mark = faults.mark()
    cancel = reconcile("cancel", str(exp2), "--backend", "slurm", env=env)
    injected += faults.faults_injected(mark)
    runs += 3
    try:
        assert cancel.returncode == 1 and "Traceback" not in cancel.stderr, cancel.stdout + cancel.stderr
        assert "Socket timed out" in cancel.stderr
        assert len(faults.since(mark, "scancel")) == RETRY_ATTEMPTS
        assert not journal(exp2, "cancelled")
        assert all(j.live for v in slurm_jobs(name + "c", since).values() for j in v)
    finally:
        faults.clear()
        again = reconcile("cancel", str(exp2), "--backend", "slurm", env=env)
    assert again.returncode == 0 and "3 job(s) cancelled" in again.stdout, again.stdout + again.stderr
    cancelled = wait_for_slurm_jobs(name + "c", since, UNIT_KEYS)
    dup2 = sum(max(0, len(v) - 1) for v in cancelled.values())
    tally.add(Record("scheduler fault", "slurm", "release and scancel fail", injected, runs,
                     result.units + 3, result.duplicates + dup2, result.lost, 0, time.monotonic() - started))
    assert result.duplicates == 0 and result.lost == 0, result.detail
    assert dup2 == 0 and all(j.state == "CANCELLED" for v in cancelled.values() for j in v), cancelled
