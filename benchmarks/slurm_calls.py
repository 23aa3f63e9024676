"""Scheduler calls per pass at 10k units, on the real cluster, counted by logging wrappers on PATH.

Skipped (with a note) when `sinfo` does not answer. Each step runs the real `reconcile` command
on a synthetic 10k-unit experiment (a fresh experiment name, so its tags meet no other jobs):

1. a finished experiment (every log complete, every job ended): no scheduler call at all;
2. work left, nothing in flight: one squeue, no sacct;
3. `apply --max-submit N`: one squeue for the pass, then N sbatch;
4. N jobs in flight: one squeue, no sacct (squeue knows them all);
5. `cancel`: one squeue, one scancel;
6. the N jobs gone from squeue: one squeue, one sacct (chunked: one per 1,000 ids).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.synth import Shape, ensure, generate

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")


def cluster_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def write_wrappers(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        wrapper = bin_dir / name
        # The exit code is logged too: a call that failed and was retried is the same query again.
        wrapper.write_text(f'#!/bin/bash\n"{real}" "$@"\nrc=$?\necho "{name} rc=$rc $*" >> "{log}"\nexit $rc\n')
        wrapper.chmod(0o755)


def live_ids(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "--me", "--noheader", "--format=%i %k"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if len(line.split()) > 1 and line.split()[1].startswith(prefix)]


def measure(workdir: Path, template: Path, units: int = 10_000, submit: int = 10) -> dict[str, Any]:
    if not cluster_up():
        return {"skipped": "no SLURM cluster answers `sinfo` (start one with scripts/slurm-up)"}
    name = f"bench{uuid.uuid4().hex[:8]}"
    shape = Shape.for_units(units)
    work, done = workdir / "slurm-calls", workdir / "slurm-calls-done"
    generate(work, shape, template, name=name)  # fresh: this one gets jobs, under new tags every time
    ensure(done, shape, template, name="benchslurmdone", all_done=True)  # never submits: reusable
    log = workdir / "slurm-calls.log"
    bin_dir = workdir / "slurm-wrappers"
    write_wrappers(bin_dir, log)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("RECONCILER_CONFIG", None)
    prefix = f"reconciler:{name}:"

    def step(label: str, *args: str) -> dict[str, Any]:
        log.write_text("")
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=env,
                              timeout=300, check=False)
        elapsed = time.perf_counter() - started
        lines = log.read_text().splitlines()
        counts: dict[str, int] = {c: sum(1 for line in lines if line.split(" ", 1)[0] == c) for c in COMMANDS}
        failed = {f"{c}_failed": sum(1 for line in lines if line.split(" ", 1)[0] == c and " rc=0 " not in line)
                  for c in COMMANDS}
        return {"step": label, "command": "reconcile " + " ".join(a if "/" not in a else Path(a).name for a in args),
                "exit": proc.returncode, "seconds": elapsed, **counts, **failed,
                "stderr": proc.stderr.strip().splitlines()[-1:] if proc.returncode not in (0, 2) else []}

    steps = [step("finished experiment, nothing in flight", "plan", str(done), "--backend", "slurm")]
    steps.append(step("work left, nothing in flight", "plan", str(work), "--backend", "slurm"))
    try:
        steps.append(step(f"apply, submits {submit}", "apply", str(work), "--backend", "slurm",
                          "--max-submit", str(submit)))
        steps.append(step(f"{submit} jobs in flight", "plan", str(work), "--backend", "slurm"))
        steps.append(step("cancel", "cancel", str(work), "--backend", "slurm"))
        deadline = time.monotonic() + 120
        while live_ids(prefix) and time.monotonic() < deadline:
            time.sleep(1)
        steps.append(step(f"{submit} jobs ended, gone from squeue", "plan", str(work), "--backend", "slurm"))
    finally:
        leftover = live_ids(prefix)
        if leftover:
            subprocess.run(["scancel", *leftover], capture_output=True, timeout=60, check=False)
    return {"units": shape.units, "experiment": name, "steps": steps}
