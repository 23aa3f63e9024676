"""Fixtures of the reliability suite, and the table printed at the end of the session."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest

from reconciler.backends.slurm.backend import slurm_available
from tests.reliability.harness import Record, Tally
from tests.reliability.report import format_table

_TALLY = Tally()


@pytest.fixture(scope="session")
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


def pytest_configure(config: pytest.Config) -> None:
    _TALLY.path = os.environ.get("RELIABILITY_RESULTS")  # report.py collects the records there


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A case skipped before it began (no SLURM cluster, no root for a tmpfs) is a row that did not run."""
    if report.when != "setup" or not report.skipped or "tests/reliability/" not in report.nodeid:
        return
    module = sys.modules.get(_module_name(report.nodeid))
    fault_class = getattr(module, "FAULT_CLASS", "unclassified")
    backend = "slurm" if "slurm" in report.keywords else getattr(module, "BACKEND", "local")
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _TALLY.add(Record(fault_class, backend, report.nodeid.split("::", 1)[1], ran=0, detail=f"skipped: {reason}"))


def _module_name(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].removesuffix(".py").replace("/", ".")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TALLY.records and not os.environ.get("RELIABILITY_QUIET"):  # report.py prints it itself
        terminalreporter.section("reliability")
        terminalreporter.write(format_table(_TALLY.records) + "\n")
