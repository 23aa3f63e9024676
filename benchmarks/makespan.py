"""Makespan on the local backend, three ways, in one run: the reconciler, the sequential order, the lower bound.

The sweep: R runs x E epochs x T tasks. Fine-tunes are `assets/sleep_trainer.py` (sleeps
`epoch_seconds` per epoch, writes each checkpoint as torchtune does). Evals run the `inspect eval`
command line the reconciler renders, answered by `assets/bin/inspect` (first on the jobs' PATH):
it sleeps `eval_seconds` and writes a copy of a real `.eval` log with the cell's metadata. Real
inspect costs 2-3 CPU-seconds to start; a dozen at once on this 2-core machine would measure the
CPU, where a cluster gives each eval its own GPU. All three use the same number of job slots.

1. reconciler: `reconcile apply EXP --watch --backend local`, timed from launch to its `converged`
   line (and to its exit, after it writes summary.md). Evals are submitted with an afterok
   dependency and released as each checkpoint completes.
2. sequential: the workflows' order, driven here with the same renderer and local backend: submit
   every fine-tune, wait for all, then submit every eval, wait for all (same poll interval).
3. lower bound for the same slots, from the durations the jobs had in run 1: max(critical path,
   total work / slots), where the critical path of an eval is the time its fine-tune needed to
   write that epoch's checkpoint (its adapter config's mtime, or the job's end for the last epoch)
   plus the eval's own duration. No schedule on these slots can finish earlier.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.synth import Shape, discard, write_skeleton
from reconciler.jobs import TERMINAL_STATES, Job
from reconciler.backends.base import SubmitRequest
from reconciler.backends.local.backend import LocalBackend
from reconciler.engine.loop import load_desired
from reconciler.spec.units import Desired, Unit, tag_for, tag_prefix

REPO = Path(__file__).resolve().parent.parent
STAND_INS = Path(__file__).resolve().parent / "assets" / "bin"


@dataclass(frozen=True)
class MakespanConfig:
    runs: int = 8
    epochs: int = 3
    tasks: int = 2
    epoch_seconds: float = 8.0
    eval_seconds: float = 2.0
    slots: int = 16
    interval: float = 0.5


def job_env(slots: int, template: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(STAND_INS), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RECONCILER_BENCH_TEMPLATE"] = str(template)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
    env["RECONCILER_LOCAL_SLOTS"] = str(slots)
    env.pop("RECONCILER_CONFIG", None)
    return env


def prepare(exp: Path, name: str, cfg: MakespanConfig) -> None:
    discard(exp)
    # The task file defines `sleepy` and `sleepy2`..`sleepy4`: the spec's task names are inspect task names.
    names = ["sleepy"] + [f"sleepy{t + 1}" for t in range(1, cfg.tasks)]
    write_skeleton(exp, name, Shape(cfg.runs, cfg.tasks, cfg.epochs), eval_seconds=cfg.eval_seconds,
                   seconds_per_epoch=cfg.epoch_seconds, task_names=names)
    # One job per eval, as the sequential order runs them: the `inspect eval` stand-in answers the
    # command line a single eval's script runs, not the grouped job's driver (issue 18's own
    # benchmark, real_stack.py, measures grouping with the real inspect).
    spec_file = exp / "experiment_summary.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["evaluation"]["group_by_checkpoint"] = False
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False, width=1 << 20))


def jobs_of(desired: Desired) -> dict[str, Job]:
    """The last job of every unit, from the local backend's records (found by tag)."""
    prefix = tag_prefix(desired.experiment)
    snapshot = LocalBackend(desired.layout.state_dir / "local").query(prefix, [])
    out: dict[str, Job] = {}
    for job in sorted(snapshot.jobs.values(), key=lambda j: int(j.job_id)):
        assert job.tag is not None
        out[job.tag[len(prefix):]] = job
    return out


def run_reconciler(exp: Path, cfg: MakespanConfig, template: Path) -> dict[str, Any]:
    """Launch `reconcile apply --watch`; time when it reports convergence and when it exits.

    After converging, a watch writes summary.md (with its plot): that is reporting, not waiting
    for results, so makespan is taken at the `converged` line and the exit is reported beside it.
    """
    from benchmarks.real_stack import run_watch

    return run_watch(exp, "local", cfg.interval, env=job_env(cfg.slots, template), timeout=900)


