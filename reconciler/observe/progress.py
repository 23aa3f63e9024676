"""When a running fine-tune's current epoch is due, from torchtune's own progress bar in its output.

torchtune 0.6.1's recipes draw a tqdm bar per epoch on stderr, which the job's output file holds
(SLURM's `--output` without `--error`; the local backend merges them the same way). As recorded in
`fixtures/torchtune-0.6.1/*/stdout.txt` and in a SLURM job's `slurm-{id}.out`, each update is

    1|1|Loss: 11.62:   2%|▏         | 1/64 [00:03<03:13,  3.07s/it]

(epoch, global step, loss, then `step/steps [elapsed<remaining, rate]`), separated by carriage
returns. tqdm's remaining time is its estimate from the steps so far; written at the file's mtime,
it says when the epoch ends and its checkpoint is saved. Before the first epoch is on disk this is
the only measured clue to when it comes (the pace of written epochs needs one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# An update is under 200 bytes; a tail of a few updates is enough, and a 100-hour job's file is not read.
TAIL_BYTES = 4096
_BAR = re.compile(rb"(\d+)/(\d+) \[(\d+(?::\d+){1,2})<(\d+(?::\d+){1,2}|\?)")


def remaining_seconds(tail: bytes) -> float | None:
    """tqdm's remaining time in the last progress update of `tail`, or None (no bar, or not yet estimated)."""
    last = None
    for last in _BAR.finditer(tail):
        pass
    if last is None or last.group(4) == b"?":  # a new epoch's first update: no estimate yet
        return None
    seconds = 0
    for part in last.group(4).split(b":"):
        seconds = seconds * 60 + int(part)
    return float(seconds)


def epoch_due(stdout: Path) -> float | None:
    """When the epoch the job is in should end (epoch seconds), from the last bar in its output file."""
    try:
        with open(stdout, "rb") as f:
            st = os.fstat(f.fileno())
            f.seek(max(0, st.st_size - TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    remaining = remaining_seconds(tail)
    return None if remaining is None else st.st_mtime + remaining
