"""A scheduler that cannot answer while jobs are in the journal: every such unit is unknown, nothing is submitted.

Not `--offline` (which never asks): the backend is asked and raises BackendUnavailable, as squeue does
when the controller is down and as the local backend does when a job record cannot be read. Reading
that as "no jobs" would resubmit every job in flight during an outage (invariant 5).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from reconciler.jobs import Snapshot
from reconciler.backends.local.backend import LocalBackend
from reconciler.errors import BackendUnavailable
from reconciler.journal import Journal
from reconciler.engine.loop import PassResult, load_desired, run_pass
from reconciler.apply.prepare import prepare_unit
from reconciler.plan.planner import Policy
from reconciler.spec.units import Desired
from tests.integration.demo_env import copy_demo, reconcile
from tests.unit.test_summary import FakeBackend


class DownBackend(FakeBackend):
    """Accepts submissions; its query fails once `down` is set, as squeue does during a controller outage."""

    down = False
    submits = 0

    def submit(self, request):  # type: ignore[no-untyped-def]
        self.submits += 1
        return super().submit(request)

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        if self.down:
            self.queries += 1
            raise BackendUnavailable("squeue: error: Unable to contact slurm controller (connect failure)")
        return super().query(tag_prefix, job_ids)


def submitted(desired: Desired) -> list[str]:
    return [unit for unit, history in Journal(desired.layout.state_dir).read().units.items() for _ in history.jobs]


def check_unknown_pass(desired: Desired, result: PassResult, before: list[str]) -> None:
    """Every unit is unknown or waits on an unknown one; nothing new was submitted or journaled."""
    states = {p.key: p.state for p in result.plan.units}
    assert set(states.values()) <= {"unknown", "waiting"}, states
    assert "unknown" in states.values()
    assert not result.plan.has_changes and result.applied is None
    assert not result.converged
    assert result.plan.scheduler_known is False and "scheduler unavailable" in result.plan.scheduler_note
    assert submitted(desired) == before


def test_fake_scheduler_down_with_jobs_in_flight_submits_nothing(tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo"))
    backend = DownBackend()
    first = run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)
    assert backend.submits == len(desired.units) and first.applied is not None
    before = submitted(desired)
    backend.down = True
    for _ in range(2):  # an outage lasts more than one pass
        check_unknown_pass(desired, run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit), before)
    assert backend.submits == len(desired.units)
    assert backend.queries >= 2  # it was asked, and did not answer


def test_local_backend_that_cannot_read_its_records_submits_nothing(tmp_path: Path) -> None:
    """A job record the local backend cannot parse (a disk error, a hand edit) makes its query fail."""
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=30)  # the fine-tunes are still running when asked
    desired = load_desired(exp)
    local_dir = desired.layout.state_dir / "local"
    try:
        first = run_pass(desired, LocalBackend(local_dir), Policy(), act=True, prepare=prepare_unit)
        assert first.applied is not None and len(submitted(desired)) == len(desired.units)
        before = submitted(desired)
        (local_dir / "jobs" / "999999.json").write_text('{"job_id": "999999", "state": ')  # cut short
        result = run_pass(desired, LocalBackend(local_dir), Policy(), act=True, prepare=prepare_unit)
        check_unknown_pass(desired, result, before)
        assert "unreadable job record" in result.plan.scheduler_note

        # The same through the command: the reason, every unit unknown, nothing submitted.
        proc = reconcile("apply", str(exp), "--backend", "local")
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert f"{len(desired.units)} unknown" in proc.stdout and "unreadable job record" in proc.stdout
        assert submitted(desired) == before
        assert len(list((local_dir / "jobs").glob("*.json"))) == len(desired.units) + 1
    finally:
        (local_dir / "jobs" / "999999.json").unlink(missing_ok=True)
        LocalBackend(local_dir).cancel([p.stem for p in local_dir.glob("jobs/*.json")])  # leave no job running
