"""Logs in the workflows' format, checked with the workflows' own regexes, over real passes on a fake scheduler."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from reconciler.jobs import COMPLETED, DEPENDENCY_NEVER_SATISFIED, RUNNING
from reconciler.engine.loop import PassResult, run_pass
from reconciler.plan.planner import Plan, Policy
from reconciler.records.state_file import read_state
from reconciler.records.log_append import ENTRY_START, append_entries
from reconciler.records.pass_entries import pass_entries
from reconciler.records.workflow_logs import record_pass
from reconciler.spec.units import Desired
from tests.unit.planner_world import make_desired
from tests.unit.test_summary import FIXTURE, FakeBackend

# The workflows' parsers (cruijff_kit src/tools/slurm/compute_metrics.py, explore-experiment).
SUBMIT_JOB_RE = re.compile(r"SUBMIT_JOB: ([\w.-]+)\n.*?\nJob ID: (\d+)", re.DOTALL)
SUBMIT_EVAL_RE = re.compile(r"SUBMIT_EVAL: ([\w./-]+)\n.*?\nJob ID: (\d+)", re.DOTALL)
ENTRY_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] ([A-Z_]+)(?:: (.*))?$")
SUCCESS_LOG = next((FIXTURE / "r1" / "eval" / "capitalization_epoch0" / "logs").glob("*.eval"))


def text(desired: Desired, name: str) -> str:
    path = desired.layout.logs_dir / name
    return path.read_text() if path.exists() else ""


def actions(desired: Desired, name: str) -> list[str]:
    return [m.group(2) for line in text(desired, name).splitlines() if (m := ENTRY_RE.match(line))]


def step(desired: Desired, backend: FakeBackend, now: float, max_attempts: int = 3) -> PassResult:
    """One apply pass, then what the apply loop leaves behind."""
    result = run_pass(desired, backend, Policy(max_attempts=max_attempts), act=True)
    record = record_pass(desired, result, now=now)
    assert not record.warnings
    return result


def epoch_files(desired: Desired, run: str, epoch: int, final: bool) -> None:
    d = desired.layout.epoch_dir(run, epoch)
    shutil.copytree(FIXTURE / "r1" / "artifacts" / f"epoch_{1 if final else 0}", d)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Desired, FakeBackend]:
    # finetune/r0 (2 epochs), eval/r0/t/epoch0, eval/r0/t/epoch1, eval/ctl/t/base
    return make_desired(tmp_path, runs=1, epochs=2, control=True), FakeBackend()


def test_a_whole_experiment_logs_in_the_workflows_format(world: tuple[Desired, FakeBackend]) -> None:
    desired, backend = world
    t = 1795000000.0

    step(desired, backend, t)  # pass 1: everything submitted (evals afterok the fine-tune)
    assert actions(desired, "run-experiment.log") == ["DISCOVER_EXPERIMENT", "STATUS_CHECK"]
    torchtune = text(desired, "run-torchtune.log")
    assert SUBMIT_JOB_RE.findall(torchtune) == [("r0", "101")]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    assert f"[{stamp}] SUBMIT_JOB: r0\nDetails: sbatch finetune.slurm\nJob ID: 101\nResult: success\n" in torchtune
    inspect_log = text(desired, "run-inspect.log")
    assert SUBMIT_EVAL_RE.findall(inspect_log) == [("r0/t/epoch0", "102"), ("r0/t/epoch1", "103"), ("ctl/t", "104")]
    assert "Details: sbatch cell.slurm (afterok:101)\nJob ID: 102\n" in inspect_log

    before = text(desired, "run-experiment.log")
    step(desired, backend, t + 60)  # pass 2: nothing changed
    after = text(desired, "run-experiment.log")
    assert after.startswith(before)
    added = after[len(before):]
    assert added.count("\n") == 1 and re.fullmatch(r"\[[^]]+\] STATUS_CHECK: no change; 4 queued; jobs: 4 PENDING\n", added)
    assert text(desired, "run-torchtune.log") == torchtune and text(desired, "run-inspect.log") == inspect_log

    backend.set("101", RUNNING, started_at=t + 100)
    step(desired, backend, t + 120)  # pass 3: the fine-tune started
    assert "STATE_CHANGE: r0\nDetails: job 101: queued -> running\n" in text(desired, "run-torchtune.log")

    epoch_files(desired, "r0", 0, final=False)
    step(desired, backend, t + 180)  # pass 4: epoch_0 complete -> its eval is released
    assert actions(desired, "run-inspect.log")[-2:] == ["VERIFY_CHECKPOINTS", "RELEASE"]
    assert "VERIFY_CHECKPOINTS: r0\nDetails: epoch_0 complete" in text(desired, "run-inspect.log")

    epoch_files(desired, "r0", 1, final=True)
    backend.set("101", COMPLETED, exit_code=0, ended_at=t + 300)
    for job_id, unit in (("102", "r0/eval/t_epoch0"), ("103", "r0/eval/t_epoch1"), ("104", "ctl/eval/t")):
        logs = desired.layout.experiment_dir / unit / "logs"
        logs.mkdir(parents=True)
        shutil.copy2(SUCCESS_LOG, logs)
        backend.set(job_id, COMPLETED, exit_code=0, started_at=t + 310, ended_at=t + 330)
    step(desired, backend, t + 400)  # pass 5: everything done
    for name in ("run-experiment.log", "run-torchtune.log", "run-inspect.log"):
        assert actions(desired, name).count("ALL_COMPLETE") == 1, name
    assert "STATE_CHANGE: r0/t/epoch1\nDetails: job 103: queued -> done (COMPLETED)\n" \
        in text(desired, "run-inspect.log")
    assert "ALL_COMPLETE\nDetails: All 4 units of w are done\nResult: 4 COMPLETED, 0 FAILED\nDuration: 6m 40s\n" \
        in text(desired, "run-experiment.log")

    step(desired, backend, t + 460)  # pass 6: converged, nothing new: one line, no second ALL_COMPLETE
    assert actions(desired, "run-experiment.log")[-2:] == ["ALL_COMPLETE", "STATUS_CHECK"]
    for name in ("run-experiment.log", "run-torchtune.log", "run-inspect.log"):
        assert actions(desired, name).count("ALL_COMPLETE") == 1, name
        # Every entry line is well-formed: `[YYYY-MM-DD HH:MM:SS] ACTION[: description]`.
        for line in text(desired, name).splitlines():
            if line.startswith("["):
                assert ENTRY_RE.match(line), line
    # The harvest still finds each job exactly once.
    assert SUBMIT_JOB_RE.findall(text(desired, "run-torchtune.log")) == [("r0", "101")]
    state = read_state(desired.layout.state_dir)
    assert state is not None and set(state.complete) == {"experiment", "finetune", "eval"}
    # Even with state.json gone, the logs keep their one ALL_COMPLETE (the pass re-discovers instead).
    (desired.layout.state_dir / "state.json").unlink()
    step(desired, backend, t + 520)
    for name in ("run-experiment.log", "run-torchtune.log", "run-inspect.log"):
        assert actions(desired, name).count("ALL_COMPLETE") == 1, name
    assert actions(desired, "run-experiment.log").count("DISCOVER_EXPERIMENT") == 2


def test_all_complete_never_on_zero_work(tmp_path: Path) -> None:
    # A control-only experiment: no fine-tunes, so run-torchtune.log never says ALL_COMPLETE.
    desired = make_desired(tmp_path, runs=0, epochs=1, control=True)
    backend = FakeBackend()
    step(desired, backend, 1795000000.0)
    logs = desired.layout.experiment_dir / "ctl" / "eval" / "t" / "logs"
    logs.mkdir(parents=True)
    shutil.copy2(SUCCESS_LOG, logs)
    backend.set("101", COMPLETED, exit_code=0)
    step(desired, backend, 1795000100.0)
    assert actions(desired, "run-experiment.log").count("ALL_COMPLETE") == 1
    assert actions(desired, "run-inspect.log").count("ALL_COMPLETE") == 1
    assert "ALL_COMPLETE" not in text(desired, "run-torchtune.log")
    # And an experiment of zero units (expand refuses one; a pass over it must not claim success either).
    empty = Desired(loaded=desired.loaded, layout=desired.layout, units=())
    nothing = PassResult(plan=Plan(experiment="w", units=()), observation=run_pass(
        desired, None, Policy(), act=False).observation)
    assert not [e for e in pass_entries(empty, nothing, None, 1795000200.0) if e.action == "ALL_COMPLETE"]


def test_failure_retry_and_block_are_logged(tmp_path: Path) -> None:
    desired = make_desired(tmp_path, runs=1, epochs=1, control=False)
    backend = FakeBackend()
    t = 1795000000.0
    step(desired, backend, t)
    backend.set("101", "OUT_OF_MEMORY", exit_code=0, started_at=t + 10, ended_at=t + 20)
    step(desired, backend, t + 60)  # retried: RETRY then a fresh SUBMIT_JOB; the eval waits on the new job
    torchtune = text(desired, "run-torchtune.log")
    assert "RETRY: r0\nDetails: retry: job 101 OUT_OF_MEMORY" in torchtune
    assert "Result: resubmitted as job 103" in torchtune
    assert SUBMIT_JOB_RE.findall(torchtune) == [("r0", "101"), ("r0", "103")]
    assert "STATE_CHANGE: r0" not in torchtune  # the RETRY says it
    assert "DependencyNeverSatisfied" not in text(desired, "run-inspect.log")


def test_an_eval_whose_dependency_can_never_start_is_blocked(tmp_path: Path) -> None:
    desired = make_desired(tmp_path, runs=1, epochs=1, control=False)
    backend = FakeBackend()
    t = 1795000000.0
    step(desired, backend, t, max_attempts=1)
    backend.set("101", "FAILED", exit_code=1, started_at=t + 10, ended_at=t + 20)
    backend.set("102", "PENDING", reason=DEPENDENCY_NEVER_SATISFIED)
    step(desired, backend, t + 60, max_attempts=1)
    assert "STATE_CHANGE: r0\nDetails: job 101: queued -> failed (FAILED)\n" in text(desired, "run-torchtune.log")
    inspect_log = text(desired, "run-inspect.log")
    assert "CANCEL: r0/t/epoch0\nDetails: job 102: dependency_failed" in inspect_log
    assert "BLOCKED: r0/t/epoch0\nDetails: job 102: queued -> blocked\n" in inspect_log
    # Monitoring has ended, as the workflows' ALL_COMPLETE says it: with the failures counted, never as done.
    experiment = text(desired, "run-experiment.log")
    assert "ALL_COMPLETE\nDetails: All 2 units of w have ended; 2 did not complete\n" \
           "Result: 0 COMPLETED, 1 FAILED, 1 BLOCKED\n" in experiment
    assert "are done" not in experiment


def test_torn_tail_is_cut_before_appending(tmp_path: Path) -> None:
    """A crash mid-write leaves half an entry: it must not pair with a later `Job ID:` line."""
    log = tmp_path / "run-torchtune.log"
    good = "[2026-11-22 10:00:00] SUBMIT_JOB: r1\nDetails: sbatch finetune.slurm\nJob ID: 11\nResult: success\n\n"
    log.write_text(good + "[2026-11-22 10:00:05] SUBMIT_JOB: r2\nDetails: sbatch fine")
    append_entries(log, ["[2026-11-22 10:01:00] SUBMIT_JOB: r3\nDetails: sbatch finetune.slurm\nJob ID: 13\n"
                         "Result: success\n\n"])
    content = log.read_text()
    assert SUBMIT_JOB_RE.findall(content) == [("r1", "11"), ("r3", "13")]
    assert content.startswith(good) and "r2" not in content
    # Someone else's text without a final newline is ended, not cut.
    other = tmp_path / "other.log"
    other.write_text("a note by hand")
    append_entries(other, ["[2026-11-22 10:02:00] STATUS_CHECK: no change; 1 done\n"])
    assert other.read_text() == "a note by hand\n\n[2026-11-22 10:02:00] STATUS_CHECK: no change; 1 done\n"
    assert ENTRY_START.search(b"[2026-11-22 10:02:00] X")


def test_one_line_entries_stack_and_blocks_keep_a_blank_line(tmp_path: Path) -> None:
    log = tmp_path / "run-experiment.log"
    line = "[2026-11-22 10:00:00] STATUS_CHECK: no change; 1 queued\n"
    entry = "[2026-11-22 10:01:00] ALL_COMPLETE\nDetails: d\nResult: r\n\n"
    append_entries(log, [line])
    append_entries(log, [line])
    append_entries(log, [entry])
    append_entries(log, [line, entry])
    assert log.read_text() == line + line + "\n" + entry + line + "\n" + entry
