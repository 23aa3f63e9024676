""".reconciler/state.json after a pass, and the legacy experiment_summary.md "Evaluations" table updated in place."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.apply.apply import Event
from reconciler.jobs import Snapshot
from reconciler.journal import Journal
from reconciler.engine.loop import PassResult, run_pass
from reconciler.observe.evallogs import HeaderCache
from reconciler.observe.observation import observe
from reconciler.plan.planner import Policy, plan
from reconciler.records.state_file import (
    build_state,
    effective_states,
    read_state,
    update_evaluations_table,
    update_legacy_summary,
    write_state,
)
from tests.unit.test_summary import NOW, copy_fixture, fixture_result


def test_state_json_per_unit(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    state = write_state(desired, fixture_result(desired), now=NOW)
    path = desired.layout.state_dir / "state.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["format_version"] == 1 and on_disk["experiment"] == "summary_fixture"
    assert read_state(desired.layout.state_dir) == state
    assert not [p for p in desired.layout.state_dir.iterdir() if p.name.endswith(".tmp")]  # written atomically

    r1 = state.units["finetune/r1"]
    assert (r1.state, r1.job_id, r1.job_state, r1.attempts) == ("done", "1001", "COMPLETED", 1)
    assert r1.elapsed_seconds == 495 and r1.completed == r1.ended and r1.started and r1.submitted
    assert r1.stdout is not None and r1.stdout.endswith("r1/artifacts/slurm-1001.out")
    assert r1.checkpoints == [0, 1]
    r2 = state.units["finetune/r2"]
    assert (r2.state, r2.job_id, r2.attempts, r2.checkpoints) == ("failed", "1003", 2, [0])
    assert "retry budget used" in r2.reason
    running = state.units["eval/r1/binary/epoch0"]
    assert (running.state, running.job_id, running.completed, running.log) == ("running", "2008", None, None)
    assert running.elapsed_seconds == 65
    done = state.units["eval/r1/capitalization/epoch1"]
    assert (done.state, done.metric, done.value) == ("done", "accuracy", 0.8)
    assert done.log is not None and done.log.endswith(".eval") and done.completed  # from the log's mtime
    assert state.units["eval/r2/capitalization/epoch1"].state == "blocked"
    assert state.complete == {}  # not everything is done


def test_times_the_scheduler_no_longer_gives_are_kept(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    first = write_state(desired, fixture_result(desired), now=NOW)
    quiet = observe(desired, Journal(desired.layout.state_dir).read(), Snapshot(), HeaderCache(None))
    result = PassResult(plan=plan(desired.units, quiet, Policy(max_attempts=2)), observation=quiet)
    second = build_state(desired, result, first, now=NOW + 600)
    assert second.units["finetune/r1"].elapsed_seconds == 495
    assert second.units["finetune/r1"].started == first.units["finetune/r1"].started
    assert second.first_seen == first.first_seen


def test_unknown_keeps_the_last_known_state(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    first = write_state(desired, fixture_result(desired), now=NOW)
    offline = run_pass(desired, None, Policy(max_attempts=2), act=False)
    second = build_state(desired, offline, first, now=NOW + 60)
    record = second.units["eval/r1/binary/epoch0"]
    assert (record.state, record.last_known) == ("unknown", "running")


def test_a_submission_this_pass_is_recorded_as_queued(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    result = fixture_result(desired)
    events = [Event("eval/r2/capitalization/epoch1", "submitted", "job 77", "77")]
    states = effective_states(result.plan.units, events)
    assert states["eval/r2/capitalization/epoch1"] == ("queued", "77")
    assert states["finetune/r1"] == ("done", "1001")


def test_corrupt_state_json_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"format_version": 1, "experim')
    assert read_state(tmp_path) is None
    assert read_state(tmp_path / "absent") is None


LEGACY = """# capitalization sweep

## Overview
- **Runs:** 2 fine-tuned + 1 control

## Evaluations

Status written by run-inspect.

| Run Name | Task | Epoch | Status | Job ID | Completed | Notes | Owner |
|----------|------|-------|--------|--------|-----------|-------|-------|
| r1 | capitalization | 0 | RUNNING | 2001 | | | ana |
| old_run | capitalization | 0 | COMPLETED | 17 | 2025-11-01 10:00 | kept as written | bo |
| r2 | capitalization | epoch1 | PENDING | 2010 | | | ana |

## Quick Reference
- `inspect view`
"""


def test_legacy_table_is_updated_in_place(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    md = desired.layout.experiment_dir / "experiment_summary.md"
    md.write_text(LEGACY)
    md.chmod(0o640)
    state = write_state(desired, fixture_result(desired), now=NOW)
    assert update_legacy_summary(desired.layout.experiment_dir, state)
    new = md.read_text()
    old_lines, new_lines = LEGACY.splitlines(keepends=True), new.splitlines(keepends=True)
    table_start = old_lines.index("| r1 | capitalization | 0 | RUNNING | 2001 | | | ana |\n")
    # Everything outside the rows is byte-identical; unknown rows stay as written.
    assert new_lines[:table_start] == old_lines[:table_start]
    assert new.endswith("".join(old_lines[table_start + 3:]))
    assert new_lines[table_start + 1] == old_lines[table_start + 1]  # old_run
    r1 = state.units["eval/r1/capitalization/epoch0"]
    assert new_lines[table_start] == f"| r1 | capitalization | 0 | COMPLETED | 2001 | {r1.completed} | " \
                                     "accuracy 0.500 | ana |\n"
    assert new_lines[table_start + 2].startswith("| r2 | capitalization | epoch1 | BLOCKED | 2010 | - | blocked: ")
    # Units missing from the table are added after its last row, in spec order.
    added = new_lines[table_start + 3:table_start + 3 + 6]
    assert [line.split("|")[1:4] for line in added] == [
        [" r1 ", " capitalization ", " 1 "], [" r1 ", " binary ", " 0 "], [" r1 ", " binary ", " 1 "],
        [" r2 ", " capitalization ", " 0 "], [" base ", " capitalization ", " - "], [" base ", " binary ", " - "]]
    assert "| RUNNING | 2008 |" in added[1]
    assert md.stat().st_mode & 0o777 == 0o640
    # A second update with nothing new leaves the file alone.
    assert not update_legacy_summary(desired.layout.experiment_dir, state)


def test_legacy_table_keeps_crlf_and_needs_the_columns(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    state = write_state(desired, fixture_result(desired), now=NOW)
    crlf = LEGACY.replace("\n", "\r\n")
    new = update_evaluations_table(crlf, state)
    assert new is not None and "\r\n" in new and "\n" not in new.replace("\r\n", "")
    assert update_evaluations_table("# x\n\n## Evaluation Plan\n\n| Run | Task |\n|--|--|\n", state) is None
    assert update_evaluations_table("## Evaluations\n\n| Run Name | Task |\n|--|--|\n", state) is None
    assert not update_legacy_summary(tmp_path / "nowhere", state)
