"""Which files a pass looked at, with their stat as it was before the pass read them.

A pass records while `recording()` is active; outside it every function here is a no-op, so the
observers call them unconditionally. The record is what `pass_memo` checks to reuse a plan: if every
path stats the same, the pass would read the same bytes and plan the same.

A stat is reduced to (mtime_ns, ctime_ns, size, inode), or None when the path cannot be stat'ed.
A file replaced by rename changes its inode, a file rewritten in place its mtime and ctime, a file
created or removed its directory's: the observers record the directories they list for that
reason. The ctime, as git's index keeps it, catches a rewrite whose mtime was set back (`cp -p`,
`rsync --inplace -t`, `touch -r`): no tool can set it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

Stat = tuple[int, int, int, int] | None

# The record of the pass in progress, if any (one at a time: a pass is not re-entrant).
_ACTIVE: list[dict[str, Stat]] = []


@contextmanager
def recording() -> Iterator[dict[str, Stat]]:
    record: dict[str, Stat] = {}
    _ACTIVE.append(record)
    try:
        yield record
    finally:
        _ACTIVE.remove(record)


def active() -> bool:
    return bool(_ACTIVE)


def stat_key(path: str) -> Stat:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in a path from a hand-edited journal
        return None
    return _key(st)


def _key(st: os.stat_result) -> Stat:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)  # as `unchanged` compares, inline


def note(path: str, st: os.stat_result) -> None:
    """A stat the observer already took (before reading the file). The first stat of a path wins."""
    if _ACTIVE and path not in _ACTIVE[-1]:
        _ACTIVE[-1][path] = _key(st)


def note_path(path: str | os.PathLike[str]) -> None:
    """Stat `path` now, before the observer reads it."""
    if _ACTIVE:
        key = os.fspath(path)
        if key not in _ACTIVE[-1]:
            _ACTIVE[-1][key] = stat_key(key)


def unchanged(paths: list[str], stats: list[Stat]) -> bool:
    """Whether every path stats as recorded; stops at the first that does not (the loop is the
    floor's: a stat and a tuple per path, so `_key` is written out rather than called)."""
    if len(paths) != len(stats):
        return False
    stat = os.stat
    for path, known in zip(paths, stats):
        try:
            st = stat(path)
        except (OSError, ValueError):
            if known is not None:
                return False
            continue
        if known != (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino):
            return False
    return True
