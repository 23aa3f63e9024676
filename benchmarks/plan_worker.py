"""Measure one experiment's offline plan through the Python API, beside its stat floor, in one process.

    python -m benchmarks.plan_worker EXP --reps 3          # prints one JSON object

Imports are done before any timing (the CLI rows measure them). `cold` removes the reconciler's
`.eval` header cache and its remembered plan first, so every log header is read (and counted); the
OS page cache is warm for every measurement (a shared machine's caches are not ours to drop).
`warm` is a new `reconcile plan` process's pass with nothing changed since the last: it recalls the
remembered plan after stat-ing every input (pass_memo.py). `replan` follows a change to one log: the
spec is read, validated and expanded, the journal and the header cache parsed, and the pass runs.
`watch` is a pass of a running watch with nothing changed since its last pass (it stats every input
and returns the last result), `watch_changed` one after a log changed (the spec's expansion reused).
The floor is `os.stat` on every path in the experiment's `artifact-paths.txt`, timed in this same
process, interleaved with the plan repetitions so that load from other processes hits both alike.
Times are the minimum over repetitions, wall and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from reconciler.engine import memo as pass_memo
from reconciler.engine.gcpause import gc_paused, without_gc
from reconciler.engine.loop import HEADER_CACHE, PassMemory, load_desired, watch_pass
from reconciler.observe import evallogs
from reconciler.observe.reader import Reader
from reconciler.engine.planning import plan_pass
from reconciler.plan.planner import Policy
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired, expand


def stat_floor(paths: list[str]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        os.stat(path)
    return time.perf_counter() - wall, time.process_time() - cpu


def listing_floor(log_dirs: list[str], checkpoint_paths: list[str]) -> tuple[float, float]:
    """The least I/O any observer of this experiment does: a log's name is chosen by inspect, so
    each eval's log directory is listed and its logs stat'ed; checkpoint files are stat'ed."""
    wall, cpu = time.perf_counter(), time.process_time()
    for path in checkpoint_paths:
        os.stat(path)
    for directory in log_dirs:
        with os.scandir(directory) as entries:
            for entry in entries:
                entry.stat()
    return time.perf_counter() - wall, time.process_time() - cpu


@without_gc
def fresh_desired(exp: Path) -> Desired:
    """What a new `reconcile plan` process does: read, validate and expand the spec."""
    return expand(load_spec(exp))


def policy_of(desired: Desired) -> Policy:
    return Policy(max_attempts=desired.loaded.spec.reconciler.max_attempts)


def one_plan(exp: Path) -> tuple[float, float, dict[str, Any]]:
    """One offline `reconcile plan`, as the CLI runs it (the remembered plan when its inputs hold)."""
    wall, cpu = time.perf_counter(), time.process_time()
    # A new `reconcile plan` process runs without the collector (gcpause.one_shot_command).
    with gc_paused():
        the_plan, desired = plan_pass(exp, ("auto", None, ()), policy_for=policy_of, backend_for=None)
        # Timed before the collector resumes: the process would end here (and freeze it at exit).
        elapsed = time.perf_counter() - wall, time.process_time() - cpu
    return elapsed[0], elapsed[1], {"units": len(the_plan.units), "states": dict(the_plan.state_counts()),
                                    "recalled": desired is None}


def one_watch_pass(exp: Path, memory: PassMemory) -> tuple[float, float]:
    """A pass of a watch after its first: the spec unchanged, so `load_desired` returns the expansion
    the watch's memory has; the collector stays on between passes and each pass pauses it."""
    wall, cpu = time.perf_counter(), time.process_time()
    desired = load_desired(exp, memory)
    watch_pass(desired, None, policy_of(desired), act=False, memory=memory)
    return time.perf_counter() - wall, time.process_time() - cpu


def settle(paths: list[str]) -> None:
    """Wait until no input is younger than the memo's racy window: a plan does not trust one that is
    (a freshly generated experiment; a real sweep's files are minutes or days old)."""
    newest = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in map(os.stat, paths))
    wait = (newest + pass_memo.RACY_NS) / 1e9 + 0.5 - time.time()
    if wait > 0:
        time.sleep(wait)


