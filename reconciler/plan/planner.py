"""The pure planner: desired units + observed evidence + policy -> one action per unit, with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from reconciler.jobs import (
    COMPLETED,
    DEPENDENCY_NEVER_SATISFIED,
    GONE,
    PENDING,
    RUNNING,
    TERMINAL_STATES,
    UNKNOWN,
    Job,
)

if TYPE_CHECKING:  # not imported at run time: a recalled plan (pass_memo) needs none of the spec machinery
    from reconciler.observe.observation import Observation, UnitEvidence
    from reconciler.plan.remedies import RemedyChoice
    from reconciler.spec.units import Unit

State = Literal["missing", "waiting", "queued", "running", "done", "failed", "blocked", "outdated", "unknown"]
Action = Literal["submit", "resubmit", "cancel", "release", "wait", "none"]

STATES: tuple[State, ...] = ("missing", "waiting", "queued", "running", "done", "failed", "blocked", "outdated", "unknown")
ACTIONS: tuple[Action, ...] = ("submit", "resubmit", "cancel", "release", "wait", "none")
IN_FLIGHT: frozenset[str] = frozenset({"queued", "running"})
SUBMITTING: frozenset[str] = frozenset({"submit", "resubmit"})


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    replace: frozenset[str] = frozenset()  # unit keys to re-run although done
    replace_outdated: bool = False
    # `--stage` / `--target`: the only units acted on (None: all). The rest are planned and
    # reported as usual, but marked untouched and given no action.
    selected: frozenset[str] | None = None


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 4x the
# cost, and a pass builds one per unit (a recalled plan, 10k of them). Nothing assigns to one:
# `dataclasses.replace` makes a new one. unsafe_hash keeps it hashable, as a frozen one was.
@dataclass(slots=True, unsafe_hash=True)
class PlannedUnit:
    key: str
    kind: str
    run: str
    task: str | None
    epoch: int | None
    state: State
    action: Action
    reason: str
    depends_on: tuple[str, ...]
    fingerprint: str
    job_id: str | None = None
    attempts: int = 0
    failure_class: str | None = None
    # submit/resubmit: units whose new or live job this one must wait for (afterok).
    after: tuple[str, ...] = ()
    # cancel: the job ids to cancel; release: the job to release.
    job_ids: tuple[str, ...] = ()
    # Not selected by --stage/--target (or waiting on a unit that is not): reported, never acted on.
    untouched: bool = False
    # submit/resubmit decided without asking the scheduler (an offline plan presumes it holds nothing
    # the journal does not know of): `apply` asks it first, and may find the job already there.
    presumed: bool = False
    # submit/resubmit of an eval: every unit (this one too, first the one whose directory holds the
    # job's script) that goes into the same job, loading their checkpoint once. Empty: a job of its own.
    group: tuple[str, ...] = ()
    # resubmit after a failure: the remedy its retry renders, chosen once by the engine (annotate.py)
    # from the journal's last remedy; apply renders it and journals a new one. Not in the plan's JSON.
    remedy: RemedyChoice | None = None


@dataclass(frozen=True)
class Plan:
    experiment: str
    units: tuple[PlannedUnit, ...]
    scheduler_known: bool = True
    scheduler_note: str = ""
    warnings: tuple[str, ...] = field(default=())
    presumed_empty: bool = False  # offline: the scheduler was presumed to hold nothing the journal does not know of
    backend: str | None = None  # the scheduler asked (local, slurm); None offline

    def counts(self) -> Counter[str]:
        return Counter(u.action for u in self.units)

    def state_counts(self) -> Counter[str]:
        return Counter(u.state for u in self.units)

    @property
    def has_changes(self) -> bool:
        return any(u.action not in ("none", "wait") for u in self.units)

    @property
    def converged(self) -> bool:
        """Nothing left to do and nothing in flight (unknown units are not converged); units left
        untouched by --stage/--target do not count, unless a job of theirs is in flight."""
        return not self.has_changes and all(
            u.state in ("done", "failed", "blocked", "outdated") or (u.untouched and u.state not in IN_FLIGHT)
            for u in self.units
        )

    @property
    def presumed(self) -> int:
        return sum(1 for u in self.units if u.presumed)

    def summary_line(self) -> str:
        a, s = self.counts(), self.state_counts()
        release = f", {a['release']} to release" if a["release"] else ""
        unknown = f", {s['unknown']} unknown" if s["unknown"] else ""
        failed = f", {s['failed']} failed" if s["failed"] else ""
        outdated = f", {s['outdated']} outdated" if s["outdated"] else ""
        untouched = sum(1 for u in self.units if u.untouched)
        left = f"; {untouched} untouched (not selected)" if untouched else ""
        presumed = self.presumed
        presumed_note = f"; {presumed} presumed (scheduler not asked)" if presumed else ""
        return (f"Plan: {a['submit']} to submit, {a['resubmit']} to resubmit, {a['cancel']} to cancel{release}; "
                f"{s['done']} done, {s['queued'] + s['running']} in flight, {s['blocked']} blocked"
                f"{failed}{outdated}{unknown}{left}{presumed_note}")


def plan(units: tuple[Unit, ...] | list[Unit], observation: Observation, policy: Policy,
         experiment: str = "") -> Plan:
    """Pure: no I/O, no clock. Fine-tunes are planned before the evals that depend on them.

    An observation made offline presumes an empty scheduler: the jobs the journal says are in flight
    stay unknown, and everything else is planned as if the scheduler had answered that it holds no
    job; each submission so decided is marked `presumed`.
    """
    decided: dict[str, PlannedUnit] = {}
    evidence = observation.get
    scheduler_known = observation.scheduler_known or observation.presumed_empty
    selected = policy.selected
    held: set[str] = set()  # not selected, though they would act: what waits on them waits
    for unit in units:
        if unit.kind == "finetune":
            p = _plan_finetune(unit, evidence(unit.key), scheduler_known, policy)
            if selected is not None and unit.key not in selected:
                if p.action in SUBMITTING:
                    held.add(unit.key)
                p = _untouched(p)
            decided[unit.key] = p
    for unit in units:
        if unit.kind == "eval":
            up = _first_decided(unit.depends_on, decided)
            up_ev = evidence(unit.depends_on[0]) if unit.depends_on else None
            ev = evidence(unit.key)
            p = _plan_eval(unit, ev, scheduler_known, policy, up, up_ev, up_held=up is not None and up.key in held)
            if ev.unattributed and p.state != "done":
                p = replace(p, reason=f"{p.reason}; {_n_logs(len(ev.unattributed))} nearby could not be "
                                      f"attributed and may be this unit's: {ev.unattributed[0]}")
            if selected is not None and unit.key not in selected:
                p = _untouched(p)
            decided[unit.key] = p
    planned = _spare_shared_jobs(_grouped(units, decided))
    if observation.presumed_empty:
        planned = tuple(_presumed(p) if p.action in SUBMITTING else p for p in planned)
    return Plan(experiment=experiment, units=planned, scheduler_known=observation.scheduler_known,
                scheduler_note=observation.scheduler_note, presumed_empty=observation.presumed_empty,
                warnings=tuple(str(orphan) for orphan in observation.unattributed))


def _grouped(units: tuple[Unit, ...] | list[Unit], decided: dict[str, PlannedUnit]) -> tuple[PlannedUnit, ...]:
    """The evals to submit that load the same checkpoint with the same settings, after the same
    upstream job, go into one job (spec: evaluation.group_by_checkpoint); the rest run alone."""
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for unit in units:
        if unit.share is None:
            continue
        p = decided[unit.key]
        if p.action in SUBMITTING and not p.untouched:
            groups.setdefault((unit.share, p.after), []).append(unit.key)
    for keys in groups.values():
        if len(keys) > 1:
            members = tuple(keys)
            for key in keys:
                p = decided[key]
                others = len(members) - 1
                decided[key] = replace(p, group=members, reason=f"{p.reason}; one job with {others} other "
                                       f"eval{'s' if others > 1 else ''} of this checkpoint")
    return tuple(decided[u.key] for u in units)


def _spare_shared_jobs(planned: tuple[PlannedUnit, ...]) -> tuple[PlannedUnit, ...]:
    """A job that carries several units is cancelled only when none of them still needs it: a unit
    whose own log is complete does not take away its group's job."""
    cancels = {job for p in planned if p.action == "cancel" for job in p.job_ids}
    if not cancels:
        return planned
    needed: dict[str, list[str]] = {}
    for p in planned:
        if p.job_id in cancels and p.action != "cancel" and p.state in IN_FLIGHT:
            needed.setdefault(p.job_id, []).append(p.key)
    if not needed:
        return planned
    out = []
    for p in planned:
        kept = [job for job in p.job_ids if job in needed]
        if p.action == "cancel" and kept:
            others = needed[kept[0]]
            p = replace(p, action="none", job_ids=(), reason=f"{p.reason}; not cancelled: job {kept[0]} also "
                        f"runs {others[0]}" + (f" and {len(others) - 1} more" if len(others) > 1 else ""))
        out.append(p)
    return tuple(out)