def run_sequential(exp: Path, cfg: MakespanConfig, template: Path) -> float:
    """All fine-tunes, then all evals, through the same renderer and local backend."""
    from reconciler.scaffold.write import sync_unit

    saved, env = dict(os.environ), job_env(cfg.slots, template)
    os.environ.clear()
    os.environ.update(env)  # the job supervisors inherit it, as under `reconcile`
    try:
        started = time.perf_counter()
        desired = load_desired(exp)
        backend = LocalBackend(desired.layout.state_dir / "local", max_concurrent=cfg.slots)
        prefix = tag_prefix(desired.experiment)

        def submit(units: list[Unit]) -> list[str]:
            ids = []
            for unit in units:
                sync_unit(desired, unit, force=True)
                ids.append(backend.submit(SubmitRequest(script=unit.script, name=unit.job_name,
                                                        tag=tag_for(desired.experiment, unit.key),
                                                        workdir=unit.workdir, stdout=unit.stdout)))
            return ids

        def wait(ids: list[str]) -> None:
            while True:
                snapshot = backend.query(prefix, ids)
                if all(snapshot.jobs[i].state in TERMINAL_STATES for i in ids):
                    bad = [i for i in ids if snapshot.jobs[i].state != "COMPLETED"]
                    if bad:
                        raise RuntimeError(f"sequential order: jobs {bad} did not complete")
                    return
                time.sleep(cfg.interval)

        wait(submit([u for u in desired.units if u.kind == "finetune"]))
        wait(submit([u for u in desired.units if u.kind == "eval"]))
        return time.perf_counter() - started
    finally:
        os.environ.clear()
        os.environ.update(saved)


def checkpoint_offsets(desired: Desired, jobs: dict[str, Job]) -> dict[tuple[str, int], float]:
    """Seconds from a fine-tune's start until each of its checkpoints was complete."""
    out: dict[tuple[str, int], float] = {}
    for unit in desired.units:
        if unit.kind != "finetune":
            continue
        job = jobs[unit.key]
        assert job.started_at is not None and job.ended_at is not None
        for i, epoch in enumerate(unit.epochs):
            if i == len(unit.epochs) - 1:
                ready = job.ended_at  # the final epoch counts once the job exited 0
            else:
                ready = (desired.layout.epoch_dir(unit.run, epoch) / "adapter_config.json").stat().st_mtime
            out[(unit.run, epoch)] = ready - job.started_at
    return out


def lower_bound(desired: Desired, jobs: dict[str, Job], slots: int) -> dict[str, float]:
    offsets = checkpoint_offsets(desired, jobs)
    durations = {key: job.ended_at - job.started_at for key, job in jobs.items()
                 if job.ended_at is not None and job.started_at is not None}
    paths = [durations[u.key] for u in desired.units if u.kind == "finetune"]
    paths += [offsets[(u.run, u.epoch)] + durations[u.key] for u in desired.units
              if u.kind == "eval" and u.epoch is not None]
    critical = max(paths)
    work = sum(durations[u.key] for u in desired.units)
    evals = [durations[u.key] for u in desired.units if u.kind == "eval"]
    return {"critical_path": critical, "work_over_slots": work / slots, "bound": max(critical, work / slots),
            "eval_median": statistics.median(evals), "eval_max": max(evals),
            "finetune_median": statistics.median(paths[: sum(1 for u in desired.units if u.kind == "finetune")])}


def release_latency(desired: Desired, jobs: dict[str, Job]) -> dict[str, float]:
    """How long each eval waited after its checkpoint was complete (detection + release + slot)."""
    ready: list[float] = []
    for unit in desired.units:
        if unit.kind != "eval" or unit.epoch is None:
            continue
        ft = jobs[f"finetune/{unit.run}"]
        last = unit.epoch == max(desired.by_key()[f"finetune/{unit.run}"].epochs)
        done_at = ft.ended_at if last else \
            (desired.layout.epoch_dir(unit.run, unit.epoch) / "adapter_config.json").stat().st_mtime
        started = jobs[unit.key].started_at
        assert done_at is not None and started is not None
        ready.append(started - done_at)
    return {"median": statistics.median(ready), "max": max(ready)}


def measure(workdir: Path, cfg: MakespanConfig, template: Path) -> dict[str, Any]:
    a, b = workdir / "makespan-reconciler", workdir / "makespan-sequential"
    prepare(a, "makespan", cfg)
    prepare(b, "makespan", cfg)
    rec = run_reconciler(a, cfg, template)
    reconciler_s, launched, stdout = rec["converged_s"], rec["launched"], rec["stdout"]
    sequential_s = run_sequential(b, cfg, template)
    desired_a = load_desired(a)
    jobs_a = jobs_of(desired_a)
    bound = lower_bound(desired_a, jobs_a, cfg.slots)
    passes = sum(1 for line in stdout.splitlines() if " pass " in line)
    return {
        "config": asdict(cfg),
        "units": len(desired_a.units),
        "reconciler_s": reconciler_s,
        "reconciler_exit_s": rec["exit_s"],
        "sequential_s": sequential_s,
        **{f"bound_{k}": v for k, v in bound.items()},
        "release_latency": release_latency(desired_a, jobs_a),
        # Where the reconciler's time beyond the jobs' own goes: before the first job starts, and
        # after the last one ends (noticing it, then exiting).
        "reconciler_first_start_s": min(j.started_at or 0.0 for j in jobs_a.values()) - launched,
        "reconciler_tail_s": launched + reconciler_s - max(j.ended_at or 0.0 for j in jobs_a.values()),
        "progress_lines": passes,
        "ratio_reconciler_to_bound": reconciler_s / bound["bound"],
        "ratio_sequential_to_reconciler": sequential_s / reconciler_s,
        "ratio_sequential_to_bound": sequential_s / bound["bound"],
    }
