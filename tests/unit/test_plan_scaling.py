"""Plan time grows about linearly with the experiment (issue 9): no quadratic step hides in a pass.

Two synthetic experiments from benchmarks/synth.py (1k and 10k units, with checkpoints, copies of a
real `.eval` log and a journal), each planned offline with a warm header cache, as a new
`reconcile plan` process would (spec read, validated and expanded; files observed; planned).
The minimum over repetitions, interleaved, keeps load from other processes out of the ratio.
A quadratic step would make 10k units cost 100x 1k units; linear is 10x; the bound is 20x.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.synth import Shape, generate
from reconciler.gcpause import without_gc
from reconciler.loop import run_pass
from reconciler.observe import evallogs
from reconciler.plan import Policy
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand
from tests.conftest import EXPERIMENTS

pytestmark = pytest.mark.slow

REPS = 5


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """RAM-backed when /dev/shm is there: ~60,000 files are written, and deleting them from a disk
    mounted with `discard` takes a minute (pytest would do it in a later session)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="reconciler-scaling-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def real_log() -> Path:
    """A log written by a real `inspect eval` run (fixtures), status success."""
    for path in sorted((EXPERIMENTS / "summary_fixture").rglob("*.eval")):
        if evallogs.classify(evallogs.read_header(path), str(path), 0).state == "complete":
            return path
    raise AssertionError("no complete .eval log under fixtures/experiments/summary_fixture")


@without_gc
def plan_once(exp: Path) -> float:
    started = time.perf_counter()
    desired = expand(load_spec(exp))
    result = run_pass(desired, None, Policy(), act=False)
    elapsed = time.perf_counter() - started
    assert len(result.plan.units) == len(desired.units)
    return elapsed


def test_plan_time_grows_linearly_from_1k_to_10k_units(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    template = real_log()
    small, big = workdir / "1k", workdir / "10k"
    generate(small, Shape.for_units(1_000), template)
    generate(big, Shape.for_units(10_000), template)
    plan_once(small), plan_once(big)  # cold: fills each header cache

    reads: list[Path] = []
    real_read = evallogs._read_with_retry
    monkeypatch.setattr(evallogs, "_read_with_retry", lambda path, mtime: reads.append(path) or real_read(path, mtime))
    times_small, times_big = [], []
    for _ in range(REPS):
        times_small.append(plan_once(small))
        times_big.append(plan_once(big))
    assert reads == [], "a warm pass read .eval headers again instead of using the cache"

    ratio = min(times_big) / min(times_small)
    assert ratio < 20, (f"10k units took {ratio:.1f}x the time of 1k units (linear: ~10x): "
                        f"1k {min(times_small) * 1000:.0f} ms, 10k {min(times_big) * 1000:.0f} ms")
