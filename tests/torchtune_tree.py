"""Rebuild what a real torchtune 0.6.1 run left on disk, from fixtures/torchtune-0.6.1 (see record.py there).

`materialize(case, dst)` lays down the finished tree; `materialize(case, dst, upto=k)` the tree as
a poller of the output dir saw it at the end of one of its passes (`poll_steps(case)` lists them).
Not by mtime: torchtune copies the base model's files with the base model's mtimes. Not event by
event either: the order within one pass is the listing's, not the order of the writes. Files kept only by their head are extended to their real size (sparse), so a
safetensors header is followed by as many bytes as it says; mtimes are the recorded ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.conftest import FIXTURES

TORCHTUNE = FIXTURES / "torchtune-0.6.1"
BASE_TIME_NS = 1_700_000_000 * 10**9  # recorded mtimes are relative; any fixed origin in the past will do


@dataclass(frozen=True)
class Write:
    path: str
    kind: str
    size: int
    mtime_ns: int
    t_ns: int  # when the poller saw it


def cases() -> list[str]:
    return sorted(p.parent.name for p in TORCHTUNE.glob("*/manifest.json"))


@cache
def manifest(case: str) -> dict:
    return json.loads((TORCHTUNE / case / "manifest.json").read_text())


@cache
def writes(case: str) -> tuple[Write, ...]:
    """Every state of every path the poller saw, in the order it saw them."""
    events = json.loads((TORCHTUNE / case / "events.json").read_text())
    ordered = sorted(events, key=lambda e: e["t_ns"])
    return tuple(Write(e["path"], e["kind"], e["size"], e["mtime_ns"], e["t_ns"]) for e in ordered)


def poll_steps(case: str) -> list[int]:
    """For each pass of the recording poller (20 ms apart), how many writes it had seen by its end."""
    times = [w.t_ns for w in writes(case)]
    # One pass lists a small tree in well under a millisecond; passes are 20 ms apart.
    return [i for i in range(1, len(times) + 1) if i == len(times) or times[i] - times[i - 1] > 5_000_000]


def stdout(case: str) -> str:
    return (TORCHTUNE / case / "stdout.txt").read_text(errors="replace")


def materialize(case: str, dst: Path, upto: int | None = None) -> Path:
    """The output dir of `case` in `dst`: finished, or after the first `upto` writes."""
    if upto is None:
        final = [Write(e["path"], e["kind"], e["size"], e["mtime_ns"], 0) for e in manifest(case)["entries"]]
    else:
        latest: dict[str, Write] = {}
        for write in writes(case)[:upto]:
            latest[write.path] = write
        final = list(latest.values())
    dst.mkdir(parents=True, exist_ok=True)
    for write in sorted(final, key=lambda w: w.path):
        target = dst / write.path
        if write.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        kept = TORCHTUNE / case / "tree" / write.path
        data = kept.read_bytes() if kept.exists() else b""
        with open(target, "wb") as fh:
            fh.write(data[: write.size])
            fh.truncate(write.size)
    # Directories last: writing their files moved their mtimes.
    for write in sorted(final, key=lambda w: w.path.count("/"), reverse=True):
        stamp = BASE_TIME_NS + write.mtime_ns
        os.utime(dst / write.path, ns=(stamp, stamp))
    return dst
