"""`reconcile cancel`: cancel every live job of the experiment, journaling each one."""

from __future__ import annotations

from reconciler.backends.base import Backend
from reconciler.jobs import unit_of_tag
from reconciler.journal import Journal
from reconciler.spec.units import Desired, tag_prefix


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
