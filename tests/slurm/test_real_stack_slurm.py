"""The README's demo on the real single-node SLURM cluster: scaffolded scripts run real `tune run` and `inspect eval`.

The jobs find their Python environment the way a cruijff_kit user's would: the user config names a
virtualenv (the project's own .venv here), and every rendered script activates it. The reconciler
runs with a PATH that holds neither `tune` nor `inspect`, so a job that forgot to activate fails.
"""

from __future__ import annotations

import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration.demo_env import SYSTEM_BIN, reconcile, slurm_jobs_with_prefix
from tests.real_stack import copy_real_demo, requires_stack

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster"), requires_stack]
CLI = "tests.slurm.cluster_cli"


def test_the_real_demo_converges_on_slurm_with_one_sbatch_per_unit(tmp_path: Path, tiny_model: Path) -> None:
    name = f"e2e_real_{uuid.uuid4().hex[:8]}"
    exp = copy_real_demo(tmp_path / "demo", tiny_model, experiment=name)
    config = tmp_path / "reconciler.yaml"
    config.write_text(f"venv: {sys.prefix}\n")
    env = {"PATH": SYSTEM_BIN, "RECONCILER_CONFIG": str(config)}
    proc = reconcile("apply", str(exp), "--backend", "slurm", "--watch", "--interval", "1", runner=CLI,
                     timeout=1500, extra_env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    by_unit: dict[str, list] = defaultdict(list)
    for job in slurm_jobs_with_prefix(f"reconciler:{name}:"):
        assert job.tag is not None
        by_unit[job.tag.split(":", 2)[2]].append(job)
    assert len(by_unit) == 7, sorted(by_unit)
    for unit, jobs in by_unit.items():
        assert len(jobs) == 1, (unit, jobs)  # one sbatch per unit
        assert jobs[0].state == "COMPLETED", (unit, jobs)

    activate = f"source {sys.prefix}/bin/activate"
    finetune = (exp / "rank4_lr1e-3" / "finetune.slurm").read_text()
    assert activate in finetune and "tune run lora_finetune_single_device" in finetune
    cell = (exp / "rank4_lr1e-3" / "eval" / "capitalization_epoch0" / "cell.slurm").read_text()
    assert activate in cell and "inspect eval" in cell and "--model hf/local" in cell
    # What a GPU cluster's script says, but for the compute override that made these CPU jobs.
    assert "#SBATCH --gres" not in finetune
    assert (exp / "rank4_lr1e-3" / "artifacts" / "recipe_state" / "recipe_state.pt").is_file()
    assert "7/7 units done" in (exp / "summary.md").read_text()
