"""Evals grouped per checkpoint on the real stack (local backend): real `tune run`, real inspect-ai, tiny model.

One run x 2 epochs x 3 tasks: each checkpoint's three evals run in one job that loads the model once;
each task still writes its own log, and status and summary.md stay per unit. A task that fails in a
shared job is re-run alone; the tasks that succeeded beside it are never re-run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from inspect_ai.log import read_eval_log

from reconciler.spec.units import units_of_tag
from tests.integration.demo_env import jobs_by_unit, journal_events, reconcile
from tests.real_stack import copy_real_demo, requires_stack

pytestmark = [pytest.mark.slow, requires_stack]
RUN = "rank4_lr1e-3"
TASKS = ("cap_a", "cap_b", "cap_c")
TASK_FILE = Path(__file__).parent / "grouped_tasks.py"
LOADED = "reconciler-group: model loaded once"


def grouped_experiment(dst: Path, model: Path, name: str, epochs: int) -> Path:
    """The demo cut to one run, `epochs` epochs and three tasks (tests/integration/grouped_tasks.py)."""
    exp = copy_real_demo(dst, model, experiment=name)
    shutil.copy2(TASK_FILE, exp / "grouped_tasks.py")
    spec = yaml.safe_load((exp / "experiment_summary.yaml").read_text())
    spec["controls"]["epochs"] = epochs
    spec["runs"] = [r for r in spec["runs"] if r["name"] == RUN]
    spec["evaluation"]["tasks"] = [{"name": t, "script": "grouped_tasks.py", "dataset": "same"} for t in TASKS]
    spec["evaluation"]["matrix"] = [{"run": RUN, "vis_label": "lr 1e-3", "tasks": list(TASKS),
                                     "epochs": list(range(epochs))}]
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return exp


def jobs_by_tag(exp: Path, name: str) -> dict[str, list]:
    return jobs_by_unit(exp, name)  # keyed by what follows the experiment's tag prefix


def eval_logs(exp: Path, task: str, epoch: int) -> list[Path]:
    return sorted((exp / RUN / "eval" / f"{task}_epoch{epoch}" / "logs").glob("*.eval"))


def test_each_checkpoint_is_loaded_once_for_its_three_tasks_and_each_task_keeps_its_own_log(
        tmp_path: Path, tiny_model: Path) -> None:
    name = "grouped_real_two_epochs"
    exp = grouped_experiment(tmp_path / "exp", tiny_model, name, epochs=2)
    proc = reconcile("apply", str(exp), "--backend", "local", "--watch", "--interval", "1", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converged" in proc.stdout

    jobs = jobs_by_tag(exp, name)
    groups = {f"eval/{RUN}/cap_a+cap_b+cap_c/epoch{n}" for n in (0, 1)}
    assert set(jobs) == {f"finetune/{RUN}", *groups}, sorted(jobs)  # 3 jobs for 7 units
    for epoch in (0, 1):
        (job,) = jobs[f"eval/{RUN}/cap_a+cap_b+cap_c/epoch{epoch}"]
        assert job.state == "COMPLETED" and not job.exit_code, job
        stdout = (exp / RUN / "eval" / f"slurm-checkpoint_epoch{epoch}-{job.job_id}.out").read_text(errors="replace")
        assert stdout.count(LOADED) == 1, stdout
        assert [line.split()[2] for line in stdout.splitlines() if line.startswith("reconciler-group: start ")] == \
            [f"eval/{RUN}/{t}/epoch{epoch}" for t in TASKS]
        for task in TASKS:
            # each cell's usual stdout name leads to the shared job's output
            cell_stdout = exp / RUN / "eval" / f"{task}_epoch{epoch}" / f"slurm-{job.job_id}.out"
            assert cell_stdout.read_text(errors="replace") == stdout
            (path,) = eval_logs(exp, task, epoch)
            log = read_eval_log(str(path), header_only=True)
            assert log.status == "success" and log.results is not None
            assert log.results.completed_samples == 16
            assert log.eval.metadata is not None and log.eval.metadata["reconciler_unit"] == f"eval/{RUN}/{task}/epoch{epoch}"
            assert log.eval.metadata["epoch"] == epoch and log.eval.task == task

    submitted = journal_events(exp, "submitted")
    assert len(submitted) == 7 and len({r["job_id"] for r in submitted}) == 3  # one job journaled per unit
    finetune_job = jobs[f"finetune/{RUN}"][0].job_id
    assert all(r["after"] == [finetune_job] for r in submitted if r["unit"].startswith("eval/"))  # afterok, as alone

    status = json.loads(reconcile("status", str(exp), "--json", "--backend", "local", check=True).stdout)
    rows = [u for u in status["units"] if u["kind"] == "eval"]
    assert len(rows) == 6 and all(u["state"] == "done" for u in rows), rows
    summary = json.loads(reconcile("summarize", str(exp), "--format", "json", "--backend", "local",
                                   check=True).stdout)
    assert sorted((r["task"], r["epoch"]) for r in summary["evaluations"]) == \
        sorted((t, n) for t in TASKS for n in (0, 1))
    assert "7/7 units done" in (exp / "summary.md").read_text()

    again = reconcile("apply", str(exp), "--backend", "local")
    assert again.returncode == 0, again.stderr
    assert "0 to submit, 0 to resubmit" in again.stdout
    assert len(journal_events(exp, "submitted")) == 7


def test_a_task_that_fails_in_a_shared_job_is_rerun_alone_and_the_others_never(tmp_path: Path,
                                                                               tiny_model: Path) -> None:
    name = "grouped_real_partial"
    exp = grouped_experiment(tmp_path / "exp", tiny_model, name, epochs=1)
    (exp / "data" / "fail_cap_c_once").write_text("")  # cap_c raises in the shared job, then passes
    proc = reconcile("apply", str(exp), "--backend", "local", "--watch", "--interval", "1", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (exp / "data" / "fail_cap_c_once").exists()

    jobs = jobs_by_tag(exp, name)
    shared = jobs[f"eval/{RUN}/cap_a+cap_b+cap_c/epoch0"]
    assert len(shared) == 1 and shared[0].state == "FAILED", shared  # the driver exits 1: one task failed
    stdout = (exp / RUN / "eval" / f"slurm-checkpoint_epoch0-{shared[0].job_id}.out").read_text(errors="replace")
    assert stdout.count(LOADED) == 1
    assert f"end eval/{RUN}/cap_c/epoch0 error" in stdout  # the driver said which task failed, and went on
    assert f"1 of 3 tasks did not succeed: eval/{RUN}/cap_c/epoch0" in stdout
    # only cap_c again, alone, in a job of its own
    retried = jobs[f"eval/{RUN}/cap_c/epoch0"]
    assert len(retried) == 1 and retried[0].state == "COMPLETED", retried
    assert set(jobs) == {f"finetune/{RUN}", f"eval/{RUN}/cap_a+cap_b+cap_c/epoch0", f"eval/{RUN}/cap_c/epoch0"}
    for task in TASKS:
        assert len(eval_logs(exp, task, 0)) == 1, task  # cap_a and cap_b: the shared job's log, never re-run
    units = {key for tag in jobs for key in units_of_tag(tag)}
    assert units == {f"finetune/{RUN}", *(f"eval/{RUN}/{t}/epoch0" for t in TASKS)}
    resubmitted = journal_events(exp, "submitted")
    assert [r["unit"] for r in resubmitted].count(f"eval/{RUN}/cap_c/epoch0") == 2
    assert "4/4 units done" in (exp / "summary.md").read_text()
