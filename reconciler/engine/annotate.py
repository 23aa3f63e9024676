"""What the pure planner cannot know, added to a plan's reasons: who owns a unit's script, which remedy a retry takes."""

from __future__ import annotations

from dataclasses import replace

from reconciler.journal import JournalView
from reconciler.observe.reader import Reader
from reconciler.spec.fingerprint import read_script_fingerprint
from reconciler.plan.planner import SUBMITTING, Plan, PlannedUnit
from reconciler.scaffold.remedies import remedy_for
from reconciler.spec.units import Desired, Unit


def annotate(the_plan: Plan, desired: Desired, view: JournalView, reader: Reader | None = None) -> Plan:
    """Reasons of units about to be submitted gain the script's ownership and the retry's remedy.

    Costs one header read per submitting unit whose script exists (through the pass's `reader`):
    nothing is rendered here.
    """
    units, read = desired.by_key(), reader or Reader()
    notes = [_with_notes(p, units[p.key], desired, view, read) if p.action in SUBMITTING else p
             for p in the_plan.units]
    return replace(the_plan, units=tuple(notes))


def _with_notes(p: PlannedUnit, unit: Unit, desired: Desired, view: JournalView, reader: Reader) -> PlannedUnit:
    extra = []
    owner, script = script_note(unit, reader)
    if script:
        extra.append(script)
    remedy, _ = remedy_for(desired, unit, p, view.history(unit.key).last_remedy)
    # A script the reconciler does not own is retried as it is: no remedy reaches it.
    if remedy is not None and owner != "foreign":
        extra.append(f"remedy: {remedy.reason}" if remedy.reason else "remedy kept from the last retry")
    return replace(p, reason="; ".join([p.reason, *extra])) if extra else p


def script_note(unit: Unit, reader: Reader) -> tuple[str, str]:
    """("foreign" | "drift" | "", what to tell the user) for the unit's existing script."""
    if not reader.lexists(unit.script):
        return "", ""
    found = read_script_fingerprint(unit.script, reader.open)
    if found is None:
        return "foreign", f"script {unit.script.name} was not rendered by the reconciler: used as it is"
    if found != unit.fingerprint:
        return "drift", f"script rendered from an older spec ({found[:8]}): re-rendered before submission"
    return "", ""
