"""The one way a pass reads the files it observes: a Reader, which records each path's stat first.

A pass makes a Reader and hands it to every observer; observers stat, list, open and read only
through it, so a reader of a new file cannot forget to record it. A recording Reader (`Reader({})`)
keeps the first stat of every path it touched, before the read; that record is what the memo
(engine.memo, engine.loop.watch_pass) checks to reuse a plan: if every path stats the same, the
pass would read the same bytes and plan the same. A Reader without a record reads the same files
and records nothing (a one-off observation outside a pass that is remembered).

A stat is reduced to (mtime_ns, ctime_ns, size, inode), or None when the path cannot be stat'ed.
A file replaced by rename changes its inode, a file rewritten in place its mtime and ctime, a file
created or removed its directory's: a listing records the directory for that reason. The ctime, as
git's index keeps it, catches a rewrite whose mtime was set back (`cp -p`, `rsync --inplace -t`,
`touch -r`): no tool can set it.
"""

from __future__ import annotations

import os
from typing import BinaryIO

Stat = tuple[int, int, int, int] | None
StrPath = str | os.PathLike[str]


class Reader:
    """Stat, list and read files, recording each path's stat (when `record` is not None) the first time
    the path is touched, before its bytes are read. Errors are os's own (OSError), as without it."""

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Stat] | None = None):
        self.record = record

    def stat(self, path: StrPath) -> os.stat_result:
        record = self.record
        if record is None:
            return os.stat(path)
        key = os.fspath(path)
        try:
            st = os.stat(key)
        except (OSError, ValueError):  # ValueError: a NUL byte in a path from a hand-edited journal
            record.setdefault(key, None)
            raise
        if key not in record:
            record[key] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        return st

    def exists(self, path: StrPath) -> bool:
        try:
            self.stat(path)
        except (OSError, ValueError):
            return False
        return True

    def is_dir(self, path: StrPath) -> bool:
        try:
            st = self.stat(path)
        except (OSError, ValueError):
            return False
        return (st.st_mode & 0o170000) == 0o040000  # stat.S_ISDIR, without the call

    def lexists(self, path: StrPath) -> bool:
        """Whether the path exists or is a (dangling) symlink. Records the stat of what it points to:
        a link made or removed later changes its directory, and what it points to its own stat."""
        return self.exists(path) or os.path.islink(path)

    def scandir(self, path: StrPath) -> list[os.DirEntry[str]]:
        """A directory's entries (OSError as os.scandir), the directory recorded first: a file added or
        removed later changes its mtime. Stat an entry with `entry_stat` to record it too."""
        if self.record is not None:
            self.touch(path)
        with os.scandir(path) as entries:
            return list(entries)

    def entry_stat(self, entry: os.DirEntry[str]) -> os.stat_result:
        """The stat of a listed entry (OSError as DirEntry.stat), recorded under its path."""
        st = entry.stat()
        record = self.record
        if record is not None and entry.path not in record:
            record[entry.path] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        return st

    def open(self, path: StrPath) -> BinaryIO:
        """The file opened for reading bytes (OSError as open), its stat recorded first."""
        if self.record is not None:
            self.touch(path)
        return open(path, "rb")

    def read_bytes(self, path: StrPath) -> bytes:
        with self.open(path) as fh:
            return fh.read()

    def read_text(self, path: StrPath) -> str:
        return self.read_bytes(path).decode("utf-8")

    def touch(self, path: StrPath) -> None:
        """Record the path's stat (if it is not yet recorded) without reading it."""
        record = self.record
        if record is None:
            return
        key = os.fspath(path)
        if key not in record:
            try:
                st = os.stat(key)
            except (OSError, ValueError):
                record[key] = None
                return
            record[key] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def unchanged(paths: list[str], stats: list[Stat]) -> bool:
    """Whether every path stats as recorded; stops at the first that does not (the loop is the
    floor's: a stat and a tuple per path, so nothing is called but os.stat)."""
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
