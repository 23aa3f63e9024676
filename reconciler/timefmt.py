"""SLURM time-limit strings (`--time`) to seconds and back."""

from __future__ import annotations

import re

# Words SLURM accepts for "no limit".
UNLIMITED_WORDS = frozenset({"UNLIMITED", "INFINITE"})

_NUMBERS = re.compile(r"\d+(:\d+){0,2}")


def parse_time_limit(text: str) -> int | None:
    """`--time` value -> seconds; None means no limit. Raises ValueError on a malformed value.

    Formats (as sbatch documents them): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
    """
    value = text.strip()
    if value.upper() in UNLIMITED_WORDS or value == "-1":
        return None
    days_text, dash, clock = value.rpartition("-")
    if dash and not days_text.isdigit():
        raise ValueError(f"invalid time limit {text!r}")
    if not _NUMBERS.fullmatch(clock):
        raise ValueError(f"invalid time limit {text!r}")
    parts = [int(p) for p in clock.split(":")]
    if dash:
        # After a day count the fields are hours[:minutes[:seconds]].
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return ((int(days_text) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def format_time_limit(seconds: int) -> str:
    """Seconds -> `D-HH:MM:SS` (or `HH:MM:SS` under a day), a form sbatch accepts."""
    minutes, secs = divmod(int(seconds), 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    clock = f"{hrs:02d}:{mins:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock
