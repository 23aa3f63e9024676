"""Options become policy: the planner's Policy, what the jobs will need (preflight), how often a watch polls
its backend and how many jobs it may hold there (from the backend's Capabilities, never its name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.backends.base import Capabilities
from reconciler.engine.polling import PollPolicy
from reconciler.errors import PreflightFailed, ReconcilerError, UsageError
from reconciler.plan.planner import Policy
from reconciler.report import hints

if TYPE_CHECKING:
    from reconciler.spec.units import Desired


def policy_for(desired: Desired, max_attempts: int | None, replace: tuple[str, ...] = (),
               stage: str | None = None, targets: tuple[str, ...] = ()) -> Policy:
    """The planner's Policy from the command's options: attempts (else the spec's), units to replace, the
    units selected by --stage and --target."""
    from reconciler.spec.selection import select_units

    keys = {k for item in replace for k in item.split(",") if k and k != "outdated"}
    unknown = keys - set(desired.by_key())
    if unknown:
        raise ReconcilerError(f"--replace: {sorted(unknown)[0]!r} is not a unit of this experiment "
                              f"(unit keys: {hints.reconcile('plan', desired.loaded.path, None, '--offline')})")
    return Policy(
        max_attempts=max_attempts or desired.loaded.spec.reconciler.max_attempts,
        replace=frozenset(keys),
        replace_outdated=any("outdated" in item.split(",") for item in replace),
        selected=select_units(desired.units, stage, targets),
    )


def check_preflight(desired: Desired, environment: bool, warn: Callable[[str], None]) -> None:
    """What the jobs will need, before any of them runs: warnings go to `warn`; errors stop the command
    (PreflightFailed lists them, exit 2). `environment`: check the eval environment too."""
    from reconciler.scaffold.preflight import preflight
    from reconciler.scaffold.resources import load_user_config

    user = load_user_config()
    problems = preflight(desired.loaded, check_environment=environment, user_environment=bool(user.environment))
    for problem in problems:
        if problem.severity == "warning":
            warn(str(problem))
    errors = tuple(str(p) for p in problems if p.severity == "error")
    if errors:
        raise PreflightFailed(errors)


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
