"""Render a unit's files before it is submitted (with the remedy a retry takes)."""

from __future__ import annotations

from reconciler.journal import Journal
from reconciler.plan.planner import PlannedUnit
from reconciler.spec.units import Desired, Unit


def prepare_unit(desired: Desired, unit: Unit, planned: PlannedUnit, journal: Journal | None = None) -> None:
    """Render the unit's script and configs if the reconciler owns them (never a user's edited file).

    A retry after running out of memory or time is rendered with the remedy the plan carries (smaller
    batch, longer limit; chosen by engine/annotate.py), and a new one is journaled so that the next
    retry builds on it and reports can say what changed.
    `journal`: the pass's (its reads share what the pass folded); None: the experiment's.
    """
    from reconciler.scaffold.write import sync_unit

    choice = planned.remedy if planned.action == "resubmit" else None
    # Units that have not started (or are being re-run) may take the spec's current rendering.
    report = sync_unit(desired, unit, force=planned.action == "resubmit" or planned.state == "missing",
                       remedy=None if choice is None else choice.remedy)
    # Not when the script is the user's: it runs as it is.
    if choice is not None and choice.new and report.remedy is not None:
        (journal or Journal(desired.layout.state_dir)).append("remedy", unit=unit.key, **report.remedy.to_dict())
