"""The front door: what each command does before and around its passes, and the policy in it.

The CLI parses options, calls one function here, renders what it returns and exits; this module never
prints (a watch reports as it goes through the `ApplyView` the CLI passes in). Here: loading the spec
and checking what its jobs will need (preflight), the planner's Policy from the options, which backend
an experiment runs on, the experiment lock, one pass or the watch with its adaptive polling, the submit
cap (from the backend's Capabilities, never its name), and where a spec to compare comes from.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reconciler.backends import make_backend
from reconciler.backends.base import Backend, Capabilities
from reconciler.engine.backend_record import record_backend, recorded_backend
from reconciler.engine.polling import PollPolicy
from reconciler.jobs import job_order
from reconciler.errors import Interrupted, PreflightFailed, ReconcilerError, UsageError, os_error_line
from reconciler.journal import Journal, experiment_lock
from reconciler.plan.planner import Policy
from reconciler.report import hints
from reconciler.spec.load import SPEC_FILENAME, LoadedSpec, load_spec

if TYPE_CHECKING:
    from reconciler.apply.apply import ApplyOptions
    from reconciler.engine.loop import PassMemory, PassResult, ReplaceOnce
    from reconciler.spec.units import Desired

# The pass machinery (engine.loop loads the spec's expansion, observe, apply: 200 ms of imports) is
# imported by the functions that run a pass: `reconcile plan` recalling a remembered plan needs none of it.

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


def backend_for(desired: Desired, requested: str, target: Path) -> tuple[Backend, str]:
    """The backend to ask for this experiment (`auto`: the one it was applied with) and a note saying which."""
    return choose_backend(requested, desired.layout.state_dir, lambda: desired.experiment, str(target))


def scheduler_for(desired: Desired, requested: str, offline: bool, target: Path) -> tuple[Backend | None, str]:
    """The backend to ask, or None for --offline (plans then report the scheduler as unknown)."""
    return (None, "backend: none (--offline)") if offline else backend_for(desired, requested, target)


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
            # The watch's budget (--max-attempts), not the spec's: the summary says what this watch did.
            summary, summary_warning = summarize_quietly(desired, result, caps.name,
                                                         policy_for(desired, request.max_attempts, request.replace))
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


def summarize_quietly(desired: Desired, result: PassResult, backend: str, policy: Policy) -> tuple[Path | None, str | None]:
    """A converged watch leaves summary.md: its path, or a warning (a problem writing it does not fail the watch)."""
    from reconciler.report.summary import write_summary

    try:
        _, path = write_summary(desired, result.observation, backend=backend, policy=policy)
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
