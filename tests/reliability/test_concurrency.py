"""Two, then five reconcilers started at once on one experiment: one acts, no job twice.

Half of them are plain `apply --watch` (the losers exit 1 and say who holds the lock), half
`apply --watch --wait 120` (they queue on the lock, then find nothing left to do). Jobs are counted
from the scheduler's accounting or the local job records, not from what the reconcilers say.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.harness import (
    UNIT_KEYS,
    Case,
    Record,
    Tally,
    has_traceback,
    journal,
    small_experiment,
    start,
    unique_name,
)

pytestmark = pytest.mark.slow
FAULT_CLASS = "concurrency"


def run_at_once(tmp_path: Path, backend: str, n: int, tally: Tally) -> Record:
    with Case(tally, FAULT_CLASS, backend, f"{n} at once") as case:
        since = time.time()
        name = unique_name(f"cc{n}")
        exp = small_experiment(tmp_path / "exp", name)
        case.expect(exp, name, backend, since=since)
        interval = "0.5" if backend == "local" else "1"
        procs = []
        for i in range(n):
            wait = ["--wait", "120"] if i % 2 else []
            procs.append(start("apply", str(exp), "--watch", "--interval", interval, "--backend", backend, *wait))
        case.fault(n - 1)  # every start beyond the first meets a held lock
        outs = [p.communicate(timeout=240) for p in procs]
        case.record.runs += n
        actors = [i for i, (out, _) in enumerate(outs) if "submitted " in out]
        problems = []
        if len(actors) != 1:
            problems.append(f"{len(actors)} reconcilers submitted jobs")
        for i, (proc, (out, err)) in enumerate(zip(procs, outs)):
            if has_traceback(out, err):
                case.record.tracebacks += 1
                problems.append(f"#{i}: traceback: {err}")
            if i in actors:
                continue
            waited = i % 2 == 1
            if proc.returncode == 1 and not waited:
                if "another reconciler" not in err:
                    problems.append(f"#{i}: exit 1 without saying who holds the lock: {err}")
            elif proc.returncode != 0:
                problems.append(f"#{i}: exit {proc.returncode}: {out[-500:]} {err[-500:]}")
        winner = procs[actors[0]] if actors else None
        if winner is not None and winner.returncode != 0:
            problems.append(f"the acting reconciler exited {winner.returncode}")
        submitted = [r["unit"] for r in journal(exp, "submitted")]
        case.measure()
        assert not problems, "\n".join(problems)
        assert sorted(submitted) == sorted(UNIT_KEYS), submitted
        case.check()
    return case.record


def run_both(tmp_path: Path, backend: str, tally: Tally) -> None:
    """2 at once on one experiment and 5 at once on another, side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(run_at_once, tmp_path / f"n{n}", backend, n, tally) for n in (2, 5)}
    failures = []
    for n, future in futures.items():
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - report both
            failures.append(f"{n} at once: {exc}")
    assert not failures, "\n\n".join(failures)


def test_reconcilers_at_once_local(tmp_path: Path, tally: Tally) -> None:
    run_both(tmp_path, "local", tally)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_reconcilers_at_once_slurm(tmp_path: Path, tally: Tally) -> None:
    run_both(tmp_path, "slurm", tally)