def _n_logs(n: int) -> str:
    return "1 log" if n == 1 else f"{n} logs"


def _untouched(p: PlannedUnit) -> PlannedUnit:
    """A unit --stage/--target did not select: what it would do is said, nothing is done."""
    would = f"would {p.action}: " if p.action not in ("none", "wait") else ""
    return replace(p, action="none", untouched=True, reason=f"not selected: {would}{p.reason}",
                   after=(), job_ids=())


def _presumed(p: PlannedUnit) -> PlannedUnit:
    return replace(p, presumed=True, reason=f"scheduler not asked; {p.reason}")


def _first_decided(keys: tuple[str, ...], decided: dict[str, PlannedUnit]) -> PlannedUnit | None:
    for key in keys:
        if key in decided:
            return decided[key]
    return None


def _planned(unit: Unit, state: State, action: Action, reason: str, ev: UnitEvidence, **extra: object) -> PlannedUnit:
    job_id: str | None = None
    failure: str | None = None
    if ev.jobs:
        last = ev.jobs[-1]
        job_id = _first_live(ev.jobs, last).job_id
        if last.state in TERMINAL_STATES:
            failure = last.failure_class
            if ev.oom_in_stdout and failure != "out_of_memory":
                failure = "out_of_memory"  # torchtune's CUDA OOM ends the job FAILED; its stdout says why
    return PlannedUnit(
        key=unit.key, kind=unit.kind, run=unit.run, task=unit.task, epoch=unit.epoch, state=state, action=action,
        reason=reason, depends_on=unit.depends_on, fingerprint=unit.fingerprint, job_id=job_id,
        attempts=ev.attempts, failure_class=failure, **extra,  # type: ignore[arg-type]
    )


