"""The mark a rendered script carries in its header (the spec fingerprint it was rendered from), and its reader.

Written by scaffold (desired side), read by observation and the plan's notes (actual side): neither
side imports the other for it."""

from __future__ import annotations

from pathlib import Path

FINGERPRINT_MARK = "# reconciler-fingerprint:"


def read_script_fingerprint(script: Path) -> str | None:
    """The fingerprint a rendered script carries in its header (None: not ours, or absent).

    A pass that reads it notes the path for the plan memo (observe.inputs) first."""
    try:
        with open(script, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(8), fh):
                if line.startswith(FINGERPRINT_MARK):
                    return line[len(FINGERPRINT_MARK):].strip() or None
    except OSError:
        return None
    return None
