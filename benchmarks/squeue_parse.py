"""Parse a 50,000-line `squeue` answer with reconciler/backends/slurm/parse.py.

The answer is built from the lines captured on the test cluster (fixtures/slurm/squeue.txt:
pending with dependencies, running, an array, names with spaces and `|`), renumbered and
re-tagged so that every line is a distinct job of a 100k-unit experiment. The floor is splitting
the same text into lines and fields, the least any parser must do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reconciler.backends.slurm.parse import SEP, parse_squeue

CAPTURE = Path(__file__).resolve().parent.parent / "fixtures" / "slurm" / "squeue.txt"


def build_answer(lines: int) -> str:
    captured = [line.split(SEP) for line in CAPTURE.read_text().splitlines() if SEP in line]
    out = []
    for i in range(lines):
        fields = list(captured[i % len(captured)])
        job_id = 1_000_000 + i
        fields[0] = f"{job_id}_[1-3]" if "_" in fields[0] else str(job_id)
        if fields[3] not in ("(null)", ""):
            fields[3] = f"afterok:{job_id - 7}(unfulfilled)"
        if fields[6] != "(null)":
            fields[6] = f"reconciler:bench100k:eval/run{i // 100:04d}/task{i % 20:02d}/epoch{i % 5}"
        out.append(SEP.join(fields))
    return "\n".join(out) + "\n"


def measure(lines: int = 50_000, reps: int = 3) -> dict[str, Any]:
    text = build_answer(lines)
    parse, floor = [], []
    jobs = []
    for _ in range(reps):
        started = time.perf_counter()
        for line in text.splitlines():
            line.split(SEP, 7)
        floor.append(time.perf_counter() - started)
        started = time.perf_counter()
        jobs = parse_squeue(text)
        parse.append(time.perf_counter() - started)
    if len(jobs) != lines:
        raise AssertionError(f"parsed {len(jobs)} jobs from {lines} lines")
    return {"lines": lines, "bytes": len(text), "parse_s": min(parse), "floor_s": min(floor),
            "ratio": min(parse) / min(floor)}
