"""Fixtures of the reliability suite, and the table printed at the end of the session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from reconciler.backends.slurm.backend import slurm_available
from tests.reliability.harness import Tally
from tests.reliability.report import format_table

_TALLY = Tally()


@pytest.fixture
def tally() -> Tally:
    return _TALLY


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip when no cluster answers; fail instead when RECONCILER_REQUIRE_SLURM=1 (CI)."""
    for _ in range(3):  # another suite may be restarting the controller right now
        if slurm_available():
            return
        time.sleep(2)
    reason = "no reachable SLURM controller (start one with `sudo scripts/slurm-up`)"
    if os.environ.get("RECONCILER_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason}, and RECONCILER_REQUIRE_SLURM=1 requires one")
    pytest.skip(reason)


@pytest.fixture
def since() -> Iterator[float]:
    yield time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TALLY.records and not os.environ.get("RELIABILITY_QUIET"):  # report.py prints it itself
        terminalreporter.section("reliability")
        terminalreporter.write(format_table(_TALLY.records) + "\n")
