"""The values a first remedy starts from: what the spec renders for a unit (the choice itself is pure:
plan/remedies.py)."""

from __future__ import annotations

from reconciler.plan.remedies import Remedy
from reconciler.scaffold.resources import resources_for
from reconciler.scaffold.values import find_run, train_values
from reconciler.spec.load import LoadedSpec
from reconciler.spec.units import Unit


def baseline(loaded: LoadedSpec, unit: Unit) -> Remedy:
    """The values the spec renders for a unit: what the first remedy starts from."""
    time = resources_for(loaded, unit).time  # the user config sets no time
    if unit.kind != "finetune":
        return Remedy(time=time)
    values = train_values(loaded, find_run(loaded, unit.run))
    return Remedy(batch_size=values.batch_size, gradient_accumulation_steps=values.gradient_accumulation_steps,
                  time=time)
