"""Which backend an experiment runs on: the one it was applied with, remembered beside its journal.

`--backend auto` used to pick SLURM whenever a controller answered, so a `status` or a resumed
`apply --watch` of an experiment running on the local backend asked SLURM, found none of its jobs
and planned to submit them again. `apply` now records its backend in `.reconciler/backend.json`;
`auto` uses the record, and an explicit other backend is refused while the recorded one still runs
jobs of the experiment (its jobs would be invisible to the other one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.backends import make_backend
from reconciler.backends.base import Backend, job_order
from reconciler.errors import ReconcilerError, UsageError
from reconciler.fsutil import atomic_write_text
from reconciler.journal import Journal

RECORD_NAME = "backend.json"
NAMES = ("local", "slurm")


def recorded_backend(state_dir: Path) -> str | None:
    """The backend the experiment was last applied with, or None (never applied, or an unreadable record)."""
    try:
        data = json.loads((state_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    name = data.get("backend") if isinstance(data, dict) else None
    return name if name in NAMES else None


def record_backend(state_dir: Path, name: str) -> str | None:
    """Remember `name` for this experiment; returns a warning when it could not be written."""
    if name not in NAMES or recorded_backend(state_dir) == name:
        return None
    text = json.dumps({"backend": name, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
    try:
        atomic_write_text(state_dir / RECORD_NAME, text)
    except OSError as exc:
        return (f"cannot record the backend in {state_dir / RECORD_NAME}: {exc.strerror or exc}; "
                f"later commands need --backend {name}")
    return None


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
