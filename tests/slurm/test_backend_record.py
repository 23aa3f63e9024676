"""issue 16: a local experiment while a SLURM controller answers is never planned against SLURM.

`--backend auto` picks SLURM whenever a controller answers; an experiment applied with `--backend
local` is asked of the local backend all the same (its backend is recorded beside its journal).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from reconciler.backends.slurm.backend import slurm_available
from tests.integration.demo_env import copy_demo, journal_events, reconcile, slurm_jobs_with_prefix

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
DEMO_UNITS = 10


def test_a_local_experiment_is_not_planned_against_slurm(tmp_path: Path) -> None:
    experiment = f"e2e_record_{uuid.uuid4().hex[:8]}"
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=5.0, experiment=experiment)
    first = reconcile("apply", str(exp), "--backend", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        assert slurm_available(), "the controller must answer for `auto` to have chosen SLURM"
        plan = json.loads(reconcile("plan", str(exp), "--format", "json", check=True).stdout)
        assert plan["scheduler"]["backend"] == "local"
        assert plan["summary"]["submit"] == 0 and plan["summary"]["resubmit"] == 0, plan["summary_line"]
        status = reconcile("status", str(exp), check=True).stdout
        assert "backend: local (recorded" in status.splitlines()[0]
        # The resume hint printed on Ctrl-C: `reconcile apply --watch`, without --backend.
        again = reconcile("apply", str(exp))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "backend: local (recorded" in again.stdout
        assert len(journal_events(exp, "submitted")) == DEMO_UNITS
        assert not slurm_jobs_with_prefix(f"reconciler:{experiment}:"), "nothing of a local experiment on SLURM"
    finally:
        cancelled = reconcile("cancel", str(exp))
    assert f"{DEMO_UNITS} job(s) cancelled" in cancelled.stdout, cancelled.stdout + cancelled.stderr
