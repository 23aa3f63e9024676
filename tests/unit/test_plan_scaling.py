"""A plan's work grows linearly with the experiment (issue 9): no quadratic step hides in a pass.

Two synthetic experiments from benchmarks/synth.py (1k and 10k units, with checkpoints, copies of a
real `.eval` log and a journal), each planned offline with a warm header cache, as a new
`reconcile plan` process would (spec read, validated and expanded; files observed; planned).
What is compared is a count, not a time: the lines of Python a pass executes and the C functions
it calls, counted by trace hooks. Same input, same count, whatever the machine's load: a quadratic
loop over units executes 10x more lines per unit at 10k than at 1k; linear work as many. The time
per unit (and a quadratic step inside a single C call, which the hooks see as one step) is
measured by `benchmarks/run`, beside its floor.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.synth import Shape, generate
from reconciler.engine.gcpause import without_gc
from reconciler.engine.loop import run_pass
from reconciler.observe import evallogs
from reconciler.plan.planner import Policy
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand
from tests.conftest import EXPERIMENTS

pytestmark = pytest.mark.slow


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
def plan_once(exp: Path) -> int:
    desired = expand(load_spec(exp))
    result = run_pass(desired, None, Policy(), act=False)
    assert len(result.plan.units) == len(desired.units)
    return len(desired.units)


def steps_per_unit(exp: Path) -> float:
    """Lines of Python executed plus C functions called by one plan, per unit."""
    steps = [0]

    def line(frame: object, event: str, arg: object) -> object:
        steps[0] += 1  # every line and call of Python code, loop iterations included
        return line

    def c_call(frame: object, event: str, arg: object) -> None:
        if event == "c_call":
            steps[0] += 1

    sys.setprofile(c_call)
    sys.settrace(line)
    try:
        units = plan_once(exp)
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    return steps[0] / units


def test_plan_work_grows_linearly_from_1k_to_10k_units(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    template = real_log()
    small, big = workdir / "1k", workdir / "10k"
    generate(small, Shape.for_units(1_000), template)
    generate(big, Shape.for_units(10_000), template)
    for exp in (small, big):
        plan_once(exp)  # cold: fills the header cache
        plan_once(exp)  # and this process's copy of it, as every later pass finds it

    reads: list[Path] = []
    real_read = evallogs._read_with_retry
    monkeypatch.setattr(evallogs, "_read_with_retry", lambda path, mtime, reader: reads.append(path) or real_read(path, mtime, reader))
    per_small, per_big = steps_per_unit(small), steps_per_unit(big)
    assert reads == [], "a warm pass read .eval headers again instead of using the cache"
    # Linear: the same calls per unit (fixed costs spread thinner at 10k); quadratic: 10x as many.
    assert per_big <= 1.1 * per_small, (f"{per_big:.0f} steps per unit at 10k units against {per_small:.0f} at 1k: "
                                        "some step of a pass does more work per unit as the experiment grows")
