"""Compare two experiment files as desired states: units added, removed, and changed, with the fields why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from deepdiff import DeepDiff
from deepdiff.helper import notpresent

from reconciler.spec.load import LoadedSpec
from reconciler.spec.units import Unit, canonical, expand, unit_inputs

# A field changing more units than this is summarised by counts instead of unit keys.
LIST_AT_MOST = 3

Change = Literal["changed", "added", "removed"]


@dataclass(frozen=True)
class FieldChange:
    """One spec field path whose change alters fingerprints, and the units it alters."""

    path: str
    change: Change
    old: Any  # None when added (see `change`)
    new: Any  # None when removed
    units: tuple[str, ...]
    described: str  # e.g. "finetune/rank8 and its 2 evals"


@dataclass(frozen=True)
class ChangedUnit:
    key: str
    old_fingerprint: str
    new_fingerprint: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class SpecDiff:
    old_label: str
    new_label: str
    experiment: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[ChangedUnit, ...]
    fields: tuple[FieldChange, ...]
    unchanged: int
    notes: tuple[str, ...] = ()

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary_line(self) -> str:
        if not self.differs:
            return f"Diff: no changes; {self.unchanged} unit(s) unchanged"
        return (f"Diff: {len(self.added)} to add, {len(self.removed)} to remove, {len(self.changed)} changed "
                f"by {len(self.fields)} field(s); {self.unchanged} unchanged")


def diff_specs(old: LoadedSpec, new: LoadedSpec, old_label: str | None = None,
               new_label: str | None = None) -> SpecDiff:
    """Pure: units are matched by key, so reordering runs, matrix entries or tasks changes nothing."""
    old_units = {u.key: u for u in expand(old).units}
    new_units = {u.key: u for u in expand(new).units}
    added = _ordered(k for k in new_units if k not in old_units)
    removed = _ordered(k for k in old_units if k not in new_units)
    by_path: dict[str, tuple[Change, Any, Any, list[str]]] = {}
    changed: list[ChangedUnit] = []
    unchanged = 0
    old_inputs, new_inputs = unit_inputs(old), unit_inputs(new)
    # One global change touches every unit the same way: deepdiff (~1 ms) once per distinct change.
    seen: dict[str, list[tuple[str, Change, Any, Any]]] = {}
    for key in _ordered(k for k in new_units if k in old_units):
        before, after = old_units[key], new_units[key]
        if before.fingerprint == after.fingerprint:
            unchanged += 1
            continue
        was, now = differing(old_inputs(before), new_inputs(after))
        memo = canonical([was, now])
        if memo not in seen:
            seen[memo] = input_changes(was, now)
        paths = []
        for path, change, old_value, new_value in seen[memo]:
            by_path.setdefault(path, (change, old_value, new_value, []))[3].append(key)
            paths.append(path)
        changed.append(ChangedUnit(key, before.fingerprint, after.fingerprint, tuple(paths)))
    units = {**old_units, **new_units}
    fields = tuple(
        FieldChange(path, change, old_value, new_value, tuple(keys), describe_units([units[k] for k in keys]))
        for path, (change, old_value, new_value, keys) in sorted(by_path.items())
    )
    return SpecDiff(
        old_label=old_label if old_label is not None else str(old.path),
        new_label=new_label if new_label is not None else str(new.path),
        experiment=new.spec.experiment.name, added=added, removed=removed, changed=tuple(changed),
        fields=fields, unchanged=unchanged, notes=tuple(_notes(old, new)),
    )


def differing(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inputs that differ, as the fingerprint sees them (`1` and `1.0` differ; equal lists do not)."""
    keys = [k for k in old.keys() | new.keys() if k not in old or k not in new or canonical(old[k]) != canonical(new[k])]
    return {k: old[k] for k in keys if k in old}, {k: new[k] for k in keys if k in new}


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Change, Any, Any]]:
    """(spec field path, change, old, new) for each difference between two units' inputs.

    Order inside a value counts (the fingerprint hashes it in order), so the diff explains every
    fingerprint change the plan will report as outdated.
    """
    out: list[tuple[str, Change, Any, Any]] = []
    for _, levels in DeepDiff(old, new, view="tree").items():
        for level in levels:
            path = field_path(level.path(output_format="list"))
            if level.t1 is notpresent:
                out.append((path, "added", None, level.t2))
            elif level.t2 is notpresent:
                out.append((path, "removed", level.t1, None))
            else:
                out.append((path, "changed", level.t1, level.t2))
    if not out and canonical(old) != canonical(new):
        out.append(("(inputs)", "changed", None, None))  # a difference deepdiff does not name
    return sorted(out, key=lambda c: c[0])


def field_path(parts: list[Any]) -> str:
    """deepdiff's path list -> a spec path: the inputs' key, then `.name` or `[i]` for nested parts."""
    text = str(parts[0]) if parts else ""
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def describe_units(units: list[Unit]) -> str:
    """`finetune/rank8 and its 2 evals`; evals whose fine-tune is not affected are named on their own."""
    finetunes = [u.key for u in units if u.kind == "finetune"]
    chosen = set(finetunes)
    following = {u.key for u in units if u.kind == "eval" and any(d in chosen for d in u.depends_on)}
    others = [u.key for u in units if u.kind == "eval" and u.key not in following]
    parts = []
    if finetunes:
        head = _names(finetunes, "fine-tunes")
        if following:
            owner = "its" if len(finetunes) == 1 else "their"
            head += f" and {owner} {len(following)} eval{'s' if len(following) != 1 else ''}"
        parts.append(head)
    if others:
        parts.append(_names(others, "evals"))
    return "; ".join(parts)


def _names(keys: list[str], noun: str) -> str:
    return ", ".join(keys) if len(keys) <= LIST_AT_MOST else f"{len(keys)} {noun}"


def _ordered(keys: Iterable[str]) -> tuple[str, ...]:
    """Fine-tunes first, then evals, each by key: stable whatever the order in the file."""
    return tuple(sorted(keys, key=lambda k: (not k.startswith("finetune/"), k)))


def _notes(old: LoadedSpec, new: LoadedSpec) -> list[str]:
    notes = []
    if old.spec.experiment.name != new.spec.experiment.name:
        notes.append(f"experiment renamed {old.spec.experiment.name!r} -> {new.spec.experiment.name!r}: "
                     "jobs are tagged by name, so the new name starts a separate experiment")
    # The field's text, not the resolved directory: two copies of one spec side by side are not a move.
    old_dir, new_dir = _dir_field(old), _dir_field(new)
    if old_dir != new_dir:
        notes.append(f"experiment directory changed {old_dir!r} -> {new_dir!r}: "
                     "artifacts under the old one are not seen")
    if old.dialect != new.dialect:
        notes.append(f"dialect changed {old.dialect} -> {new.dialect}: files are laid out differently")
    return notes


def _dir_field(loaded: LoadedSpec) -> str | None:
    return loaded.spec.experiment.dir if loaded.dialect == "v0.3" else loaded.spec.experiment.directory
