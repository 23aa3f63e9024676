"""The README's demo on the real stack, local backend: real `tune run` fine-tunes and real `inspect eval` evals.

2 fine-tuned runs x 2 epochs + a control, one task, of a tiny random-weight Llama-3.2 model on the CPU.
What a researcher would notice: it converges, each fine-tune trains once, an epoch's eval starts while
the next epoch trains, summary.md's numbers are the programs' own, and a second apply does nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from inspect_ai.log import read_eval_log

from tests.integration.demo_env import jobs_by_unit, journal_events, reconcile
from tests.real_stack import copy_real_demo, requires_stack

pytestmark = [pytest.mark.slow, requires_stack]
RUNS = ("rank4_lr1e-3", "rank4_lr3e-3")
EXPERIMENT = "capitalization_demo"
LOSS = re.compile(r"(\d+)\|(\d+)\|Loss: ([0-9.eE+-]+)")


def test_the_real_demo_converges_training_each_run_once_and_reports_the_programs_numbers(
        tmp_path: Path, tiny_model: Path) -> None:
    exp = copy_real_demo(tmp_path / "demo", tiny_model)
    # Four slots on two cores: the two fine-tunes leave room for an epoch-0 eval to start beside them.
    proc = reconcile("apply", str(exp), "--backend", "local", "--watch", "--interval", "1", timeout=900,
                     extra_env={"RECONCILER_LOCAL_SLOTS": "4"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converged" in proc.stdout

    jobs = jobs_by_unit(exp, EXPERIMENT)
    assert len(jobs) == 7, sorted(jobs)
    for unit, unit_jobs in jobs.items():
        assert len(unit_jobs) == 1, (unit, unit_jobs)  # every unit, fine-tunes included, submitted once
        assert unit_jobs[0].state == "COMPLETED" and not unit_jobs[0].exit_code, unit_jobs
    for run in RUNS:
        finetune = jobs[f"finetune/{run}"][0]
        epoch0 = jobs[f"eval/{run}/capitalization/epoch0"][0]
        assert epoch0.started_at is not None and finetune.ended_at is not None
        assert epoch0.started_at < finetune.ended_at, f"{run}: the epoch-0 eval waited for the whole fine-tune"
        # torchtune 0.6.1's layout: the recipe state beside the epochs, never inside them
        artifacts = exp / run / "artifacts"
        assert (artifacts / "recipe_state" / "recipe_state.pt").is_file()
        assert not list(artifacts.glob("epoch_*/recipe_state.pt"))

    summary = json.loads(reconcile("summarize", str(exp), "--format", "json", "--backend", "local",
                                   check=True).stdout)
    for row in summary["training"]:
        job_id = jobs["finetune/" + row["run"]][0].job_id
        stdout = exp / row["run"] / "artifacts" / f"slurm-{job_id}.out"
        epoch, step, loss = LOSS.findall(stdout.read_text(errors="replace"))[-1]
        assert (row["final_loss"], row["total_steps"]) == (float(loss), int(step)), row
    evaluations = summary["evaluations"]
    assert len(evaluations) == 5
    for row in evaluations:
        log = read_eval_log(row["log"], header_only=True)
        assert log.status == "success" and log.results is not None
        assert row["value"] == log.results.scores[0].metrics["accuracy"].value, row
        assert row["samples"] == log.results.completed_samples == 16
        assert log.eval.model == "hf/local"
    md = (exp / "summary.md").read_text()
    assert "7/7 units done" in md

    submitted = len(journal_events(exp, "submitted"))
    again = reconcile("apply", str(exp), "--backend", "local")
    assert again.returncode == 0, again.stderr
    assert "0 to submit, 0 to resubmit" in again.stdout
    assert len(journal_events(exp, "submitted")) == submitted == 7
