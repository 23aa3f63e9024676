"""`--stage` and `--target`: which units a pass may act on (Terraform's -target, over unit keys)."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from reconciler.errors import UsageError
from reconciler.spec.units import Unit

STAGES = ("finetune", "eval")


def select_units(units: Iterable[Unit], stage: str | None, targets: tuple[str, ...]) -> frozenset[str] | None:
    """The keys a pass may act on; None when neither option is given (every unit).

    `targets` are unit keys or globs (`eval/rank4/*`, `*/epoch0`); each must match a unit, and each
    unit matched brings the units it depends on (its fine-tune), as Terraform's -target does.
    `stage` keeps only units of that kind: `--stage eval` runs the evals whose checkpoints exist (or
    whose fine-tunes are already in flight) and never starts a fine-tune.
    """
    if stage is None and not targets:
        return None
    if stage is not None and stage not in STAGES:
        raise UsageError(f"--stage {stage!r}: choose {' or '.join(STAGES)}")
    by_key = {u.key: u for u in units}
    if targets:
        chosen: set[str] = set()
        for pattern in targets:
            matched = [key for key in by_key if fnmatchcase(key, pattern)]
            if not matched:
                raise UsageError(f"--target {pattern!r} matches no unit of this experiment; unit keys look like "
                                 "finetune/RUN, eval/RUN/TASK/epochN or eval/RUN/TASK/base, and globs such as "
                                 "'eval/RUN/*' work (`reconcile plan` lists them)")
            chosen.update(matched)
        todo = list(chosen)
        while todo:
            for dependency in by_key[todo.pop()].depends_on:
                if dependency in by_key and dependency not in chosen:
                    chosen.add(dependency)
                    todo.append(dependency)
    else:
        chosen = set(by_key)
    if stage is not None:
        chosen = {key for key in chosen if by_key[key].kind == stage}
        if not chosen:
            what = f"--stage {stage} with --target {' '.join(targets)}" if targets else f"--stage {stage}"
            raise UsageError(f"{what} selects no unit: there is no {stage} unit among them")
    return frozenset(chosen)
