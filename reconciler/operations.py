"""Operations around a pass: render a unit's files before it is submitted; cancel everything."""

from __future__ import annotations

from reconciler.backends.base import Backend, unit_of_tag
from reconciler.journal import Journal
from reconciler.plan import PlannedUnit
from reconciler.spec.units import Desired, Unit, tag_prefix, units_of_tag


def prepare_unit(desired: Desired, unit: Unit, planned: PlannedUnit) -> None:
    """Render the unit's script and configs if the reconciler owns them (never a user's edited file).

    A retry after running out of memory or time is rendered with a remedy (smaller batch, longer
    limit), journaled so that the next retry builds on it and reports can say what changed.
    """
    from reconciler.plan_notes import remedy_for
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
    owners: dict[str, list[str]] = {}
    for key, history in view.units.items():
        for job_id, _ in history.jobs:
            owners.setdefault(job_id, []).append(key)
    live = []
    for job in sorted(snapshot.jobs.values(), key=lambda j: j.job_id):
        # A job shared by several evals of one checkpoint: cancelled once, journaled for each of them.
        rest = unit_of_tag(job.tag, prefix)
        units = owners.get(job.job_id) or (list(units_of_tag(rest)) if rest is not None else [])
        if job.live:
            live += [(unit, job.job_id) for unit in units]
    if live:
        backend.cancel(list(dict.fromkeys(job_id for _, job_id in live)))
        for unit, job_id in live:
            journal.append("cancelled", unit=unit, job_id=job_id, reason="reconcile cancel")
    return live
