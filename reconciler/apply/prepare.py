"""Render a unit's files before it is submitted (with the remedy a retry takes)."""

from __future__ import annotations

from reconciler.journal import Journal
from reconciler.plan.planner import PlannedUnit
from reconciler.spec.units import Desired, Unit


def prepare_unit(desired: Desired, unit: Unit, planned: PlannedUnit, journal: Journal | None = None) -> None:
    """Render the unit's script and configs if the reconciler owns them (never a user's edited file).

    A retry after running out of memory or time is rendered with a remedy (smaller batch, longer
    limit), journaled so that the next retry builds on it and reports can say what changed.
    `journal`: the pass's (its reads share what the pass folded); None: the experiment's, read afresh.
    """
    from reconciler.scaffold.remedies import remedy_for
    from reconciler.scaffold.write import sync_unit

    remedy, new = None, False
    if planned.action == "resubmit":
        journal = journal or Journal(desired.layout.state_dir)
        remedy, new = remedy_for(desired, unit, planned, journal.read().history(unit.key).last_remedy)
    # Units that have not started (or are being re-run) may take the spec's current rendering.
    report = sync_unit(desired, unit, force=planned.action == "resubmit" or planned.state == "missing",
                       remedy=remedy)
    if new and report.remedy is not None and journal is not None:  # not when the script is the user's: it runs as it is
        journal.append("remedy", unit=unit.key, **report.remedy.to_dict())
