"""Crash-point enumeration: SIGKILL the reconciler at each named step of a pass, then converge.

For each point (reconciler/apply/crashpoints.py) an experiment of its own (all five side by side)
sees passes killed at that point, pass j at the point's j-th occurrence (so kills land on the fine-tune and then on an
eval), until a pass gets through. Every kill leaves a readable journal and state. A fresh
`apply --watch` must then converge with exactly one successful job per unit and no other job
(counted from the scheduler's accounting or the local job records, with each unit's output on disk).
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.apply.crashpoints import ENV, POINTS
from reconciler.journal import Journal
from reconciler.records.state_file import read_state
from tests.reliability.harness import (
    Case,
    Record,
    Tally,
    command_env,
    small_experiment,
    unique_name,
)

FAULT_CLASS = "crash point"
pytestmark = pytest.mark.slow

# Reached once per pass (state) or once per log file (logs): kill a few passes in a row there too.
SCHEDULES = {point: [f"{point}@{j}" for j in range(1, 5)] for point in POINTS}
SCHEDULES["state-write"] = ["state-write@1"] * 3
SCHEDULES["log-write"] = ["log-write@1", "log-write@1", "log-write@2", "log-write@3"]


def check_readable(exp: Path) -> None:
    """After a kill: the journal folds, state.json (if any) parses, no log holds a cut entry's job id."""
    state_dir = exp / ".reconciler"
    Journal(state_dir).read()  # never raises on a cut line
    lines = (state_dir / "journal.jsonl").read_text().splitlines() if (state_dir / "journal.jsonl").exists() else []
    for line in lines[:-1]:
        json.loads(line)  # only the last line may be cut
    if (state_dir / "state.json").exists():
        assert read_state(state_dir) is not None, "state.json must be the old or the new file, never half"


def age_temp_files(directory: Path) -> None:
    """Make temporary files a kill left look old: the next write sweeps stale ones (fsutil)."""
    old = time.time() - 3600
    for tmp in directory.glob(".*.tmp"):
        os.utime(tmp, (old, old))


def check_logs(exp: Path) -> None:
    """Every SUBMIT block in the workflow logs has its `Job ID:` line (a cut entry was repaired)."""
    for log in (exp / "logs").glob("*.log"):
        blocks = log.read_text().split("\n\n")
        for block in blocks:
            if "] SUBMIT_JOB:" in block or "] SUBMIT_EVAL:" in block:
                assert "\nJob ID: " in block and "\nResult: success" in block, (log.name, block)


def run_crash_point(tmp_path: Path, backend: str, point: str, tally: Tally,
                    schedule: list[str] | None = None, seconds_per_epoch: float = 0.2) -> Record:
    """Kill passes at `point`, then converge; the case's record says what came of it, pass or fail."""
    with Case(tally, FAULT_CLASS, backend, point) as case:
        since = time.time()
        name = unique_name(f"cp_{point.replace('-', '_')}")
        exp = small_experiment(tmp_path / "exp", name, slurm=backend == "slurm", seconds_per_epoch=seconds_per_epoch)
        case.expect(exp, name, backend, since=since)
        for crash_at in schedule or SCHEDULES[point]:
            proc = case.reconcile("apply", str(exp), "--backend", backend, env=command_env({ENV: crash_at}))
            if proc.returncode != -signal.SIGKILL:
                assert proc.returncode in (0, 1), proc.stdout + proc.stderr
                break
            case.fault()
            check_readable(exp)
            age_temp_files(exp / ".reconciler")
        if not case.record.faults:
            case.not_reached(f"{point} was never reached")
        case.converge(exp, backend)
        case.measure()
        check_readable(exp)
        check_logs(exp)
        assert read_state(exp / ".reconciler") is not None
        assert not list((exp / ".reconciler").glob(".*.tmp")), "a killed write's temporary file was left behind"
        case.check()
    return case.record


def run_all_points(tmp_path: Path, backend: str, tally: Tally) -> None:
    """Every point on its own experiment, all at once (each waits mostly on its jobs)."""
    with ThreadPoolExecutor(max_workers=len(POINTS)) as pool:
        futures = {point: pool.submit(run_crash_point, tmp_path / point, backend, point, tally) for point in POINTS}
    failures = []
    for point, future in futures.items():
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - report every point, not just the first
            failures.append(f"{point}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_crash_points_local(tmp_path: Path, tally: Tally) -> None:
    run_all_points(tmp_path, "local", tally)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_crash_points_slurm(tmp_path: Path, tally: Tally) -> None:
    run_all_points(tmp_path, "slurm", tally)
