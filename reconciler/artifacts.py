"""Move a unit's old artifacts aside (never delete them) before it is re-run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from reconciler.observe.evallogs import HeaderCache, scan_dir
from reconciler.observe.observation import logs_for
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
    if desired.layout.dialect != "v0.2":
        if unit.log_dir.exists():
            moved.append(_rename(unit.log_dir, unit.log_dir.with_name(f"{unit.log_dir.name}.replaced-{stamp}")))
        return moved
    # v0.2: one log directory per run; move only this cell's logs.
    target = unit.log_dir / f"replaced-{stamp}"
    for log in logs_for(unit, scan_dir(unit.log_dir, HeaderCache(None)), "v0.2"):
        src = Path(log.path)
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
