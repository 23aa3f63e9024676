"""`reconcile status` on a half-finished experiment: rows, elapsed, counts per stage x state, sources, unknowns."""

from __future__ import annotations

import io
import json
from pathlib import Path

from reconciler.jobs import Snapshot
from reconciler.journal import Journal
from reconciler.engine.loop import PassResult, run_pass
from reconciler.observe.evallogs import HeaderCache
from reconciler.observe.observation import observe
from reconciler.plan.planner import Policy, plan
from reconciler.records.state_file import write_state
from reconciler.report.status_render import status_record, status_rows, write_status
from tests.unit.test_summary import NOW, copy_fixture, fixture_backend, fixture_result


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_of_a_half_finished_experiment(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    result = fixture_result(desired)
    rows = {r.key: r for r in status_rows(result, now=NOW)}
    assert len(rows) == 10
    ft = rows["finetune/r1"]
    assert (ft.state, ft.job_id, ft.elapsed_seconds, ft.attempts) == ("done", "1001", 495, 1)
    assert (ft.epoch, ft.task) == ("-", None)
    running = rows["eval/r1/binary/epoch0"]
    assert (running.state, running.job_id, running.elapsed_seconds) == ("running", "2008", 65)
    assert (rows["finetune/r2"].state, rows["finetune/r2"].attempts) == ("failed", 2)
    assert rows["eval/r2/capitalization/epoch1"].state == "blocked"
    assert rows["eval/base/binary/base"].epoch == "base"
    # status agrees with the scheduler: every job it calls in flight is live there, with the same id
    scheduler = fixture_backend().jobs
    for row in rows.values():
        if row.state in ("queued", "running"):
            assert row.job_id in scheduler and scheduler[row.job_id].live

    out = io.StringIO()
    write_status(result, out, now=NOW)
    text = out.getvalue()
    assert "\x1b[" not in text  # no colour codes when not a terminal
    assert "8m 15s" in text and "1m 05s" in text
    for word in ("done", "running", "failed", "blocked", "retry budget used", "summary_fixture"):
        assert word in text
    assert "sources read: files " in text and "scheduler " in text
    assert "Plan:" in text

    record = status_record(result, now=NOW)
    assert record["counts"] == {"finetune": {"done": 1, "failed": 1},
                                "eval": {"done": 6, "running": 1, "blocked": 1}}
    assert record["unknown"] == []
    json.dumps(record)  # machine-readable as it is


def test_colour_on_a_terminal(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    out = Terminal()
    write_status(fixture_result(desired), out, now=NOW)
    assert "\x1b[" in out.getvalue()
    assert "\x1b[32mdone\x1b[0m" in out.getvalue() and "\x1b[31mfailed\x1b[0m" in out.getvalue()  # the state word


def test_unknown_is_shown_and_named(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    offline = run_pass(desired, None, Policy(max_attempts=2), act=False)
    out = io.StringIO()
    write_status(offline, out, now=NOW)
    text = out.getvalue()
    assert "scheduler unknown (offline" in text
    assert "unknown: 3 unit(s)" in text and "eval/r1/binary/epoch0" in text and "finetune/r2" in text


def test_elapsed_from_state_json_when_the_scheduler_was_not_asked(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    state = write_state(desired, fixture_result(desired), now=NOW)
    quiet = observe(desired, Journal(desired.layout.state_dir).read(), Snapshot(), HeaderCache(None))
    result = PassResult(plan=plan(desired.units, quiet, Policy(max_attempts=2)), observation=quiet)
    rows = {r.key: r for r in status_rows(result, state, now=NOW)}
    assert rows["finetune/r1"].elapsed_seconds == 495
    out = io.StringIO()
    write_status(result, out, state=state, now=NOW)
    assert "8m 15s" in out.getvalue() and "not asked (nothing in flight" in out.getvalue()


def test_status_through_run_pass_asks_the_scheduler_once(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    backend = fixture_backend()
    result = run_pass(desired, backend, Policy(max_attempts=2), act=False)
    assert backend.queries == 1
    rows = {r.key: r for r in status_rows(result)}
    assert rows["eval/r1/binary/epoch0"].state == "running"


def test_unit_table_is_one_aligned_line_per_unit(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    result = fixture_result(desired)
    out = io.StringIO()
    write_status(result, out, now=NOW)
    lines = out.getvalue().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run ") and "reason" in line)
    table = lines[header:header + 1 + len(result.plan.units)]
    rows = status_rows(result, now=NOW)
    state_at, reason_at = table[0].index("state"), table[0].index("reason")
    for line, row in zip(table[1:], rows):
        assert line.startswith(row.run + " ")
        assert line[state_at:].split()[0] == row.state
        assert line[reason_at:] == row.reason
    elapsed_end = table[0].index("elapsed") + len("elapsed")
    running = next(line for line, row in zip(table[1:], rows) if row.state == "running")
    assert running[:elapsed_end].endswith("1m 05s")  # right-aligned under its heading