def _first_live(jobs: tuple[Job, ...], default: Job) -> Job:
    for job in jobs:
        if job.live:
            return job
    return default


def _in_flight(unit: Unit, ev: UnitEvidence) -> PlannedUnit | None:
    """At most one live job per unit: extra ones are cancelled, newest first."""
    if not ev.jobs:
        return None
    live = [j for j in ev.jobs if j.live]
    if not live:
        return None
    if len(live) > 1:
        extra = tuple(j.job_id for j in live[1:])
        return _planned(unit, _flight_state(live[0]), "cancel",
                        f"duplicate_job: {len(live)} live jobs; keeping {live[0].job_id}", ev, job_ids=extra)
    job = live[0]
    return _planned(unit, _flight_state(job), "none", f"in_flight: job {job.job_id} {job.state}", ev)


def _flight_state(job: Job) -> State:
    return "queued" if job.state == PENDING else "running"


def _unknown_jobs(ev: UnitEvidence) -> bool:
    return any(j.state == UNKNOWN for j in ev.jobs)


def _outdated_or_done(unit: Unit, ev: UnitEvidence, policy: Policy, what: str) -> PlannedUnit:
    produced = ev.produced_fingerprint
    if produced is not None and produced != unit.fingerprint:
        if policy.replace_outdated or unit.key in policy.replace:
            return _planned(unit, "outdated", "resubmit",
                            f"replace: outdated, made under spec {produced[:8]}, now {unit.fingerprint[:8]}", ev)
        return _planned(unit, "outdated", "none",
                        f"outdated: made under spec {produced[:8]}, now {unit.fingerprint[:8]} (apply --replace to re-run)", ev)
    if unit.key in policy.replace:
        return _planned(unit, "done", "resubmit", "replace: asked to re-run", ev)
    return _planned(unit, "done", "none", what, ev)


