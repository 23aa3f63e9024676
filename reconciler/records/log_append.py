"""Appending entries to a log, crash-safe: one write under an flock, then fsync; a tail a crash left
cut short is cut back to the start of its entry first."""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from reconciler.apply.crashpoints import crash_point

# The start of an entry; used to cut an entry left half-written by a crash.
ENTRY_START = re.compile(rb"(?m)^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")
TAIL_BYTES = 65536


def append_entries(path: Path, texts: list[str]) -> None:
    """Append entries with one write, then fsync. Holds an flock so two writers never interleave.

    A crash can leave a last entry cut short; before appending, such a tail is cut back to the
    start of its entry, so a half `SUBMIT_JOB` can never be paired with a later `Job ID:`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a log planted as a symlink (to ~/.bashrc, say) must not make us append to its target.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = _repair_tail(fd)
        tail = os.pread(fd, 2, size - 2) if size >= 2 else b""
        data = _join(texts, tail if size else b"\n\n").encode()
        crash_point("log-write", lambda: os.write(fd, data[: len(data) // 2]))
        written = os.write(fd, data)
        if written != len(data):
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _join(texts: list[str], tail: bytes) -> str:
    """Blocks are set apart by a blank line, also after one-line entries; one-liners stack."""
    out, ends_blank = [], tail.endswith(b"\n\n")
    for text in texts:
        if text.count("\n") > 1 and not ends_blank:
            out.append("\n")
        out.append(text)
        ends_blank = text.endswith("\n\n")
    return "".join(out)


def _repair_tail(fd: int) -> int:
    """Cut an entry a crash left without its final newline; returns the file size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = max(0, size - TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    starts = [m.start() for m in ENTRY_START.finditer(tail)]
    if starts:
        cut = start + starts[-1]
        os.ftruncate(fd, cut)
        return cut
    # Not our entry (someone else's text without a newline): end its line instead of cutting it.
    os.write(fd, b"\n\n")
    return size + 2
