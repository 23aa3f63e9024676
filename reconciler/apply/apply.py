"""Execute a plan through a backend. The only writer: intent is journaled before every submission."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.apply.artifacts import move_aside
from reconciler.backends.base import Backend, SubmitRequest
from reconciler.jobs import Snapshot, unit_of_tag
from reconciler.apply.crashpoints import crash_point
from reconciler.errors import BackendError, BackendUnavailable, ReconcilerError, SubmitDeferred
from reconciler.journal import Journal, JournalView
from reconciler.plan.planner import Plan, PlannedUnit
from reconciler.spec.units import Desired, Unit, tag_for


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
        if unit is None and (unit := unit_of_tag(job.tag, prefix)) is not None:
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
               prepare: Callable[[Desired, Unit, PlannedUnit], None] | None = None) -> ApplyResult:
    """Cancel, release, then submit fine-tunes before the evals that wait on them (afterok)."""
    result = ApplyResult()
    units = desired.by_key()
    live_ids = {p.key: p.job_id for p in plan.units if p.state in ("queued", "running") and p.job_id}
    live_count = sum(1 for j in (snapshot.jobs.values() if snapshot else ()) if j.live)

    for p in plan.units:
        if p.action == "cancel":
            if _guard(result, p, lambda: backend.cancel(list(p.job_ids))):
                for job_id in p.job_ids:
                    journal.append("cancelled", unit=p.key, job_id=job_id, reason=p.reason)
                    result.events.append(Event(p.key, "cancelled", p.reason, job_id))
        elif p.action == "release":
            job_id = p.job_ids[0]
            if _guard(result, p, lambda: backend.release(job_id)):
                journal.append("released", unit=p.key, job_id=job_id)
                result.events.append(Event(p.key, "released", p.reason, job_id))

    new_ids: dict[str, str] = {}
    last_finetune_submit = 0.0
    qos_limit: str | None = None  # set when sbatch refused a job for a cap on queued jobs
    refusals: list[str] = []  # permanent sbatch errors of this pass, in a row
    for p in sorted((p for p in plan.units if p.action in ("submit", "resubmit")), key=lambda p: p.kind != "finetune"):
        if result.scheduler_down:
            break
        if len(refusals) >= SAME_REFUSALS_TO_STOP and len(set(refusals[-SAME_REFUSALS_TO_STOP:])) == 1:
            # The same refusal again and again (a GPU request on a cluster without GPUs, a wrong
            # account) would be the same for every job: stop asking the shared controller.
            result.events.append(Event(p.key, "deferred", f"sbatch refused {len(refusals)} jobs in a row "
                                       f"({refusals[-1]}); next pass"))
            continue
        if qos_limit is not None:
            # The cap refuses every further job too: do not load the controller with sbatch calls.
            result.events.append(Event(p.key, "deferred", f"QOS limit{qos_limit}; next pass"))
            continue
        if options.max_submit is not None and live_count >= options.max_submit:
            result.events.append(Event(p.key, "deferred", f"max-submit {options.max_submit} reached; next pass"))
            continue
        deps = []
        blocked = False
        for key in p.after:
            job = new_ids.get(key) or live_ids.get(key)
            if job is None:
                blocked = True  # its upstream submission failed this pass
            else:
                deps.append(job)
        if blocked:
            result.events.append(Event(p.key, "deferred", "upstream was not submitted; next pass"))
            continue
        unit = units[p.key]
        if p.kind == "finetune" and options.stagger_seconds and last_finetune_submit:
            wait = options.stagger_seconds - (time.monotonic() - last_finetune_submit)
            if wait > 0:
                options.sleep(wait)
        try:
            if p.state in ("done", "outdated"):
                for old, new in move_aside(desired, unit):
                    journal.append("moved_aside", unit=p.key, src=str(old), dst=str(new))
                    result.events.append(Event(p.key, "moved_aside", f"{old} -> {new}"))
            if prepare is not None:
                prepare(desired, unit, p)
        except (OSError, ReconcilerError) as exc:
            detail = f"cannot prepare: {exc}"
            if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
                # The filesystem's trouble, not the unit's: no attempt is spent, the unit stays
                # missing, and the pass submits nothing more (the next units would meet it too).
                result.errors.append(f"{p.key}: {detail} (not counted as an attempt: the next pass tries again)")
                result.events.append(Event(p.key, "failed_submit", detail))
                result.held_by_filesystem = f"{p.key}: {detail}"
                break
            # Journaled like a refused submission: it counts against the budget, so a watch
            # does not try the same broken unit forever.
            journal.append("submit_failed", unit=p.key, fingerprint=p.fingerprint, error=detail)
            result.errors.append(f"{p.key}: {detail}")
            result.events.append(Event(p.key, "failed_submit", detail))
            continue
        tag = tag_for(desired.experiment, p.key)
        journal.append("intent", unit=p.key, fingerprint=p.fingerprint, tag=tag, action=p.action, reason=p.reason)
        crash_point("intent-journaled")
        request = SubmitRequest(script=unit.script, name=unit.job_name, tag=tag, workdir=unit.workdir,
                                depends_on=tuple(deps), stdout=unit.stdout)
        try:
            job_id = backend.submit(request)
            crash_point("submit-returned")
        except BackendUnavailable as exc:
            result.scheduler_down = True
            result.errors.append(f"{p.key}: scheduler unavailable: {exc}")
            break  # the intent stays open: the next pass searches the tag before submitting again
        except SubmitDeferred as exc:
            # A QoS/association cap on queued jobs (MaxSubmitJobs): not permanent, not the unit's
            # fault. The unit stays missing (the record closes the intent) and a later pass, run
            # once jobs have left the queue, submits it; nothing is counted against its budget.
            qos_limit = f" ({exc.limit})" if exc.limit else ""
            journal.append("submit_deferred", unit=p.key, limit=exc.limit, error=str(exc))
            result.events.append(Event(p.key, "deferred", f"QOS limit{qos_limit}; next pass"))
            continue
        except BackendError as exc:
            journal.append("submit_failed", unit=p.key, fingerprint=p.fingerprint, error=str(exc))
            result.errors.append(f"{p.key}: {exc}")
            result.events.append(Event(p.key, "failed_submit", str(exc)))
            refusals.append(str(exc))
            continue
        refusals.clear()
        journal.append("submitted", unit=p.key, job_id=job_id, fingerprint=p.fingerprint, after=list(deps))
        crash_point("job-id-journaled")
        new_ids[p.key] = job_id
        live_count += 1
        if p.kind == "finetune":
            last_finetune_submit = time.monotonic()
        dep = f" afterok:{':'.join(deps)}" if deps else ""
        result.events.append(Event(p.key, "resubmitted" if p.action == "resubmit" else "submitted",
                                   f"job {job_id} ({unit.job_name}){dep}: {p.reason}", job_id))
    return result


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
