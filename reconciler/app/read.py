"""The commands that read: `validate`, `plan`, `status`, `summarize` (which writes only summary.md) and
`scaffold` (only scripts). Each loads the spec, checks what it must, and returns values for the CLI to render."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.app.backend import choose_backend, scheduler_for
from reconciler.app.options import check_preflight, policy_for
from reconciler.backends.base import Backend
from reconciler.engine.planning import plan_pass
from reconciler.errors import ReconcilerError
from reconciler.plan.planner import Plan

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult
    from reconciler.records.state_file import StateFile
    from reconciler.scaffold.write import ScriptReport
    from reconciler.spec.units import Desired

Warn = Callable[[str], None]


def load_checked(target: Path, warn: Warn, environment: bool) -> Desired:
    """The spec, expanded, with its warnings said and what its jobs will need checked (preflight;
    `environment`: the eval environment too)."""
    from reconciler.engine.loop import load_desired

    desired = load_desired(target)
    for warning in desired.loaded.warnings:
        warn(warning)
    check_preflight(desired, environment, warn)
    return desired


def plan_only(target: Path, backend: str, offline: bool, max_attempts: int | None, replace: tuple[str, ...],
              stage: str | None, targets: tuple[str, ...], warn: Warn, need_desired: bool) -> tuple[Plan, Desired | None]:
    """`reconcile plan`: the remembered plan while its inputs stat the same, else a pass (engine.planning).
    The Desired is None when the plan was recalled, unless `need_desired` (a report naming resources)."""
    from reconciler.engine.loop import load_desired

    def backend_for(state_dir: Path) -> Backend:
        return choose_backend(backend, state_dir, lambda: load_desired(target).experiment, str(target))[0]

    the_plan, desired = plan_pass(
        target, (backend, max_attempts, replace, stage, targets),
        policy_for=lambda d: policy_for(d, max_attempts, replace, stage, targets),
        backend_for=None if offline else backend_for)
    for warning in the_plan.warnings:
        warn(warning)
    if desired is not None:  # a recalled plan read nothing, and its inputs have not changed since
        check_preflight(desired, not offline, warn)
    elif need_desired:
        desired = load_desired(target)
    return the_plan, desired


def status_pass(target: Path, backend: str, offline: bool) -> tuple[PassResult, str, StateFile | None]:
    """`reconcile status`: a pass that changes nothing, the note saying which backend, and state.json."""
    from reconciler.engine.loop import load_desired, run_pass
    from reconciler.records.state_file import read_state

    desired = load_desired(target)
    chosen, note = scheduler_for(desired, backend, offline, target)
    result = run_pass(desired, chosen, policy_for(desired, None), act=False)
    return result, note, read_state(desired.layout.state_dir)


def summarize_pass(target: Path, backend: str, offline: bool) -> tuple[Desired, PassResult, str | None]:
    """`reconcile summarize`: a pass that changes nothing, and the backend its suggested commands name."""
    from reconciler.engine.loop import load_desired, run_pass

    desired = load_desired(target)
    chosen, _ = scheduler_for(desired, backend, offline, target)
    result = run_pass(desired, chosen, policy_for(desired, None), act=False)
    # The scheduler the jobs run on (unknown offline, unless named).
    named = chosen.capabilities.name if chosen is not None else (None if backend == "auto" else backend)
    return desired, result, named


def scaffold_units(target: Path, dry_run: bool, force: bool, warn: Warn) -> list[ScriptReport]:
    """`reconcile scaffold`: every unit's script and configs rendered (or, `dry_run`, what would be)."""
    from reconciler.scaffold.write import scaffold as render_all

    desired = load_checked(target, warn, environment=False)
    try:
        return render_all(desired, dry_run=dry_run, force=force)
    except OSError as exc:
        raise ReconcilerError(f"cannot write {exc.filename or desired.layout.experiment_dir}: "
                              f"{exc.strerror or exc}; nothing more was written") from None
