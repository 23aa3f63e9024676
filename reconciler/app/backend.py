"""Which backend an experiment runs on: the one it was applied with, remembered beside its journal.

`--backend auto` used to pick SLURM whenever a controller answered, so a `status` or a resumed
`apply --watch` of an experiment running on the local backend asked SLURM, found none of its jobs
and planned to submit them again. `apply` now records its backend in `.reconciler/backend.json`;
`auto` uses the record, and an explicit other backend is refused while the recorded one still runs
jobs of the experiment (its jobs would be invisible to the other one).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.backends import make_backend
from reconciler.backends.base import Backend
from reconciler.engine.backend_record import recorded_backend
from reconciler.errors import ReconcilerError, UsageError
from reconciler.jobs import job_order
from reconciler.journal import Journal

if TYPE_CHECKING:
    from reconciler.spec.units import Desired


def choose_backend(requested: str, state_dir: Path, experiment: Callable[[], str], target: str) -> tuple[Backend, str]:
    """The backend to ask and a one-line note saying which (and why).

    `experiment` gives the experiment's name (its jobs' tag prefix) when it is needed: only to check
    an explicit backend against the recorded one. `target` is how the user named the experiment, for
    the command the refusal suggests.
    """
    recorded = recorded_backend(state_dir)
    if requested == "auto" and recorded is not None:
        backend, _ = make_backend(recorded, state_dir)
        return backend, f"backend: {recorded} (recorded: this experiment was applied with it)"
    if requested != "auto" and recorded is not None and recorded != requested:
        _refuse_while_in_flight(recorded, requested, state_dir, experiment, target)
        backend, _ = make_backend(requested, state_dir)
        return backend, f"backend: {requested} (--backend; the experiment was applied with {recorded} before)"
    return make_backend(requested, state_dir)


def _refuse_while_in_flight(recorded: str, requested: str, state_dir: Path, experiment: Callable[[], str],
                            target: str) -> None:
    from reconciler.spec.units import tag_prefix

    view = Journal(state_dir).read()
    ids = sorted(view.in_flight_ids() - view.cancelled)
    if not ids:
        return  # the journal knows of nothing that may still run: the experiment may move
    move = (f"stop them with `reconcile cancel {target} --backend {recorded}`, then use --backend {requested} "
            "to move the experiment")
    try:
        there, _ = make_backend(recorded, state_dir)
        snapshot = there.query(tag_prefix(experiment()), ids)
    except ReconcilerError as exc:
        raise UsageError(f"the experiment was applied with --backend {recorded}, and whether its {len(ids)} job(s) "
                         f"there still run is unknown ({exc}); --backend {requested} would not see them. Ask again "
                         f"when {recorded} answers, or {move}") from None
    live = sorted((j.job_id for j in snapshot.jobs.values() if j.live), key=job_order)
    if live:
        shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
        raise UsageError(f"the experiment runs on --backend {recorded} ({len(live)} job(s) in flight: {shown}); "
                         f"--backend {requested} would not see them. Wait for them to end, or {move}")


def backend_for(desired: Desired, requested: str, target: Path) -> tuple[Backend, str]:
    """The backend to ask for this experiment (`auto`: the one it was applied with) and a note saying which."""
    return choose_backend(requested, desired.layout.state_dir, lambda: desired.experiment, str(target))


def scheduler_for(desired: Desired, requested: str, offline: bool, target: Path) -> tuple[Backend | None, str]:
    """The backend to ask, or None for --offline (plans then report the scheduler as unknown)."""
    return (None, "backend: none (--offline)") if offline else backend_for(desired, requested, target)
