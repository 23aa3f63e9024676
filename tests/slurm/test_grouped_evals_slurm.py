"""Evals grouped per checkpoint on the real single-node SLURM cluster: one sbatch, one model load, three logs."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from reconciler.spec.units import units_of_tag
from tests.integration.demo_env import SYSTEM_BIN, reconcile, slurm_jobs_with_prefix
from tests.integration.test_grouped_evals_real import LOADED, RUN, TASKS, eval_logs, grouped_experiment
from tests.real_stack import requires_stack

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster"), requires_stack]
CLI = "tests.slurm.cluster_cli"


def test_a_checkpoints_three_evals_are_one_slurm_job_whose_comment_names_them_all(tmp_path: Path,
                                                                                 tiny_model: Path) -> None:
    name = f"grouped_{uuid.uuid4().hex[:8]}"
    exp = grouped_experiment(tmp_path / "exp", tiny_model, name, epochs=1)
    config = tmp_path / "reconciler.yaml"
    config.write_text(f"venv: {sys.prefix}\n")  # the job activates it: inspect-ai, never the reconciler's PATH
    proc = reconcile("apply", str(exp), "--backend", "slurm", "--watch", "--interval", "1", runner=CLI,
                     timeout=1200, extra_env={"PATH": SYSTEM_BIN, "RECONCILER_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stdout + proc.stderr

    prefix = f"reconciler:{name}:"
    jobs = slurm_jobs_with_prefix(prefix)
    tags = sorted(job.tag[len(prefix):] for job in jobs if job.tag)
    assert tags == [f"eval/{RUN}/cap_a+cap_b+cap_c/epoch0", f"finetune/{RUN}"], tags  # two sbatch calls, 4 units
    assert all(job.state == "COMPLETED" for job in jobs), jobs
    (shared,) = [job for job in jobs if job.tag and "+" in job.tag]
    assert units_of_tag(shared.tag[len(prefix):]) == tuple(f"eval/{RUN}/{t}/epoch0" for t in TASKS)
    stdout = (exp / RUN / "eval" / f"slurm-checkpoint_epoch0-{shared.job_id}.out").read_text(errors="replace")
    assert stdout.count(LOADED) == 1, stdout
    for task in TASKS:
        assert len(eval_logs(exp, task, 0)) == 1, task
    assert "4/4 units done" in (exp / "summary.md").read_text()
