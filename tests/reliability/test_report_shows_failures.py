"""The reliability table shows a failure as a failure: a case run with a bug planted puts a non-zero
in the column of what went wrong.

The bug is planted through a test-only switch of the runner (RELIABILITY_PLANT, tests/reliability/
runner.py), not by editing code: the local backend's query stops finding jobs by their tag. With a
crash point that loses a job id (SIGKILL after sbatch returned, before the journal has the id), the
next pass cannot find the job and submits the unit again: a duplicate, counted from the job records.
The record goes to a tally of its own, never into the suite's table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.harness import Tally
from tests.reliability.report import column, format_table
from tests.reliability.runner import PLANT_ENV
from tests.reliability.test_crashpoints import run_crash_point

pytestmark = pytest.mark.slow
FAULT_CLASS = "crash point"


def test_a_planted_duplicate_shows_in_the_duplicates_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLANT_ENV, "query-ignores-tags")
    tally = Tally()  # not the suite's: this row reports the planted bug, not the product
    with pytest.raises(AssertionError, match="duplicates"):
        # The fine-tune runs 4 s: it is still running, unjournaled, when the next pass looks for it.
        run_crash_point(tmp_path, "local", "submit-returned", tally, schedule=["submit-returned@1"],
                        seconds_per_epoch=4)
    (record,) = tally.records
    table = format_table(tally.records)
    assert record.ran == 1 and record.faults == 1
    assert column(table, "crash point", "local", "duplicates") == record.duplicates >= 1, table
    assert column(table, "crash point", "local", "failed checks") == 1, table
    assert column(table, "crash point", "local", "not run") == 0, table
    assert column(table, "crash point", "local", "tracebacks") == 0, table
