"""The intent is on disk before the scheduler is asked to submit (invariant 4).

A crash between sbatch and the journal write must leave a trace: the open intent makes the next
pass search the scheduler for the unit's tag before it submits again. The backend here reads the
journal from disk at the moment it is asked to submit.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.backends.base import SubmitRequest
from reconciler.journal import Journal
from reconciler.engine.loop import load_desired, run_pass
from reconciler.apply.prepare import prepare_unit
from reconciler.plan.planner import Policy
from tests.integration.demo_env import copy_demo
from tests.unit.test_summary import FakeBackend


class Witness(FakeBackend):
    """Notes, for each submission, whether the journal on disk already holds the unit's open intent."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.seen: list[tuple[str, bool]] = []

    def submit(self, request: SubmitRequest) -> str:
        unit = request.tag.rsplit(":", 1)[1]
        history = Journal(self.state_dir).read().units.get(unit)
        self.seen.append((unit, history is not None and history.open_intent))
        return super().submit(request)


def test_the_intent_is_on_disk_before_each_submission(tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "demo"))
    backend = Witness(desired.layout.state_dir)
    result = run_pass(desired, backend, Policy(), act=True, prepare=prepare_unit)
    assert [e.unit for e in result.events if e.kind == "submitted"] == [unit for unit, _ in backend.seen]
    assert len(backend.seen) == len(desired.units)
    assert [unit for unit, journaled in backend.seen if not journaled] == []
    view = Journal(desired.layout.state_dir).read()
    assert not any(h.open_intent for h in view.units.values())  # each closed by its job id afterwards
