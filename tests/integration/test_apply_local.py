"""The demo end to end on the local backend: convergence, idempotence, crashes, lost journal, failures."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from reconciler.observe.evallogs import classify, read_header
from tests.integration.demo_env import (
    assert_one_success_and_no_overlap,
    copy_demo,
    jobs_by_unit,
    journal_events,
    reconcile,
    start,
    status_json,
)

pytestmark = pytest.mark.slow
DEMO_UNITS = 10
EXPERIMENT = "capitalization_demo"


def test_demo_converges_then_a_rerun_submits_nothing(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo")
    proc = reconcile("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converged" in proc.stdout
    status = status_json(exp)
    assert {u["state"] for u in status["units"]} == {"done"}
    assert len(journal_events(exp, "submitted")) == DEMO_UNITS

    # status agrees with the files: every eval's own log says success with full samples.
    accuracies = {}
    for unit in status["units"]:
        if unit["kind"] != "eval":
            continue
        cell = f"{unit['task']}_epoch{unit['epoch']}" if unit["epoch"] is not None else unit["task"]
        logs = sorted((exp / unit["run"] / "eval" / cell / "logs").glob("*.eval"))
        assert len(logs) == 1
        summary = classify(read_header(logs[0]), str(logs[0]), 0)
        assert summary.state == "complete"
        accuracies[unit["key"]] = summary.value
    assert len(set(accuracies.values())) > 3, accuracies  # runs, epochs and control differ

    again = reconcile("apply", str(exp), "--backend", "local")
    assert again.returncode == 0, again.stderr
    assert "Plan: 0 to submit" in again.stdout or "0 to submit" in again.stdout
    assert len(journal_events(exp, "submitted")) == DEMO_UNITS
    plan = reconcile("plan", str(exp), "--backend", "local", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    assert_one_success_and_no_overlap(exp, EXPERIMENT, DEMO_UNITS)


def test_sigkill_at_any_moment_never_duplicates(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo")
    for delay in (0.4, 1.2, 0.8, 2.0, 1.5):
        proc = start("apply", str(exp), "--watch", "--interval", "0.3", "--backend", "local")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = reconcile("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local")
    assert final.returncode == 0, final.stdout + final.stderr
    assert_one_success_and_no_overlap(exp, EXPERIMENT, DEMO_UNITS)


def test_deleted_journal_is_rebuilt_from_tags(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=1.5)
    first = reconcile("apply", str(exp), "--backend", "local")
    assert first.returncode == 0, first.stderr
    submitted = len(journal_events(exp, "submitted"))
    assert submitted == DEMO_UNITS
    (exp / ".reconciler" / "journal.jsonl").unlink()
    second = reconcile("apply", str(exp), "--backend", "local")
    assert second.returncode == 0, second.stderr
    assert len(journal_events(exp, "submitted")) == 0, "nothing is resubmitted while its job lives"
    assert len(journal_events(exp, "adopted")) == DEMO_UNITS
    final = reconcile("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local")
    assert final.returncode == 0, final.stdout + final.stderr
    assert_one_success_and_no_overlap(exp, EXPERIMENT, DEMO_UNITS)


def test_a_failing_run_blocks_its_evals_and_the_others_finish(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo")
    proc = reconcile("apply", str(exp / "with-failure.yaml"), "--watch", "--interval", "0.5", "--backend", "local")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    units = {u["key"]: u for u in status_json(exp / "with-failure.yaml")["units"]}
    broken = units["finetune/broken"]
    assert broken["state"] == "failed" and broken["attempts"] == 2 and "budget" in broken["reason"]
    assert units["eval/broken/capitalization/epoch1"]["state"] == "blocked"
    # epoch 0 was written before the failure, and its eval was released while the run still ran.
    assert units["eval/broken/capitalization/epoch0"]["state"] == "done"
    assert units["finetune/rank4_lr1e-4"]["state"] == "done"
    assert units["eval/rank4_lr1e-4/capitalization/epoch1"]["state"] == "done"


def test_more_attempts_for_a_failed_run_rerun_only_its_finetune_and_end(tmp_path: Path) -> None:
    """issue 16, as the user did it: the failure example, then again with a larger budget (as summary.md
    suggests). The epoch-0 eval, done, was resubmitted and the watch then waited forever on an eval job
    whose afterok could never be met."""
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=1.0)
    target = str(exp / "with-failure.yaml")
    first = reconcile("apply", target, "--watch", "--interval", "1", "--backend", "local", timeout=180)
    assert first.returncode == 3, first.stdout + first.stderr
    e0 = "eval/broken/capitalization/epoch0"
    before = jobs_by_unit(exp / "with-failure", f"{EXPERIMENT}_failing")
    assert [j.state for j in before[e0] if j.started_at is not None] == ["COMPLETED"]

    second = reconcile("apply", target, "--watch", "--interval", "1", "--backend", "local", "--max-attempts", "3",
                       timeout=180)
    assert second.returncode == 3, second.stdout + second.stderr
    assert e0 not in second.stdout, second.stdout  # done: neither resubmitted nor waited on
    after = jobs_by_unit(exp / "with-failure", f"{EXPERIMENT}_failing")
    assert after[e0] == before[e0]
    assert len(after["finetune/broken"]) == 3
    assert not [j for jobs in after.values() for j in jobs if j.live], "a converged watch leaves no job behind"
    units = {u["key"]: u for u in status_json(exp / "with-failure.yaml")["units"]}
    assert units[e0]["state"] == "done" and units["finetune/broken"]["attempts"] == 3
    assert units["eval/broken/capitalization/epoch1"]["state"] == "blocked"


def test_two_concurrent_applies_never_double_submit(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo")
    procs = [start("apply", str(exp), "--backend", "local") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 1]), outs
    if codes == [0, 1]:
        loser = next(o for p, o in zip(procs, outs) if p.returncode == 1)
        assert "another reconciler" in loser[1]
    assert len(journal_events(exp, "submitted")) == DEMO_UNITS
    final = reconcile("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local")
    assert final.returncode == 0, final.stdout + final.stderr
    assert_one_success_and_no_overlap(exp, EXPERIMENT, DEMO_UNITS)


def test_status_json_matches_plan_units(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo")
    plan = json.loads(reconcile("plan", str(exp), "--backend", "local", "--format", "json", check=True).stdout)
    status = status_json(exp)
    assert [u["key"] for u in plan["units"]] == [u["key"] for u in status["units"]]
    assert plan["format_version"] == 3 and plan["summary"]["submit"] == DEMO_UNITS


def test_a_watch_of_one_stage_summarizes_its_last_pass(tmp_path: Path) -> None:
    """summary.md of a `--stage finetune` watch: the evals it did not select are incomplete, not selected."""
    exp = copy_demo(tmp_path / "demo", runs=["rank4_lr1e-4"])
    proc = reconcile("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local", "--stage", "finetune")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (exp / "summary.md").read_text()
    assert "| rank4_lr1e-4 | Fine-tuned | COMPLETED | 0/2 done, 2 missing |" in text
    incomplete = text.split("## Incomplete Runs", 1)[1].split("\n## ", 1)[0]
    for epoch in (0, 1):
        assert f"| rank4_lr1e-4 | Evaluation: capitalization epoch {epoch} | NOT_SUBMITTED | not selected: would " \
               "submit: missing: nothing submitted yet |" in incomplete, incomplete
    assert len(journal_events(exp, "submitted")) == 1
