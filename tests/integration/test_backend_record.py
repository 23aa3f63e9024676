"""issue 16: an experiment remembers its backend, on the local backend (see tests/slurm/test_backend_record.py
for a local experiment while a SLURM controller answers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.demo_env import copy_demo, journal_events, reconcile

pytestmark = pytest.mark.slow
DEMO_UNITS = 10


def test_an_experiment_remembers_its_backend_and_moves_only_once_stopped(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=5.0)  # jobs stay in flight while the test asks
    first = reconcile("apply", str(exp), "--backend", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads((exp / ".reconciler" / "backend.json").read_text())["backend"] == "local"
    try:
        # Without --backend, later commands ask the backend the experiment was applied with, and say so.
        plan = reconcile("plan", str(exp), "--format", "json", check=True)
        record = json.loads(plan.stdout)
        assert record["scheduler"]["backend"] == "local" and record["summary"]["submit"] == 0
        assert "Scheduler: local." in reconcile("plan", str(exp), check=True).stdout
        status = reconcile("status", str(exp), check=True).stdout
        assert "backend: local (recorded: this experiment was applied with it)" in status.splitlines()[0]
        assert "scheduler local " in status
        assert json.loads(reconcile("status", str(exp), "--json", check=True).stdout)["scheduler"]["backend"] == "local"

        # Another backend while local jobs run: one line saying why and how to move, nothing done.
        for argv in (["apply", str(exp), "--backend", "slurm"], ["plan", str(exp), "--backend", "slurm"],
                     ["status", str(exp), "--backend", "slurm"], ["cancel", str(exp), "--backend", "slurm"]):
            refused = reconcile(*argv)
            assert refused.returncode == 2, (argv, refused.stdout, refused.stderr)
            assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
            assert "runs on --backend local" in refused.stderr
            assert f"`reconcile cancel {exp} --backend local`" in refused.stderr
        assert len(journal_events(exp, "submitted")) == DEMO_UNITS
    finally:
        cancelled = reconcile("cancel", str(exp))  # auto: the recorded local backend
    assert cancelled.returncode == 0 and f"{DEMO_UNITS} job(s) cancelled" in cancelled.stdout, cancelled.stdout

    # Stopped: the experiment may move (asking another backend is allowed again).
    moved = reconcile("plan", str(exp), "--backend", "slurm", "--format", "json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["scheduler"]["backend"] == "slurm"
