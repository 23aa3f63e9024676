"""Where an experiment's file is, and its text when it is small enough to load.

Kept apart from the loader (pydantic, PyYAML): a recalled plan (pass_memo) needs only these.
"""

from __future__ import annotations

from pathlib import Path

SPEC_FILENAME = "experiment_summary.yaml"
LEGACY_FILENAME = "experiment_summary.md"  # cruijff_kit's prose era: read when there is no .yaml
# Real experiment files are 3-20 KB; a synthetic 100,000-unit one about 0.45 MB (see yamlpos).
MAX_FILE_BYTES = 2 * 1024 * 1024


def spec_path(target: Path) -> Path:
    """EXP may be the experiment directory or its experiment_summary.yaml (a directory with only the older
    experiment_summary.md: that file)."""
    if not target.is_dir():
        return target
    path = target / SPEC_FILENAME
    if not path.exists() and (target / LEGACY_FILENAME).is_file():
        return target / LEGACY_FILENAME
    return path


def spec_text(path: Path) -> str | None:
    """The file's text; None when it cannot be read or is too large (the loader then says why, where)."""
    try:
        return path.read_text(encoding="utf-8") if path.stat().st_size <= MAX_FILE_BYTES else None
    except (OSError, UnicodeDecodeError):
        return None