def _plan_finetune(unit: Unit, ev: UnitEvidence, scheduler_known: bool, policy: Policy) -> PlannedUnit:
    flight = _in_flight(unit, ev)
    if flight is not None:
        return flight
    files_complete = bool(ev.epochs) and all(e.state == "complete" for e in ev.epochs)
    last = ev.jobs[-1] if ev.jobs else None
    if files_complete:
        # The final epoch has no recipe_state.pt: also require that the job exited 0 when we know it.
        if last is None or last.state == GONE or (last.state == COMPLETED and not last.exit_code):
            if last is None and not scheduler_known:
                return _planned(unit, "unknown", "none",
                                "unknown: checkpoints are complete but the scheduler could not be asked", ev)
            return _outdated_or_done(unit, ev, policy, f"done: {len(ev.epochs)} checkpoint(s) complete")
    if not scheduler_known or _unknown_jobs(ev):
        return _planned(unit, "unknown", "none", "unknown: scheduler state unknown; will look again", ev)
    return _retry_or_submit(unit, ev, policy, last, _finetune_failure(ev, last))


def _finetune_failure(ev: UnitEvidence, last: Job | None) -> str:
    if last is None:
        return ""
    done = sum(1 for e in ev.epochs if e.state == "complete")
    if last.state == GONE:
        return f"job {last.job_id} ended with {done}/{len(ev.epochs)} checkpoint(s)"
    code = f" exit {last.exit_code}" if last.exit_code else ""
    return f"job {last.job_id} {last.state}{code} with {done}/{len(ev.epochs)} checkpoint(s)"


def budget_used(attempts: int, budget: int) -> str:
    """`retry budget used (3 of 3)`; a budget lowered below the attempts already made says both."""
    if attempts == budget:
        return f"retry budget used ({attempts} of {budget})"
    return f"retry budget used ({attempts} attempts; the budget is {budget})"


def _retry_or_submit(unit: Unit, ev: UnitEvidence, policy: Policy, last: Job | None, failure: str,
                     after: tuple[str, ...] = ()) -> PlannedUnit:
    if last is None and ev.submit_error is not None:
        refused = f"submission refused ({ev.submit_error})"
        if ev.attempts >= policy.max_attempts:
            return _planned(unit, "failed", "none",
                            f"failed: {refused}; {budget_used(ev.attempts, policy.max_attempts)}", ev)
        return _planned(unit, "missing", "submit", f"retry: {refused}; attempt {ev.attempts + 1} of "
                        f"{policy.max_attempts}" + (f"; afterok {', '.join(after)}" if after else ""), ev, after=after)
    if last is None:
        reason = "missing: nothing submitted yet"
        if ev.open_intent:
            reason = "missing: an earlier submission left no job (searched by tag)"
        if after:
            reason += f"; afterok {', '.join(after)}"
        return _planned(unit, "missing", "submit", reason, ev, after=after)
    if ev.attempts >= policy.max_attempts:
        return _planned(unit, "failed", "none",
                        f"failed: {failure}; {budget_used(ev.attempts, policy.max_attempts)}", ev)
    cls = "out_of_memory" if ev.oom_in_stdout else last.failure_class
    reason = f"retry: {failure}" + (f" ({cls})" if cls and cls != "other" else "") + \
        f"; attempt {ev.attempts + 1} of {policy.max_attempts}"
    if after:
        reason += f"; afterok {', '.join(after)}"
    return _planned(unit, "failed", "resubmit", reason, ev, after=after)


