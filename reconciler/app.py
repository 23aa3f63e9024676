"""The front door's policy: which backend an experiment runs on, how often a watch polls it and how many
jobs it may hold (from the backend's Capabilities, never its name), and where a spec to compare comes from.

Which backend: the one it was applied with, remembered beside its journal.

`--backend auto` used to pick SLURM whenever a controller answered, so a `status` or a resumed
`apply --watch` of an experiment running on the local backend asked SLURM, found none of its jobs
and planned to submit them again. `apply` now records its backend in `.reconciler/backend.json`;
`auto` uses the record, and an explicit other backend is refused while the recorded one still runs
jobs of the experiment (its jobs would be invisible to the other one).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from reconciler.backends import make_backend
from reconciler.backends.base import Backend, Capabilities
from reconciler.engine.backend_record import recorded_backend
from reconciler.engine.polling import PollPolicy
from reconciler.jobs import job_order
from reconciler.errors import ReconcilerError, UsageError
from reconciler.journal import Journal
from reconciler.spec.load import SPEC_FILENAME, LoadedSpec, load_spec

GIT_PREFIX = "git:"
GIT_TIMEOUT = 30


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


def poll_floor(caps: Capabilities, requested: float | None) -> tuple[float, str | None]:
    """The watch's interval: --interval or the backend's default, raised to the least the backend should be
    polled; with the note that says so when it was raised."""
    interval = caps.default_poll_seconds if requested is None else requested
    if interval < caps.min_poll_seconds:
        return caps.min_poll_seconds, (f"note: --interval raised to {caps.min_poll_seconds:g}s, the least this "
                                       "scheduler should be polled")
    return interval, None


def poll_policy(interval: float, max_interval: float | None, factor: float) -> PollPolicy:
    """The watch's polling: from `interval` (the floor) up to `--max-interval` (default: `factor` floors)."""
    cap = interval * factor if max_interval is None else max_interval
    if cap < interval:
        raise UsageError(f"--max-interval {cap:g} is below the polling floor of {interval:g}s (--interval, or the "
                         f"least this scheduler should be polled): give --max-interval {interval:g} or more "
                         f"(equal to the floor polls at a fixed interval)")
    return PollPolicy(floor=interval, cap=cap)


def submit_cap(caps: Capabilities, requested: int | None) -> int | None:
    """--max-submit, or the backend's default cap on one experiment's live jobs."""
    return caps.default_max_submit if requested is None else requested


def load_source(source: str) -> LoadedSpec:
    """A path (experiment dir or file), or `git:REV:path` read with `git show REV:path` (path from the repo root)."""
    if not source.startswith(GIT_PREFIX):
        return load_spec(Path(source))
    rev, sep, path = source[len(GIT_PREFIX):].partition(":")
    if not sep or not rev or not path:
        raise ReconcilerError(f"{source!r}: expected git:REV:path, e.g. git:origin/main:exp/experiment_summary.yaml")
    if _git(["cat-file", "-t", f"{rev}:{path}"], source).strip() == "tree":
        path = f"{path.rstrip('/')}/{SPEC_FILENAME}"
    text = _git(["show", f"{rev}:{path}"], source)
    # Relative paths in the old spec resolve where the file sits in the working tree.
    return load_spec(Path(path), text=text)


def _git(args: list[str], source: str) -> str:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise ReconcilerError(f"{source}: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise ReconcilerError(f"{source}: git {args[0]} timed out after {GIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise ReconcilerError(f"{source}: git {args[0]} failed: {detail}")
    return proc.stdout
