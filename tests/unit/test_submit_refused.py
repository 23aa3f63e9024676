"""A submission the scheduler refuses for good spends the retry budget: a watch never loops on it."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from reconciler.backends.base import SubmitRequest
from reconciler.errors import BackendError
from reconciler.engine.loop import load_desired, run_pass, watch
from reconciler.apply.prepare import prepare_unit
from reconciler.plan.planner import Policy
from tests.integration.demo_env import copy_demo
from tests.unit.test_summary import FakeBackend

REFUSED = "finetune/rank4_lr5e-5"
GRES = "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification"


class RefusingBackend(FakeBackend):
    """Refuses one unit's fine-tune, as sbatch refuses a GPU request on a cluster without GPUs."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def submit(self, request: SubmitRequest) -> str:
        if request.tag.endswith(REFUSED):
            self.refused += 1
            raise BackendError(command="sbatch", returncode=1, stderr=GRES)
        return super().submit(request)


def test_refused_submission_fails_after_the_budget_and_its_evals_are_blocked(tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo"))
    backend = RefusingBackend()

    def one():
        result = run_pass(desired, backend, Policy(max_attempts=3), act=True, prepare=prepare_unit)
        for job in list(backend.jobs.values()):  # everything else finishes at once, without artifacts
            if job.live:
                backend.set(job.job_id, "COMPLETED", exit_code=0)
        return result

    result = watch(one, 0.0, lambda _: None, sleep=lambda _: None, max_passes=12)
    assert backend.refused == 3
    planned = {p.key: p for p in result.plan.units}
    assert planned[REFUSED].state == "failed" and planned[REFUSED].action == "none"
    assert "submission refused" in planned[REFUSED].reason and "Invalid generic resource" in planned[REFUSED].reason
    assert planned["eval/rank4_lr5e-5/capitalization/epoch0"].state == "blocked"
    assert result.converged  # the watch ends instead of calling sbatch again every pass


class RefusingEverything(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def submit(self, request: SubmitRequest) -> str:
        self.calls += 1
        raise BackendError(command="sbatch", returncode=1, stderr=GRES)


def test_a_pass_stops_asking_after_the_same_refusal_three_times(tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo"))
    backend = RefusingEverything()
    result = run_pass(desired, backend, Policy(max_attempts=3), act=True, prepare=prepare_unit)
    assert backend.calls == 3  # not one per unit (the demo has 10)
    deferred = [e for e in result.events if e.kind == "deferred"]
    assert deferred and "refused 3 jobs in a row" in deferred[0].detail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.ESTALE])
def test_a_filesystem_in_trouble_while_preparing_spends_no_attempt(tmp_path: Path, code: int) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo"))
    backend = FakeBackend()

    def failing_prepare(*_args: object) -> None:
        raise OSError(code, "the filesystem said no")

    first = run_pass(desired, backend, Policy(max_attempts=1), act=True, prepare=failing_prepare)
    assert not backend.jobs
    assert len(first.applied.errors) == 1 and "not counted as an attempt" in first.applied.errors[0]
    journal = desired.layout.state_dir / "journal.jsonl"
    events = [json.loads(line)["event"] for line in journal.read_text().splitlines()] if journal.exists() else []
    assert "submit_failed" not in events and "intent" not in events

    # With a budget of one attempt, the unit is still submitted once the filesystem recovers.
    second = run_pass(desired, backend, Policy(max_attempts=1), act=True, prepare=prepare_unit)
    assert len(backend.jobs) == sum(1 for p in second.plan.units if p.action == "submit")
    assert {p.key for p in second.plan.units if p.action == "submit"} >= {REFUSED}
