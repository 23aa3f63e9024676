"""Execute a plan through a backend. The only writer: intent is journaled before every submission."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.apply.artifacts import move_aside
from reconciler.backends.base import Backend, SubmitRequest
from reconciler.jobs import Snapshot, unit_of_tag
from reconciler.apply.crashpoints import crash_point
from reconciler.errors import BackendError, BackendUnavailable, ReconcilerError, SubmitDeferred
from reconciler.journal import Journal, JournalView
from reconciler.plan.planner import Plan, PlannedUnit
from reconciler.spec.units import Desired, Unit, group_tag, tag_for, units_of_tag

if TYPE_CHECKING:
    from reconciler.scaffold.group import GroupJob


# Renders a unit's files before its submission (prepare.prepare_unit); it reads and appends to the
# pass's journal, whose folded reads it shares.
Prepare = Callable[[Desired, Unit, PlannedUnit, Journal], None]


@dataclass(frozen=True, slots=True)
class Event:
    """Something apply did (or failed to do), for logs and progress lines."""

    unit: str
    kind: str  # submitted, resubmitted, cancelled, released, adopted, failed_submit, deferred, moved_aside, job_state
    detail: str
    job_id: str | None = None


@dataclass
class ApplyResult:
    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    scheduler_down: bool = False
    # Set when the file system refused what a submission needed for a passing reason (a full disk,
    # a quota): the unit waits for a later pass, and says why here.
    held_by_filesystem: str | None = None

    @property
    def changed(self) -> bool:
        return any(e.kind not in ("job_state", "deferred") for e in self.events)


# After this many identical permanent refusals in a row, a pass submits nothing more.
SAME_REFUSALS_TO_STOP = 3


@dataclass(frozen=True)
class ApplyOptions:
    max_submit: int | None = None  # cap on this experiment's live jobs (a QoS MaxSubmitJobs)
    stagger_seconds: float = 0.0  # between fine-tune submissions
    sleep: Callable[[float], None] = time.sleep


def record_observed(journal: Journal, view: JournalView, snapshot: Snapshot | None, desired: Desired) -> list[Event]:
    """Cache what the scheduler said: terminal states, and jobs found by tag only (journal rebuilt)."""
    if snapshot is None:
        return []
    events = []
    owner = view.unit_of()
    prefix = tag_for(desired.experiment, "")
    for job in sorted(snapshot.jobs.values(), key=lambda j: j.job_id):
        unit = owner.get(job.job_id)
        if unit is None and (rest := unit_of_tag(job.tag, prefix)) is not None:
            for unit in units_of_tag(rest):  # a shared job: every unit its tag names
                journal.append("adopted", unit=unit, job_id=job.job_id, fingerprint=None, tag=job.tag)
                events.append(Event(unit, "adopted", f"job {job.job_id} found by its tag", job.job_id))
        if unit is not None and not job.live and job.job_id not in view.terminal:
            journal.append("job_state", unit=unit, job_id=job.job_id, state=job.state, exit_code=job.exit_code)
            events.append(Event(unit, "job_state", f"job {job.job_id} {job.state}", job.job_id))
    return events


# Errors a full disk, a quota or a network filesystem gives while it is in trouble: they pass.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.ETIMEDOUT,
                              errno.EAGAIN, errno.EINTR, errno.EMFILE, errno.ENFILE})


def apply_plan(plan: Plan, desired: Desired, backend: Backend, journal: Journal, snapshot: Snapshot | None,
               options: ApplyOptions = ApplyOptions(),
               prepare: Prepare | None = None) -> ApplyResult:
    """Cancel, release, then submit fine-tunes before the evals that wait on them (afterok)."""
    result = ApplyResult()
    units = desired.by_key()
    live_ids = {p.key: p.job_id for p in plan.units if p.state in ("queued", "running") and p.job_id}
    live_count = sum(1 for j in (snapshot.jobs.values() if snapshot else ()) if j.live)

    # A job shared by several units is cancelled or released once; each unit's journal says so.
    cancelled: dict[str, bool] = {}
    released: dict[str, bool] = {}
    for p in plan.units:
        if p.action == "cancel":
            todo = [job for job in p.job_ids if job not in cancelled]
            ok = _guard(result, p, lambda: backend.cancel(todo)) if todo else True
            cancelled.update((job, ok) for job in todo)
            for job_id in p.job_ids:
                if cancelled[job_id]:
                    journal.append("cancelled", unit=p.key, job_id=job_id, reason=p.reason)
                    result.events.append(Event(p.key, "cancelled", p.reason, job_id))
        elif p.action == "release":
            job_id = p.job_ids[0]
            if job_id not in released:
                released[job_id] = _guard(result, p, lambda: backend.release(job_id))
            if released[job_id]:
                journal.append("released", unit=p.key, job_id=job_id)
                result.events.append(Event(p.key, "released", p.reason, job_id))

    new_ids: dict[str, str] = {}
    last_finetune_submit = 0.0
    qos_limit: str | None = None  # set when sbatch refused a job for a cap on queued jobs
    refusals: list[str] = []  # permanent sbatch errors of this pass, in a row
    submitting = sorted((p for p in plan.units if p.action in ("submit", "resubmit")), key=lambda p: p.kind != "finetune")
    by_key = {p.key: p for p in submitting}
    handled: set[str] = set()
    prepared: set[str] = set()  # a group's members, prepared with it, that run alone after all
    queue = list(submitting)
    while queue:
        p = queue.pop(0)
        if p.key in handled:
            continue
        if p.group and p.key not in prepared:
            members = [by_key[k] for k in p.group if k in by_key and k not in handled]
        else:
            members = [p]
        handled.update(m.key for m in members)
        if result.scheduler_down:
            break
        if len(refusals) >= SAME_REFUSALS_TO_STOP and len(set(refusals[-SAME_REFUSALS_TO_STOP:])) == 1:
            # The same refusal again and again (a GPU request on a cluster without GPUs, a wrong
            # account) would be the same for every job: stop asking the shared controller.
            for m in members:
                result.events.append(Event(m.key, "deferred", f"sbatch refused {len(refusals)} jobs in a row "
                                           f"({refusals[-1]}); next pass"))
            continue
        if qos_limit is not None:
            # The cap refuses every further job too: do not load the controller with sbatch calls.
            for m in members:
                result.events.append(Event(m.key, "deferred", f"QOS limit{qos_limit}; next pass"))
            continue
        if options.max_submit is not None and live_count >= options.max_submit:
            for m in members:
                result.events.append(Event(m.key, "deferred", f"max-submit {options.max_submit} reached; next pass"))
            continue
        deps = []
        blocked = False
        for key in p.after:  # a group's members wait for the same upstream (plan._grouped)
            job = new_ids.get(key) or live_ids.get(key)
            if job is None:
                blocked = True  # its upstream submission failed this pass
            else:
                deps.append(job)
        if blocked:
            for m in members:
                result.events.append(Event(m.key, "deferred", "upstream was not submitted; next pass"))
            continue
        if p.kind == "finetune" and options.stagger_seconds and last_finetune_submit:
            wait = options.stagger_seconds - (time.monotonic() - last_finetune_submit)
            if wait > 0:
                options.sleep(wait)
        ready = []
        for m in members:
            if m.key in prepared:
                ready.append(m)
                continue
            try:
                _prepare(desired, units[m.key], m, journal, result, prepare)
                ready.append(m)
            except _HeldByFilesystem:
                break
            except _PrepareFailed:
                continue
        if result.held_by_filesystem is not None:
            break
        if len(ready) > 1:
            try:
                group = _group_job(desired, [units[m.key] for m in ready], ready, write=prepare is not None)
            except (OSError, ReconcilerError) as exc:
                # The shared script could not be written: each unit goes alone, with its own script.
                result.events.append(Event(ready[0].key, "deferred", f"cannot write the shared job's script "
                                           f"({exc}); its units go alone"))
                group = None
            alone = [m for m in ready if group is None or m.key in group.alone]
            prepared.update(m.key for m in alone)
            queue[:0] = alone  # next, each in a job of its own (already prepared)
            handled.difference_update(m.key for m in alone)
            if group is None or not group.keys:
                continue
            ready = [m for m in ready if m.key in group.keys]
            script, name, stdout, workdir = group.script, group.job_name, group.stdout, group.workdir
            tag = group_tag(desired.experiment, [m.key for m in ready])
        elif ready:
            unit = units[ready[0].key]
            script, name, stdout, workdir = unit.script, unit.job_name, unit.stdout, unit.workdir
            tag = tag_for(desired.experiment, ready[0].key)
        else:
            continue
        for m in ready:
            journal.append("intent", unit=m.key, fingerprint=m.fingerprint, tag=tag, action=m.action, reason=m.reason)
        crash_point("intent-journaled")
        request = SubmitRequest(script=script, name=name, tag=tag, workdir=workdir, depends_on=tuple(deps),
                                stdout=stdout)
        try:
            job_id = backend.submit(request)
            crash_point("submit-returned")
        except BackendUnavailable as exc:
            result.scheduler_down = True
            result.errors.append(f"{_keys(ready)}: scheduler unavailable: {exc}")
            break  # the intent stays open: the next pass searches the tag before submitting again
        except SubmitDeferred as exc:
            # A QoS/association cap on queued jobs (MaxSubmitJobs): not permanent, not the unit's
            # fault. The unit stays missing (the record closes the intent) and a later pass, run
            # once jobs have left the queue, submits it; nothing is counted against its budget.
            qos_limit = f" ({exc.limit})" if exc.limit else ""
            for m in ready:
                journal.append("submit_deferred", unit=m.key, limit=exc.limit, error=str(exc))
                result.events.append(Event(m.key, "deferred", f"QOS limit{qos_limit}; next pass"))
            continue
        except BackendError as exc:
            for m in ready:
                journal.append("submit_failed", unit=m.key, fingerprint=m.fingerprint, error=str(exc))
                result.events.append(Event(m.key, "failed_submit", str(exc)))
            result.errors.append(f"{_keys(ready)}: {exc}")
            refusals.append(str(exc))
            continue
        refusals.clear()
        for m in ready:  # one job, recorded against every unit it carries
            journal.append("submitted", unit=m.key, job_id=job_id, fingerprint=m.fingerprint, after=list(deps))
        crash_point("job-id-journaled")
        live_count += 1
        if p.kind == "finetune":
            last_finetune_submit = time.monotonic()
        dep = f" afterok:{':'.join(deps)}" if deps else ""
        shared = f", shared by {len(ready)} units" if len(ready) > 1 else ""
        for m in ready:
            new_ids[m.key] = job_id
            result.events.append(Event(m.key, "resubmitted" if m.action == "resubmit" else "submitted",
                                       f"job {job_id} ({name}{shared}){dep}: {m.reason}", job_id))
    return result


class _PrepareFailed(Exception):
    """The unit could not be prepared (journaled as a refused submission)."""


class _HeldByFilesystem(Exception):
    """The filesystem refused for a passing reason: the pass submits nothing more."""


def _prepare(desired: Desired, unit: Unit, p: PlannedUnit, journal: Journal, result: ApplyResult,
             prepare: Prepare | None) -> None:
    try:
        if p.state in ("done", "outdated"):
            for old, new in move_aside(desired, unit):
                journal.append("moved_aside", unit=p.key, src=str(old), dst=str(new))
                result.events.append(Event(p.key, "moved_aside", f"{old} -> {new}"))
        if prepare is not None:
            prepare(desired, unit, p, journal)
    except (OSError, ReconcilerError) as exc:
        detail = f"cannot prepare: {exc}"
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            # The filesystem's trouble, not the unit's: no attempt is spent, the unit stays
            # missing, and the pass submits nothing more (the next units would meet it too).
            result.errors.append(f"{p.key}: {detail} (not counted as an attempt: the next pass tries again)")
            result.events.append(Event(p.key, "failed_submit", detail))
            result.held_by_filesystem = f"{p.key}: {detail}"
            raise _HeldByFilesystem from exc
        # Journaled like a refused submission: it counts against the budget, so a watch
        # does not try the same broken unit forever.
        journal.append("submit_failed", unit=p.key, fingerprint=p.fingerprint, error=detail)
        result.errors.append(f"{p.key}: {detail}")
        result.events.append(Event(p.key, "failed_submit", detail))
        raise _PrepareFailed from exc


def _group_job(desired: Desired, members: list[Unit], planned: list[PlannedUnit], write: bool) -> GroupJob:
    """The shared job of a group whose members are prepared: its script written (unless `write`
    is off: a pass without preparation submits the paths as they are), with the remedies their plan carries."""
    from reconciler.scaffold.group import group_paths, prepare_group

    if not write:
        return group_paths(desired, members)
    remedies = {p.key: None if p.remedy is None else p.remedy.remedy for p in planned}
    return prepare_group(desired, members, remedies)


def _keys(ready: list[PlannedUnit]) -> str:
    return ready[0].key if len(ready) == 1 else f"{ready[0].key} (+{len(ready) - 1} sharing its job)"


def _guard(result: ApplyResult, p: PlannedUnit, call: Callable[[], None]) -> bool:
    try:
        call()
        return True
    except BackendUnavailable as exc:
        result.scheduler_down = True
        result.errors.append(f"{p.key}: scheduler unavailable: {exc}")
    except BackendError as exc:
        result.errors.append(f"{p.key}: {exc}")
    return False