def _plan_eval(unit: Unit, ev: UnitEvidence, scheduler_known: bool, policy: Policy,
               up: PlannedUnit | None, up_ev: UnitEvidence | None, up_held: bool = False) -> PlannedUnit:
    log = ev.log
    live = [j for j in ev.jobs if j.live]
    # Only a fine-tune re-run by --replace takes away what was evaluated (apply moves its checkpoints
    # aside). A retry of a failed fine-tune runs the same spec again: an epoch already evaluated stays
    # done, and is never evaluated again because of the retry.
    upstream_replaced = up is not None and up.action in SUBMITTING and up.state in ("done", "outdated")
    complete = log is not None and log.state == "complete"
    if complete and not live:
        unknown = next((j for j in ev.jobs if j.state == UNKNOWN), None)
        if unknown is not None:
            # The log is written before the job exits: until the scheduler answers, the job may
            # still hold its slot, and a watch must not call that converged.
            return _planned(unit, "unknown", "none", f"unknown: log complete; whether job {unknown.job_id} "
                            "has ended is unknown (the scheduler did not answer); will look again", ev)
        if upstream_replaced:
            assert up is not None
            state: State = "outdated" if _made_under_another_spec(unit, ev) else "done"
            return _planned(unit, state, "resubmit", f"replace: {up.key} is re-run; evaluate its new checkpoint",
                            ev, after=(up.key,))
        score = f" ({log.metric} {log.value:.3f})" if log is not None and log.value is not None and log.metric else ""
        return _outdated_or_done(unit, ev, policy, f"done: log complete{score}{_provenance(ev)}")
    if complete and not upstream_replaced and not _made_under_another_spec(unit, ev):
        flight = _in_flight(unit, ev)
        assert flight is not None
        if flight.action == "cancel":
            return flight
        job = live[0]
        if job.state == PENDING:
            # A job that has not started would only repeat a complete log, and may never start at all
            # (its afterok on a fine-tune that failed): the unit is done, the job goes.
            return _planned(unit, "done", "cancel",
                            f"done: log complete; job {job.job_id} has not started and would only repeat it",
                            ev, job_ids=(job.job_id,))
        # The log is written before the job exits: the unit is in flight until the job ends,
        # so a watch never reports convergence with a job still holding a slot.
        return _planned(unit, flight.state, "none", f"finishing: log complete; job {job.job_id} still {job.state}", ev)

    if ev.model_missing and not ev.jobs:
        return _planned(unit, "blocked", "none", "checkpoint_missing: parameters.checkpoint_path "
                        f"{unit.model_path} does not exist and no unit of the experiment writes it", ev)

    ckpt_ready = _checkpoint_ready(unit, up, up_ev)
    if live:
        flight = _in_flight(unit, ev)
        assert flight is not None
        if flight.action == "cancel":
            return flight
        job = live[0]
        if job.state == PENDING and job.reason == DEPENDENCY_NEVER_SATISFIED:
            if ckpt_ready and job.depends_on:
                # The fine-tune failed after writing this epoch: the checkpoint is there, so the job
                # is let go rather than cancelled and submitted again.
                return _planned(unit, "queued", "release",
                                f"checkpoint_ready: epoch_{unit.needs_epoch} is complete although its fine-tune "
                                f"failed; release job {job.job_id}", ev, job_ids=(job.job_id,))
            blocked = up is not None and up.state in ("failed", "blocked") and up.action == "none"
            return _planned(unit, "blocked" if blocked else "waiting", "cancel",
                            f"dependency_failed: job {job.job_id} can never start ({up.key if up else 'upstream'} failed)",
                            ev, job_ids=(job.job_id,))
        if job.state == PENDING and job.depends_on and ckpt_ready:
            return _planned(unit, "queued", "release",
                            f"checkpoint_ready: epoch_{unit.needs_epoch} is complete; release job {job.job_id}",
                            ev, job_ids=(job.job_id,))
        return flight

    if not scheduler_known or _unknown_jobs(ev):
        return _planned(unit, "unknown", "none", "unknown: scheduler state unknown; will look again", ev)

    last = ev.jobs[-1] if ev.jobs else None
    failure = _eval_failure(ev, last)
    if up is not None:
        if up_held and not ckpt_ready:
            return _planned(unit, "waiting", "wait", f"waiting: {up.key} is not selected (--stage/--target) and "
                            f"checkpoint epoch_{unit.needs_epoch} is not complete", ev, untouched=True)
        # A non-final checkpoint left complete by a fine-tune that failed for good is still evaluated.
        if up.state in ("failed", "blocked") and up.action == "none" and not ckpt_ready:
            return _planned(unit, "blocked", "none", f"blocked: {up.key} failed for good", ev)
        if not ckpt_ready:
            if up.action in SUBMITTING or up.state in IN_FLIGHT:
                return _retry_or_submit(unit, ev, policy, last, failure, after=(up.key,))
            if up.state == "unknown":
                return _planned(unit, "waiting", "wait", f"waiting: {up.key} state unknown", ev)
            return _planned(unit, "waiting", "wait",
                            f"waiting: checkpoint epoch_{unit.needs_epoch} of {up.key} is not complete", ev)
    if last is None and log is not None and log.state in ("error", "cancelled", "partial"):
        # A failed log with no job we know of (journal lost): it still counts as an attempt.
        return _planned(unit, "failed", "resubmit", f"retry: {failure}", ev) \
            if policy.max_attempts > 1 else _planned(unit, "failed", "none", f"failed: {failure}", ev)
    return _retry_or_submit(unit, ev, policy, last, failure)


