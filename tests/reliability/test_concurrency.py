"""Two, then five reconcilers started at once on one experiment: one acts, no job twice.

Half of them are plain `apply --watch` (the losers exit 1 and say who holds the lock), half
`apply --watch --wait 120` (they queue on the lock, then find nothing left to do).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.harness import (
    UNIT_KEYS,
    Record,
    Tally,
    journal,
    local_jobs,
    small_experiment,
    start,
    status_states,
    unique_name,
    verdict,
    wait_for_slurm_jobs,
)

pytestmark = pytest.mark.slow


def run_at_once(tmp_path: Path, backend: str, n: int) -> Record:
    started = time.monotonic()
    since = time.time()
    name = unique_name(f"cc{n}")
    exp = small_experiment(tmp_path / "exp", name)
    interval = "0.5" if backend == "local" else "1"
    procs = []
    for i in range(n):
        wait = ["--wait", "120"] if i % 2 else []
        procs.append(start("apply", str(exp), "--watch", "--interval", interval, "--backend", backend, *wait))
    outs = [p.communicate(timeout=240) for p in procs]
    actors = [i for i, (out, _) in enumerate(outs) if "submitted " in out]
    problems = []
    if len(actors) != 1:
        problems.append(f"{len(actors)} reconcilers submitted jobs")
    for i, (proc, (out, err)) in enumerate(zip(procs, outs)):
        if "Traceback" in err:
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
    jobs = local_jobs(exp, name) if backend == "local" else wait_for_slurm_jobs(name, since, UNIT_KEYS)
    states = status_states(exp, backend)
    result = verdict(jobs, UNIT_KEYS)
    wrong = sum(1 for k in UNIT_KEYS if states.get(k) != "done")
    record = Record("concurrency", backend, f"{n} at once", n - 1, n + 1, result.units, result.duplicates,
                    result.lost, wrong, time.monotonic() - started)
    assert not problems, "\n".join(problems)
    assert sorted(submitted) == sorted(UNIT_KEYS), submitted
    assert result.duplicates == 0 and result.lost == 0, result.detail
    assert wrong == 0, states
    return record


def run_both(tmp_path: Path, backend: str, tally: Tally) -> None:
    """2 at once on one experiment and 5 at once on another, side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(run_at_once, tmp_path / f"n{n}", backend, n) for n in (2, 5)}
    failures = []
    for n, future in futures.items():
        try:
            tally.add(future.result())
        except Exception as exc:  # noqa: BLE001 - report both
            failures.append(f"{n} at once: {exc}")
    assert not failures, "\n\n".join(failures)


def test_reconcilers_at_once_local(tmp_path: Path, tally: Tally) -> None:
    run_both(tmp_path, "local", tally)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_reconcilers_at_once_slurm(tmp_path: Path, tally: Tally) -> None:
    run_both(tmp_path, "slurm", tally)
