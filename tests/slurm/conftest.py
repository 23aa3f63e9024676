"""Fixtures for the SLURM backend tests: the real cluster (or a skip) and logging wrappers of its commands.

The backend against fake commands (no cluster) is tested in tests/unit/test_slurm_commands.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.backends.slurm.backend import SlurmBackend, slurm_available
from tests.fake_slurm import FAST_RETRY, write_executable

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")

T = TypeVar("T")


def require_slurm() -> None:
    """Skip when no cluster answers; fail instead when RECONCILER_REQUIRE_SLURM=1 (CI)."""
    if slurm_available():
        return
    reason = "no reachable SLURM controller (start one with `sudo scripts/slurm-up`)"
    if os.environ.get("RECONCILER_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason}, and RECONCILER_REQUIRE_SLURM=1 requires one")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    require_slurm()


@pytest.fixture
def backend() -> SlurmBackend:
    return SlurmBackend(FAST_RETRY)


@pytest.fixture
def tag_prefix() -> str:
    """A prefix no other test (or earlier run) uses, so queries see only this test's jobs."""
    return f"test-{uuid.uuid4().hex[:10]}/"


@dataclass
class CommandLog:
    """Command lines logged by the wrapper scripts, one per run."""

    path: Path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def count(self, command: str) -> int:
        return sum(1 for line in self.lines() if line.split(" ", 1)[0] == command)

    def clear(self) -> None:
        self.path.write_text("")


@pytest.fixture
def logging_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CommandLog:
    """Wrappers first on PATH that log each SLURM command line, then exec the real binary."""
    bin_dir = tmp_path / "logging-bin"
    bin_dir.mkdir()
    log = CommandLog(tmp_path / "commands.log")
    for name in SLURM_COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        write_executable(bin_dir / name, f'#!/bin/bash\necho "{name} $*" >> "{log.path}"\nexec "{real}" "$@"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def job_script(directory: Path, name: str, body: str) -> Path:
    """A batch script running `body` under bash."""
    return write_executable(directory / name, f"#!/bin/bash\nset -e\n{body}\n")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.5) -> T:
    """Call `probe` until it returns something other than None (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


@pytest.fixture
def cleanup_jobs(backend: SlurmBackend) -> Iterator[list[str]]:
    """Ids appended here are cancelled after the test, whatever happened."""
    ids: list[str] = []
    yield ids
    if ids:
        # Best effort: the test's own result matters more than a failed clean-up.
        with contextlib.suppress(Exception):
            backend.cancel(ids)
