"""What the pure planner cannot know, added to a plan: who owns a unit's script (in its reason), which remedy a
retry takes (chosen here, once per pass: carried on the PlannedUnit for apply, and named in its reason)."""

from __future__ import annotations

from dataclasses import replace

from reconciler.journal import JournalView
from reconciler.observe.reader import Reader
from reconciler.spec.fingerprint import read_script_fingerprint
from reconciler.plan.planner import SUBMITTING, Plan, PlannedUnit
from reconciler.plan.remedies import Remedy, choose_remedy
from reconciler.scaffold.remedies import baseline
from reconciler.spec.units import Desired, Unit


def annotate(the_plan: Plan, desired: Desired, view: JournalView, reader: Reader | None = None) -> Plan:
    """Units about to be submitted carry the retry's remedy; their reasons gain the script's ownership and it.

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
    choice = choose_remedy(p, Remedy.from_dict(view.history(unit.key).last_remedy),
                           lambda: baseline(desired.loaded, unit))
    # A script the reconciler does not own is retried as it is: no remedy reaches it (apply renders
    # nothing into it, so journals nothing).
    if choice is not None and owner != "foreign":
        reason = choice.remedy.reason
        extra.append(f"remedy: {reason}" if reason else "remedy kept from the last retry")
    if not extra and choice is None:
        return p
    return replace(p, reason="; ".join([p.reason, *extra]), remedy=choice)


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
