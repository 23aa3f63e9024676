"""The backend an experiment was applied with, remembered in `.reconciler/backend.json`.

`apply` writes it; `--backend auto` and the plan memo's key read it (see reconciler.app.backend)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from reconciler.fsutil import atomic_write_text

RECORD_NAME = "backend.json"
NAMES = ("local", "slurm")


def recorded_backend(state_dir: Path) -> str | None:
    """The backend the experiment was last applied with, or None (never applied, or an unreadable record)."""
    try:
        data = json.loads((state_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    name = data.get("backend") if isinstance(data, dict) else None
    return name if name in NAMES else None


def record_backend(state_dir: Path, name: str) -> str | None:
    """Remember `name` for this experiment; returns a warning when it could not be written."""
    if name not in NAMES or recorded_backend(state_dir) == name:
        return None
    text = json.dumps({"backend": name, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
    try:
        atomic_write_text(state_dir / RECORD_NAME, text)
    except OSError as exc:
        return (f"cannot record the backend in {state_dir / RECORD_NAME}: {exc.strerror or exc}; "
                f"later commands need --backend {name}")
    return None