def measure(exp: Path, reps: int) -> dict[str, Any]:
    paths = [p for p in (exp / "artifact-paths.txt").read_text().split("\n") if p]
    reads = [0]
    real_read = evallogs._read_with_retry

    def counting_read(path: Path, mtime: float, reader: Reader) -> evallogs.LogSummary:
        reads[0] += 1
        return real_read(path, mtime, reader)

    evallogs._read_with_retry = counting_read  # type: ignore[assignment]
    stat_floor(paths)  # warm the dentry cache the same way for everybody
    for path in paths:  # and the page cache: "cold" means the reconciler's cache is empty, not the OS's
        if path.endswith(".eval"):
            with open(path, "rb") as fh:
                fh.read()
    settle(paths)
    state = exp / ".reconciler"
    cache = state / HEADER_CACHE
    cache.unlink(missing_ok=True)
    (state / pass_memo.MEMO_NAME).unlink(missing_ok=True)
    log_dirs = [str(u.log_dir) for u in fresh_desired(exp).units if u.log_dir is not None]
    checkpoints = [p for p in paths if not p.endswith(".eval")]
    logs = [p for p in paths if p.endswith(".eval")]
    floors = [stat_floor(paths)]
    listings = [listing_floor(log_dirs, checkpoints)]
    cold_wall, cold_cpu, info = one_plan(exp)
    cold_reads = reads[0]
    warm, replan, watch, watch_changed, recalled, replan_reads = [], [], [], [], [], []
    memory = PassMemory()  # the watch's, kept across the measured passes as a running watch keeps it
    one_watch_pass(exp, memory)  # a watch's first pass; the passes measured below come after it
    for rep in range(reps):
        floors.append(stat_floor(paths))
        listings.append(listing_floor(log_dirs, checkpoints))
        reads[0] = 0
        watch.append(one_watch_pass(exp, memory))  # nothing changed since the watch's last pass
        wall, cpu, warm_info = one_plan(exp)
        warm.append((wall, cpu))
        recalled.append(warm_info["recalled"])
        if reads[0]:
            raise AssertionError(f"a warm plan read {reads[0]} headers again: the cache did not hold")
        # One log changed since (a distinct mtime): both plan again, and remember once it settled.
        when = time.time() - 3600 - rep
        os.utime(logs[rep % len(logs)], (when, when))
        settle([logs[rep % len(logs)]])
        wall, cpu, _ = one_plan(exp)
        replan.append((wall, cpu))
        replan_reads.append(reads[0])
        watch_changed.append(one_watch_pass(exp, memory))
    return {
        "units": info["units"],
        "states": info["states"],
        "artifact_paths": len(paths),
        "logs": len(logs),
        "cold_wall": cold_wall,
        "cold_cpu": cold_cpu,
        "cold_header_reads": cold_reads,
        "warm_wall": min(w for w, _ in warm),
        "warm_cpu": min(c for _, c in warm),
        "warm_recalled": all(recalled),
        "replan_wall": min(w for w, _ in replan),
        "replan_cpu": min(c for _, c in replan),
        "replan_header_reads": max(replan_reads),
        "watch_wall": min(w for w, _ in watch),
        "watch_cpu": min(c for _, c in watch),
        "watch_changed_wall": min(w for w, _ in watch_changed),
        "watch_changed_cpu": min(c for _, c in watch_changed),
        "floor_wall": min(w for w, _ in floors),
        "floor_cpu": min(c for _, c in floors),
        "listing_floor_wall": min(w for w, _ in listings),
        "cache_bytes": cache.stat().st_size if cache.exists() else 0,
        "memo_bytes": (state / pass_memo.MEMO_NAME).stat().st_size if (state / pass_memo.MEMO_NAME).exists() else 0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plan_worker")
    parser.add_argument("exp", type=Path)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    json.dump(measure(args.exp.resolve(), args.reps), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
