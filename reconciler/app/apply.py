"""`reconcile apply`, `watch` and `cancel`: what happens around the passes (the lock, the backend record,
one pass or the watch at its adaptive pace, summary.md after a converged watch). Nothing here prints:
the CLI's view hears each pass, warning and note as they come."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reconciler.app.backend import backend_for
from reconciler.app.options import check_preflight, poll_floor, poll_policy, policy_for, submit_cap
from reconciler.backends.base import Backend
from reconciler.engine.backend_record import record_backend
from reconciler.errors import Interrupted, ReconcilerError, os_error_line
from reconciler.journal import experiment_lock
from reconciler.plan.planner import Policy
from reconciler.report import hints

if TYPE_CHECKING:
    from reconciler.apply.apply import ApplyOptions
    from reconciler.engine.loop import PassMemory, PassResult, ReplaceOnce
    from reconciler.spec.units import Desired

# The pass machinery (engine.loop loads the spec's expansion, observe, apply: 200 ms of imports) is
# imported by the functions that run a pass.


@dataclass(frozen=True)
class ApplyRequest:
    """`reconcile apply` / `watch` as options: the experiment, the backend asked for, one pass or a watch."""

    target: Path
    backend: str = "auto"
    watch: bool = False
    interval: float | None = None  # None: the backend's default
    max_interval: float | None = None  # None: the backend's max_poll_factor floors
    max_attempts: int | None = None  # None: the spec's
    max_submit: int | None = None  # None: the backend's default cap
    replace: tuple[str, ...] = ()
    wait_seconds: float = 0.0  # for another reconciler's lock
    stage: str | None = None
    targets: tuple[str, ...] = ()


class ApplyView(Protocol):
    """What an apply shows as it goes (the CLI's renderer): the app calls it, never prints."""

    def warn(self, text: str) -> None: ...  # a warning, once per appearance
    def note(self, text: str) -> None: ...  # a line for people, as is
    def start(self, desired: Desired, backend_note: str) -> None: ...  # the passes are about to begin
    def on_pass(self, result: PassResult) -> None: ...
    def on_interval(self, seconds: float) -> None: ...  # the watch's wait between passes changed
    def close(self) -> None: ...  # the passes are over (or interrupted)


@dataclass(frozen=True)
class Applied:
    """What an apply ended with: the last pass, and what the CLI says after it."""

    result: PassResult
    spec: Path  # the experiment file, for the commands a hint suggests
    backend: str
    watch: bool
    summary: Path | None = None  # summary.md, written after a converged watch
    summary_warning: str | None = None  # why it could not be written

    @property
    def exit_code(self) -> int:
        """A watch: 0 converged with every unit done, 3 with failed or blocked units, 1 otherwise.
        One pass: 1 when an action failed, else 0."""
        from reconciler.engine.loop import exit_code_for

        if self.watch:
            return exit_code_for(self.result)
        applied = self.result.applied
        return 1 if applied is not None and applied.errors else 0


def apply_passes(request: ApplyRequest, view: ApplyView) -> Applied:
    """`reconcile apply` (one pass) and `apply --watch` (passes until converged): load and check the spec,
    pick the backend, take the experiment's lock, record the backend, run the passes, and after a
    converged watch write summary.md. Ctrl-C raises Interrupted, with how to resume."""
    from reconciler.apply.apply import ApplyOptions
    from reconciler.engine.loop import PassMemory, ReplaceOnce, adaptive_pace, load_desired, watch

    memory = PassMemory()  # what the watch keeps from pass to pass: the spec's expansion, a pass that changed nothing
    desired = load_desired(request.target, memory)
    for warning in desired.loaded.warnings:
        view.warn(warning)
    check_preflight(desired, True, view.warn)
    policy = policy_for(desired, request.max_attempts, request.replace, request.stage, request.targets)
    backend, note = backend_for(desired, request.backend, request.target)
    caps = backend.capabilities
    interval, raised = poll_floor(caps, request.interval)
    if raised:
        view.note(raised)
    poll = poll_policy(interval, request.max_interval, caps.max_poll_factor)
    options = ApplyOptions(max_submit=submit_cap(caps, request.max_submit), stagger_seconds=caps.finetune_stagger_seconds)
    view.start(desired, note)
    passes = _Passes(request, view, desired, policy, backend, options, memory, ReplaceOnce())
    with experiment_lock(desired.layout.state_dir, request.wait_seconds):
        # Later commands (`auto`) ask the backend this experiment was applied with.
        problem = record_backend(desired.layout.state_dir, caps.name)
        if problem:
            view.warn(problem)
        try:
            if request.watch:
                result = watch(passes.one, interval, view.on_pass,
                               pace=adaptive_pace(poll, lambda: passes.desired, view.on_interval))
            else:
                result = passes.one()
                view.on_pass(result)
        except KeyboardInterrupt:
            view.close()
            spec = passes.desired.loaded.path
            raise Interrupted("interrupted: jobs already submitted keep running; to resume: "
                              f"{hints.reconcile('apply', spec, caps.name, '--watch')}\n"
                              f"to stop them: {hints.reconcile('cancel', spec, caps.name)}") from None
        view.close()
        desired = passes.desired
        summary, summary_warning = None, None
        if request.watch and result.converged:
            # The watch's last pass, as planned (its --max-attempts, --stage, --target): what this watch did.
            summary, summary_warning = summarize_quietly(desired, result, caps.name)
    return Applied(result, desired.loaded.path, caps.name, request.watch, summary, summary_warning)


@dataclass
class _Passes:
    """One pass of an apply, as the watch repeats it: the spec re-read (edits take effect, broken edits
    stop the watch), --replace once, the workflow logs written, each warning said once."""

    request: ApplyRequest
    view: ApplyView
    desired: Desired
    policy: Policy
    backend: Backend
    options: ApplyOptions
    memory: PassMemory
    replaced: ReplaceOnce
    warned: set[str] = field(default_factory=set)  # a watch repeats a warning only once it has stopped and come back
    reported: set[str] = field(default_factory=set)  # eval logs nobody can attribute: each once per command

    def one(self) -> PassResult:
        from reconciler.apply.prepare import prepare_unit
        from reconciler.engine.loop import load_desired, run_pass, watch_pass
        from reconciler.records.workflow_logs import record_pass

        r = self.request
        if r.watch:
            self.desired = load_desired(r.target, self.memory)
        policy = policy_for(self.desired, r.max_attempts, r.replace, r.stage, r.targets) if r.watch else self.policy
        policy = self.replaced.policy(policy)
        if r.watch:  # a pass that would repeat the last one (nothing it read has changed) is not run again
            result = watch_pass(self.desired, self.backend, policy, act=True, memory=self.memory,
                                options=self.options, prepare=prepare_unit)
        else:
            result = run_pass(self.desired, self.backend, policy, act=True, options=self.options, prepare=prepare_unit)
        self.replaced.note(result)
        warnings = record_pass(self.desired, result).warnings
        for warning in warnings:
            if warning not in self.warned:
                self.view.warn(warning)
        self.warned.clear()
        self.warned.update(warnings)
        for orphan in result.observation.unattributed:
            if orphan.path not in self.reported:
                self.reported.add(orphan.path)
                self.view.warn(str(orphan))
        return result


def summarize_quietly(desired: Desired, result: PassResult, backend: str) -> tuple[Path | None, str | None]:
    """A converged watch leaves summary.md: its path, or a warning (a problem writing it does not fail the watch)."""
    from reconciler.records.summary import write_summary

    try:
        _, path = write_summary(desired, result, backend=backend)
    except ReconcilerError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot write summary.md: {os_error_line(exc)}"
    return path, None


def cancel_jobs(target: Path, requested: str, wait_seconds: float) -> list[tuple[str, str]]:
    """`reconcile cancel`: every in-flight job of the experiment cancelled under its lock, as (unit, job id)."""
    from reconciler.apply.cancel import cancel_all
    from reconciler.engine.loop import load_desired

    desired = load_desired(target)
    backend, _ = backend_for(desired, requested, target)
    with experiment_lock(desired.layout.state_dir, wait_seconds):
        return cancel_all(desired, backend)
