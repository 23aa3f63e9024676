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
    Case,
    Tally,
    command_env,
    journal,
    real_command,
    slurm_jobs,
    small_experiment,
    unique_name,
    verdict,
    wait_for_slurm_jobs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
FAULT_CLASS = "scheduler fault"

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


def finish(case: Case, exp: Path, faults: Faults) -> None:
    """Converge with no faults, then count jobs per unit (the cluster's accounting) and check."""
    faults.clear()
    case.converge(exp, "slurm", env=fault_env(faults))
    case.check()


def test_query_faults_never_resubmit_live_jobs(tmp_path: Path, faults: Faults, tally: Tally, since: float) -> None:
    """Every job held PENDING (live); each query fault in turn; not one new submission."""
    with Case(tally, FAULT_CLASS, "slurm", "query faults (10 kinds), jobs live") as case:
        name = unique_name("sf_query")
        exp = small_experiment(tmp_path / "exp", name, slurm=True)
        env = fault_env(faults)
        case.expect(exp, name, "slurm", since=since, env=env)
        faults.always("sbatch", mode="hold")
        first = case.reconcile("apply", str(exp), "--backend", "slurm", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert len(journal(exp, "submitted")) == 3
        faults.clear("sbatch")
        problems = []
        try:
            for kind, plan, transient in QUERY_FAULTS:
                faults.clear()
                for command, fault in plan.items():
                    faults.always(command, **fault)
                before, mark = submissions(exp), faults.mark()
                proc = case.reconcile("apply", str(exp), "--backend", "slurm", env=env)
                states = case.status(exp, "slurm", env=env)
                case.fault(faults.faults_injected(mark))
                if proc.returncode not in (0, 1):
                    problems.append(f"{kind}: exit {proc.returncode}: {proc.stderr[-500:]}")
                if submissions(exp) != before:
                    problems.append(f"{kind}: submitted while every job was alive: {proc.stdout}")
                    case.record.duplicates += submissions(exp) - before
                bad = {k: st for k, st in states.items() if st not in TRUE_WHILE_HELD}
                case.wrong(len(bad), f"{kind}: {bad}")
                if transient:
                    if "unknown" not in proc.stdout:
                        problems.append(f"{kind}: not reported unknown: {proc.stdout}")
                    wrongly_known = {k: st for k, st in states.items() if st not in ("unknown", "waiting")}
                    case.wrong(len(wrongly_known), f"{kind}: should be unknown: {wrongly_known}")
                if "squeue" in plan and plan["squeue"]["mode"] in ("timeout", ERROR):
                    tries = len(faults.since(mark, "squeue"))
                    if tries != 2 * RETRY_ATTEMPTS:  # apply and status, each retried RETRY_ATTEMPTS times
                        problems.append(f"{kind}: squeue ran {tries} times, expected {2 * RETRY_ATTEMPTS}")
        finally:
            faults.clear()
            release_holds(name, since)
        assert not problems, "\n".join(problems)
        finish(case, exp, faults)


def test_sbatch_faults_after_the_job_exists_adopt_it(tmp_path: Path, faults: Faults, tally: Tally,
                                                     since: float) -> None:
    """sbatch acts and then fails, or fails before acting, or answers garbage: one job per unit."""
    with Case(tally, FAULT_CLASS, "slurm", "sbatch fails after or before acting") as case:
        name = unique_name("sf_sbatch")
        exp = small_experiment(tmp_path / "exp", name, slurm=True, seconds_per_epoch=2)
        env = fault_env(faults)
        case.expect(exp, name, "slurm", since=since, env=env)
        faults.plan("sbatch",
                    {"mode": "after-error", "text": SBATCH_TIMEOUT, "rc": 1},  # finetune: submitted, then "failed"
                    {"mode": ERROR, "text": SBATCH_NO_CONTROLLER, "rc": 1},  # eval epoch0: failed before acting
                    {"mode": "pass"},  # its retry
                    {"mode": "after-garbage"})  # base eval: submitted, answer unreadable
        proc = case.reconcile("apply", str(exp), "--backend", "slurm", env=env)
        case.fault(faults.faults_injected())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert case.record.faults == 3
        assert len(faults.since(0, "sbatch")) == 4, faults.calls()
        assert len(journal(exp, "submitted")) == 3
        finish(case, exp, faults)


def test_sbatch_down_then_timeout_with_squeue_down(tmp_path: Path, faults: Faults, tally: Tally,
                                                   since: float) -> None:
    """A pass where sbatch never answers, then one where sbatch submits and hangs while squeue fails.

    The second leaves a live job the journal does not know; the next pass must find it by tag.
    """
    with Case(tally, FAULT_CLASS, "slurm", "sbatch down; sbatch hangs after acting + squeue down") as case:
        name = unique_name("sf_down")
        exp = small_experiment(tmp_path / "exp", name, slurm=True, seconds_per_epoch=4)
        env = fault_env(faults)
        case.expect(exp, name, "slurm", since=since, env=env)
        faults.always("sbatch", mode=ERROR, text=SBATCH_NO_CONTROLLER, rc=1)
        down = case.reconcile("apply", str(exp), "--backend", "slurm", env=env)
        assert down.returncode == 1, down.stdout + down.stderr
        assert "scheduler unavailable" in down.stdout + down.stderr
        assert len(faults.since(0, "sbatch")) == RETRY_ATTEMPTS
        assert len(journal(exp, "submitted")) == 0 and len(journal(exp, "intent")) == 1

        mark = faults.mark()
        faults.plan("sbatch", {"mode": "after-timeout"})
        faults.plan("squeue", {"mode": "pass"}, *[{"mode": ERROR, "text": SOCKET_TIMEOUT, "rc": 1}] * RETRY_ATTEMPTS)
        hung = case.reconcile("apply", str(exp), "--backend", "slurm", env=env)
        assert hung.returncode == 1, hung.stdout + hung.stderr
        assert len(journal(exp, "submitted")) == 0, "the job id never came back"
        live = [j for j in slurm_jobs(name, since).get(UNIT_KEYS[0], []) if j.live]
        assert len(live) == 1, "sbatch did submit the fine-tune before hanging"
        case.fault(faults.faults_injected())
        faults.clear()
        found = case.reconcile("apply", str(exp), "--backend", "slurm", env=env)
        assert found.returncode == 0, found.stdout + found.stderr
        assert [r["job_id"] for r in journal(exp, "adopted")] == [live[0].job_id], found.stdout
        assert len(faults.since(mark, "sbatch")) == 1 + 2, "fine-tune once (hung); then the two evals"
        finish(case, exp, faults)


def test_release_fails_and_scancel_fails(tmp_path: Path, faults: Faults, tally: Tally, since: float) -> None:
    """scontrol update (release) keeps timing out: evals still run once, after the fine-tune.

    Then `reconcile cancel` against a failing scancel: retried, reported, nothing marked cancelled.
    """
    with Case(tally, FAULT_CLASS, "slurm", "release and scancel fail") as case:
        name = unique_name("sf_release")
        exp = small_experiment(tmp_path / "exp", name, slurm=True, seconds_per_epoch=3, epochs=2)
        keys = (UNIT_KEYS[0], f"eval/{UNIT_KEYS[0].split('/')[1]}/capitalization/epoch0",
                f"eval/{UNIT_KEYS[0].split('/')[1]}/capitalization/epoch1", UNIT_KEYS[2])
        env = fault_env(faults)
        case.expect(exp, name, "slurm", keys, since=since, env=env)
        faults.always("scontrol", mode=ERROR, text=SOCKET_TIMEOUT, rc=1)
        watch = case.reconcile("apply", str(exp), "--watch", "--interval", "1", "--backend", "slurm", env=env)
        case.fault(faults.faults_injected())
        assert watch.returncode == 0, watch.stdout + watch.stderr
        assert case.record.faults >= RETRY_ATTEMPTS, "a release was tried and failed"
        assert not journal(exp, "released")
        faults.clear()
        case.measure()  # the first experiment: one job per unit, every unit done

        # Cancel with scancel failing: exit 1 with the reason, nothing journaled as cancelled, job still live.
        exp2 = small_experiment(tmp_path / "exp2", name + "c", slurm=True)
        faults.always("sbatch", mode="hold")
        assert case.reconcile("apply", str(exp2), "--backend", "slurm", env=env).returncode == 0
        faults.clear()
        faults.always("scancel", mode=ERROR, text=SCANCEL_TIMEOUT, rc=1)
        mark = faults.mark()
        cancel = case.reconcile("cancel", str(exp2), "--backend", "slurm", env=env)
        case.fault(faults.faults_injected(mark))
        try:
            assert cancel.returncode == 1, cancel.stdout + cancel.stderr
            assert "Socket timed out" in cancel.stderr
            assert len(faults.since(mark, "scancel")) == RETRY_ATTEMPTS
            assert not journal(exp2, "cancelled")
            assert all(j.live for v in slurm_jobs(name + "c", since).values() for j in v)
        finally:
            faults.clear()
            again = case.reconcile("cancel", str(exp2), "--backend", "slurm", env=env)
        assert again.returncode == 0 and "3 job(s) cancelled" in again.stdout, again.stdout + again.stderr
        cancelled = wait_for_slurm_jobs(name + "c", since, UNIT_KEYS)
        second = verdict(cancelled, UNIT_KEYS, strict=False)  # cancelled on purpose: no success expected
        case.record.units += second.units
        case.record.duplicates += second.duplicates
        assert all(j.state == "CANCELLED" for v in cancelled.values() for j in v), cancelled
        case.check()
