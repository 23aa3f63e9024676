"""Operations around a pass: render a unit's files before it is submitted; cancel everything."""

from __future__ import annotations

from reconciler.backends.base import Backend, unit_of_tag
from reconciler.journal import Journal
from reconciler.plan.planner import PlannedUnit
from reconciler.spec.units import Desired, Unit, tag_prefix


def prepare_unit(desired: Desired, unit: Unit, planned: PlannedUnit) -> None:
    """Render the unit's script and configs if the reconciler owns them (never a user's edited file).

    A retry after running out of memory or time is rendered with a remedy (smaller batch, longer
    limit), journaled so that the next retry builds on it and reports can say what changed.
    """
    from reconciler.engine.annotate import remedy_for
    from reconciler.scaffold.write import sync_unit

    remedy, new = None, False
    if planned.action == "resubmit":
        journal = Journal(desired.layout.state_dir)
        remedy, new = remedy_for(desired, unit, planned, journal.read().history(unit.key).last_remedy)
    # Units that have not started (or are being re-run) may take the spec's current rendering.
    report = sync_unit(desired, unit, force=planned.action == "resubmit" or planned.state == "missing",
                       remedy=remedy)
    if new and report.remedy is not None:  # not when the script is the user's: it runs as it is
        journal.append("remedy", unit=unit.key, **report.remedy.to_dict())


def cancel_all(desired: Desired, backend: Backend) -> list[tuple[str, str]]:
    """Cancel every live job tagged with this experiment; journal each one."""
    journal = Journal(desired.layout.state_dir)
    view = journal.read()
    prefix = tag_prefix(desired.experiment)
    snapshot = backend.query(prefix, sorted(view.in_flight_ids()))
    owner = view.unit_of()
    live = []
    for job in sorted(snapshot.jobs.values(), key=lambda j: j.job_id):
        unit = owner.get(job.job_id) or unit_of_tag(job.tag, prefix)
        if job.live and unit is not None:
            live.append((unit, job.job_id))
    if live:
        backend.cancel([job_id for _, job_id in live])
        for unit, job_id in live:
            journal.append("cancelled", unit=unit, job_id=job_id, reason="reconcile cancel")
    return live
