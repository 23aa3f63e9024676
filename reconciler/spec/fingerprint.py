"""The mark a rendered script carries in its header (the spec fingerprint it was rendered from), and its reader.

Written by scaffold (desired side), read by observation and the plan's notes (actual side): neither
side imports the other for it."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FINGERPRINT_MARK = "# reconciler-fingerprint:"


def _open_bytes(path: Path) -> BinaryIO:
    return open(path, "rb")


def read_script_fingerprint(script: Path, open_bytes: Callable[[Path], BinaryIO] = _open_bytes) -> str | None:
    """The fingerprint a rendered script carries in its header (None: not ours, or absent).

    A pass opens it with its Reader's `open` (observe.reader), which records the file for the memo."""
    try:
        with open_bytes(script) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(8), fh):
                if line.startswith(FINGERPRINT_MARK):
                    return line[len(FINGERPRINT_MARK):].strip() or None
    except OSError:
        return None
    return None
