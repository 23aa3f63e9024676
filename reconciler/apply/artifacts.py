"""Move a unit's old artifacts aside (never delete them) before it is re-run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from reconciler.observe.observation import unit_logs
from reconciler.spec.units import Desired, Unit


def move_aside(desired: Desired, unit: Unit, now: float | None = None) -> list[tuple[Path, Path]]:
    """Rename the unit's outputs to `<name>.replaced-<timestamp>`; returns (old, new) pairs."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    moved: list[tuple[Path, Path]] = []
    if unit.kind == "finetune":
        out = desired.layout.output_dir(unit.run)
        if out.exists():
            moved.append(_rename(out, out.with_name(f"{out.name}.replaced-{stamp}")))
        return moved
    assert unit.log_dir is not None
    logs = [Path(log.path) for log in unit_logs(desired, unit)]
    if desired.layout.dialect != "v0.2" and unit.log_dir.exists():
        moved.append(_rename(unit.log_dir, unit.log_dir.with_name(f"{unit.log_dir.name}.replaced-{stamp}")))
    # A shared log directory (v0.2's, or earlier work adopted from one): move only this cell's logs.
    for src in logs:
        if src.parent == unit.log_dir and desired.layout.dialect != "v0.2":
            continue  # moved with its directory
        target = src.parent / f"replaced-{stamp}"
        target.mkdir(parents=True, exist_ok=True)
        moved.append(_rename(src, target / src.name))
    return moved


def _rename(src: Path, dst: Path) -> tuple[Path, Path]:
    n = 1
    final = dst
    while final.exists():
        n += 1
        final = dst.with_name(f"{dst.name}.{n}")
    os.rename(src, final)
    return src, final
