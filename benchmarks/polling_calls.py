"""Scheduler calls of a watch, fixed vs adaptive polling, on the real single-node SLURM cluster (issue 18).

The sweep: R runs x E epochs x 1 task whose fine-tunes sleep (`assets/sleep_trainer.py`, torchtune's
write order) `epoch_seconds` per epoch, and whose evals are the `inspect eval` stand-in
(`assets/bin/inspect`, a 2 s sleep that writes a real log's copy), all on the real cluster: what is
measured is the watch, not the jobs. Time is compressed 60x (`benchmarks/compressed.py`): the
polling floor is 1 s standing for SLURM's default 60 s, the adaptive cap 5 s for its 5 minutes,
and fine-tunes of 3 epochs of 20 s stand for hour-long ones. The two 2 CPUs of the test cluster
run the two fine-tunes; the evals wait behind them, as a sweep waits behind long fine-tunes.

Both watches start from nothing under new experiment names; wrappers first on PATH log every
squeue/sacct/scontrol/sbatch call. Reported: the queries (squeue, sacct, `scontrol show`), the same
per hour of the uncompressed watch they stand for, the time to the `converged` line, and the tail
(from the last job's end to it), both in compressed seconds.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks import real_stack
from benchmarks.makespan import STAND_INS
from benchmarks.slurm_calls import COMMANDS, cluster_up, write_wrappers
from benchmarks.synth import Shape, discard, write_skeleton
from reconciler.engine.loop import load_desired



@dataclass(frozen=True)
class PollingConfig:
    runs: int = 2
    epochs: int = 3
    epoch_seconds: float = 20.0
    eval_seconds: float = 2.0
    interval: float = 1.0  # stands for 60 s
    max_interval: float = 5.0  # the SLURM default: five floors
    compression: float = 60.0


def prepare(exp: Path, name: str, cfg: PollingConfig) -> None:
    discard(exp)
    write_skeleton(exp, name, Shape(cfg.runs, 1, cfg.epochs), eval_seconds=cfg.eval_seconds,
                   seconds_per_epoch=cfg.epoch_seconds, task_names=["sleepy"])
    spec_file = exp / "experiment_summary.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    # The test cluster has 2 CPUs and no GPU: fine-tunes ask for one CPU, as the evals do.
    for run in spec["runs"]:
        run["compute"] = {"gpus": 0, "mem": "1G", "cpus_per_task": 1, "time": "0:10:00"}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False, width=1 << 20))


def env_for(bin_dir: Path, template: Path) -> dict[str, str]:
    env = real_stack.job_env()
    env["PATH"] = os.pathsep.join([str(bin_dir), str(STAND_INS), env["PATH"]])
    env["RECONCILER_BENCH_TEMPLATE"] = str(template)
    repo = str(real_stack.REPO)
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else repo
    return env


def measure_one(workdir: Path, template: Path, cfg: PollingConfig, adaptive: bool) -> dict[str, Any]:
    label = "adaptive" if adaptive else "fixed"
    name = f"poll{label[0]}{uuid.uuid4().hex[:6]}"
    exp = workdir / f"polling-{label}"
    prepare(exp, name, cfg)
    log = workdir / f"polling-{label}.log"
    log.write_text("")
    bin_dir = workdir / f"polling-{label}-bin"
    write_wrappers(bin_dir, log)
    cap = cfg.max_interval if adaptive else cfg.interval
    env = env_for(bin_dir, template)
    env["BENCH_SLURM_FLOOR"] = str(cfg.interval)
    run = real_stack.run_watch(exp, "slurm", cfg.interval, "--max-interval", str(cap), env=env,
                               module="benchmarks.compressed")
    lines = log.read_text().splitlines()
    counts = {c: sum(1 for line in lines if line.split(" ", 1)[0] == c) for c in COMMANDS}
    # `scontrol update` releases a job (an action); `scontrol show job` asks (a query).
    shows = sum(1 for line in lines if line.startswith("scontrol ") and " show " in f" {line} ")
    queries = counts["squeue"] + counts["sacct"] + shows
    desired = load_desired(exp)
    by_job = real_stack.submissions(desired)
    jobs = real_stack.job_records(desired, "slurm", sorted(by_job, key=int))
    last_end = max(j.ended_at or 0.0 for j in jobs.values())
    return {
        "polling": label,
        "max_interval": cap,
        "converged_s": run["converged_s"],
        "tail_s": run["launched"] + run["converged_s"] - last_end,
        "queries": queries,
        # per hour of the uncompressed watch: the compressed run's queries per (converged_s x compression) s
        "queries_per_hour": queries * 3600 / (run["converged_s"] * cfg.compression),
        "intervals_said": [line.split("polling every ", 1)[1].strip() for line in run["stdout"].splitlines()
                           if "polling every " in line],
        **counts,
    }


def measure(workdir: Path, template: Path, cfg: PollingConfig = PollingConfig()) -> dict[str, Any]:
    if not cluster_up():
        return {"skipped": "no SLURM cluster answers `sinfo` (start one with scripts/slurm-up)"}
    rows = [measure_one(workdir, template, cfg, adaptive) for adaptive in (False, True)]
    return {"config": asdict(cfg), "rows": rows}


if __name__ == "__main__":
    import argparse
    import json

    from benchmarks.evallog import make_template

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/reconciler-bench"))
    args = parser.parse_args()
    print(json.dumps(measure(args.workdir, make_template(args.workdir / "template")), indent=1))
    sys.exit(0)
