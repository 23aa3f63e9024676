"""`reconcile cancel`: cancel every live job of the experiment, journaling each one."""

from __future__ import annotations

from reconciler.backends.base import Backend
from reconciler.jobs import unit_of_tag
from reconciler.journal import Journal
from reconciler.spec.units import Desired, tag_prefix, units_of_tag


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
