"""Process identities for the local backend: a pid plus its start time, so a reused pid is never mistaken."""

from __future__ import annotations

import os
from pathlib import Path

# Without /proc (macOS) only existence can be checked, and pid reuse goes undetected.
_HAS_PROC = os.path.exists("/proc/self/stat")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, or None if it is gone."""
    if not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "S", 0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def process_identity(pid: int) -> list[int] | None:
    """`[pid, start ticks]` of a live process: a pid alone may be reused after it exits."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return [pid, stat[1]]


def _same_process(identity: list[int] | None, allow_zombie: bool) -> bool:
    if not identity:
        return False
    pid, start = identity
    stat = _proc_stat(pid)
    if stat is None or (stat[0] in ("Z", "X") and not allow_zombie):
        return False
    return stat[1] == start


def is_alive(identity: list[int] | None) -> bool:
    """Whether this exact process (not a later one with the same pid) still runs."""
    return _same_process(identity, allow_zombie=False)


def kill_group(identity: list[int] | None, sig: int) -> None:
    """Signal the process group led by this exact process (jobs run as group leaders)."""
    # An unreaped (zombie) leader still pins its pid, so its group id cannot have been reused.
    if _same_process(identity, allow_zombie=True):
        assert identity is not None
        try:
            os.killpg(identity[0], sig)
        except (ProcessLookupError, PermissionError):
            pass