def _provenance(ev: UnitEvidence) -> str:
    """Which log says done, when that is not obvious: adopted from earlier work, or one of several."""
    assert ev.log is not None
    out = f"; adopted by {ev.log_source}" if ev.log_source else ""
    if ev.complete_logs > 1:
        out += f"; newest of {ev.complete_logs} complete logs: {ev.log.path.rsplit('/', 1)[-1]}"
    return out


def _made_under_another_spec(unit: Unit, ev: UnitEvidence) -> bool:
    return ev.produced_fingerprint is not None and ev.produced_fingerprint != unit.fingerprint


def _eval_failure(ev: UnitEvidence, last: Job | None) -> str:
    log = ev.log
    if log is not None and log.state in ("error", "cancelled"):
        msg = f": {log.error}" if log.error else ""
        return f"eval log says {log.state}{msg}"
    if log is not None and log.state == "partial":
        return f"eval log incomplete ({log.completed}/{log.total} samples or a --limit)"
    if log is not None and log.state == "started":
        return "eval log left 'started' by a job that is gone"
    if log is not None and log.state == "unreadable":
        return f"eval log unreadable ({log.error})"
    if last is None:
        return "no job"
    code = f" exit {last.exit_code}" if last.exit_code else ""
    state = "ended" if last.state == GONE else last.state
    return f"job {last.job_id} {state}{code} without a complete log"


def _checkpoint_ready(unit: Unit, up: PlannedUnit | None, up_ev: UnitEvidence | None) -> bool:
    """Is the checkpoint this eval loads complete, and from the fine-tune's current attempt?"""
    if up is None or unit.needs_epoch is None:
        return True  # control and eval-only runs load an existing model
    if up.action in SUBMITTING or up_ev is None:
        return False  # a new attempt will rewrite the checkpoints
    if up.state in ("done", "outdated"):
        return True
    index = unit.needs_epoch
    if index >= len(up_ev.epochs):
        return False
    epoch = up_ev.epochs[index]
    if epoch.state != "complete":
        return False
    final = index == len(up_ev.epochs) - 1
    if final:
        return False  # only the job's clean exit proves the final epoch: wait for done
    live = [j for j in up_ev.jobs if j.live]
    if live and live[0].state == RUNNING and live[0].started_at and epoch.mtime is not None:
        # A checkpoint older than the running attempt is left from a failed one and will be rewritten.
        return epoch.mtime >= live[0].started_at
    return not live or live[0].state == RUNNING
