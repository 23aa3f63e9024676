"""Small file helpers: atomic writes, so a crash never leaves a half-written state file."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A temporary file older than this belongs to a writer that was killed (a write takes milliseconds).
STALE_TEMP_SECONDS = 60.0


def atomic_write_text(path: Path, text: str, mode: int = 0o644,
                      before_rename: Callable[[], None] | None = None) -> None:
    """Write to a temporary file beside `path`, fsync, rename: readers see the old or the new file.

    `before_rename` runs between the two (a crash point for tests, see crashpoints.py).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sweep_stale_temps(path: Path) -> None:
    """Remove temporary files a killed writer left beside `path` (ours only: `.{name}.XXXXXXXX.tmp`)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    try:
        names = [n for n in os.listdir(path.parent) if pattern.match(n)]
    except OSError:
        return
    cutoff = time.time() - STALE_TEMP_SECONDS
    for name in names:
        stale = path.parent / name
        try:
            if stale.lstat().st_mtime < cutoff:
                stale.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to remove: harmless either way
