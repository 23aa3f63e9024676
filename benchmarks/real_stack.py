"""Time to results on the real stack (issue 18): torchtune and inspect-ai on the tiny model, locally and on SLURM.

The sweep is the demo's (examples/capitalization: real `tune run` LoRA fine-tunes of the tiny
random-weight Llama, real `inspect eval --model hf/local` on the CPU) widened to R runs x E
epochs x T tasks plus the control: the demo's task and T-1 copies of it on other splits of the
same data (a task each, so each has its own log, as on a real sweep). Each configuration is one
`reconcile apply --watch` from nothing to converged, and is measured from what it left:

- jobs and their times: the journal's submissions, the backend's records (local) or `sacct` (SLURM);
- model loads per checkpoint: the eval jobs that loaded a checkpoint (each job loads its model once);
- makespan (launch to the watch's `converged` line) against the lower bound for the same slots,
  max(critical path, work / slots): the critical path of an eval job is the time its fine-tune
  needed to make that checkpoint complete (the recipe state's mtime for a non-final epoch, the
  job's end for the last) plus the eval job's own duration; no schedule on these slots is faster;
- reaction: for every non-final epoch, from the moment its checkpoint was complete (the recipe
  state's mtime) to its eval's release (the journal's `released`, or its submission) and start.

The job slots are what the machine has: 2 cores, so 2 jobs at once, on both backends (the
single-node cluster has 2 CPUs and each job asks for one).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reconciler.jobs import Job
from reconciler.engine.loop import load_desired
from reconciler.observe.checkpoints import RECIPE_STATE
from reconciler.spec.units import Desired, tag_prefix

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "capitalization"
TINY = REPO / "examples" / "tiny-llama"
EXTRA_TASKS = ("capitalization_val", "capitalization_train")
# The demo's task on other splits: a task of its own (its own log), the same model and arguments.
TASKS_PY = '''

@task
def capitalization_val(data_path: str, config_path: str = "", vis_label: str = "", use_chat_template: bool = True) -> Task:
    return task_with(capitalization(data_path, config_path, "validation", vis_label, use_chat_template),
                     name="capitalization_val")


@task
def capitalization_train(data_path: str, config_path: str = "", vis_label: str = "", use_chat_template: bool = True) -> Task:
    return task_with(capitalization(data_path, config_path, "train", vis_label, use_chat_template),
                     name="capitalization_train")
'''


@dataclass(frozen=True)
class RealConfig:
    runs: int = 2
    epochs: int = 2
    tasks: int = 3
    slots: int = 2
    local_interval: float = 1.0
    slurm_interval: float = 10.0
    # The training split repeated this many times: longer fine-tunes, the same evals. SLURM's fixed
    # costs (the poll floor, the stagger between fine-tune submissions) do not grow with a job's
    # length; a longer fine-tune shows what is left of them on a sweep nearer a real one.
    train_repeat: int = 1


def tiny_model() -> Path:
    model = TINY / "model"
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, str(TINY / "make_model.py"), str(model)], check=True, capture_output=True)
    return model


def prepare(exp: Path, name: str, cfg: RealConfig, grouped: bool) -> None:
    """The demo widened to cfg's shape, under `name`, in `exp` (its outputs removed)."""
    if exp.exists():
        shutil.rmtree(exp)
    exp.mkdir(parents=True)
    shutil.copytree(DEMO / "data", exp / "data")
    if cfg.train_repeat > 1:
        words = json.loads((exp / "data" / "words.json").read_text())
        words["train"] = words["train"] * cfg.train_repeat
        (exp / "data" / "words.json").write_text(json.dumps(words))
    task_py = (DEMO / "inspect_task.py").read_text().replace("from inspect_ai import Task, task",
                                                              "from inspect_ai import Task, task, task_with")
    (exp / "inspect_task.py").write_text(task_py + TASKS_PY)
    text = (DEMO / "experiment_summary.yaml").read_text()
    text = re.sub(r'^  name: "capitalization_demo"', f'  name: "{name}"', text, flags=re.MULTILINE)
    text = text.replace('path: "../tiny-llama/model"', f'path: "{tiny_model()}"')
    text = re.sub(r"^  epochs: 2$", f"  epochs: {cfg.epochs}", text, flags=re.MULTILINE)
    rates = ["1e-3", "3e-3", "1e-2", "3e-4"][: cfg.runs]
    text = re.sub(r"^  lr: \[.*\]$", f"  lr: [{', '.join(rates)}]", text, flags=re.MULTILINE)
    compute = '{gpus: 0, cpus_per_task: 1, mem: 4G, time: "0:15:00", device: cpu, dtype: fp32}'
    runs = "".join(f'  - {{name: "rank4_lr{r}", type: "fine-tuned", model: "tiny-llama", parameters: {{lr: {r}}},\n'
                   f"     compute: {compute}}}\n" for r in rates)
    text = re.sub(r"^runs:\n(?:  - .*\n(?:     .*\n)?)+", "runs:\n" + runs +
                  '  - {name: "base", type: "control", model: "tiny-llama", parameters: {}}\n', text,
                  flags=re.MULTILINE)
    tasks = ["capitalization", *EXTRA_TASKS][: cfg.tasks]
    extra = "".join(f'    - name: "{t}"\n      script: "inspect_task.py"\n      dataset: "same"\n' for t in tasks[1:])
    text = text.replace('      description: "First-letter capitalization accuracy on the 16 test words"\n',
                        '      description: "First-letter capitalization accuracy on the 16 test words"\n' + extra)
    epochs = ", ".join(str(e) for e in range(cfg.epochs))
    listed = ", ".join(f'"{t}"' for t in tasks)
    matrix = "".join(f'    - {{run: "rank4_lr{r}", vis_label: "lr {r}", tasks: [{listed}], epochs: [{epochs}]}}\n'
                     for r in rates)
    matrix += f'    - {{run: "base", vis_label: "base model", tasks: [{listed}], epochs: null}}\n'
    text = re.sub(r"^  matrix:\n(?:    - .*\n)+", "  matrix:\n" + matrix, text, flags=re.MULTILINE)
    text = set_grouping(text, grouped)
    (exp / "experiment_summary.yaml").write_text(text)
    if len(load_desired(exp).units) != cfg.runs * (1 + cfg.epochs * cfg.tasks) + cfg.tasks:
        raise RuntimeError(f"{exp}: the widened demo does not have the expected units")


def set_grouping(text: str, grouped: bool) -> str:
    """Evals grouped per checkpoint (one job, one model load) or one job per eval."""
    flag = "true" if grouped else "false"
    return text.replace("\nevaluation:\n", f"\nevaluation:\n  group_by_checkpoint: {flag}\n", 1)


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    # The jobs find `tune`, `inspect` and python where this interpreter is (sbatch exports the environment).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("RECONCILER_CONFIG", None)
    env["RECONCILER_LOCAL_SLOTS"] = "2"
    return env


def run_watch(exp: Path, backend: str, interval: float, *extra: str, env: dict[str, str] | None = None,
              timeout: float = 1800, module: str = "reconciler") -> dict[str, Any]:
    """`reconcile apply EXP --watch` (`python -m MODULE`), timed from launch to its `converged` line."""
    argv = [sys.executable, "-m", module, "apply", str(exp), "--watch", "--backend", backend,
            "--interval", str(interval), *extra]
    launched, started = time.time(), time.perf_counter()
    converged = None
    lines = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env or job_env()) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            lines.append(line)
            if converged is None and "converged after" in line:
                converged = time.perf_counter() - started
        stderr = proc.stderr.read()
        code = proc.wait(timeout=timeout)
    if code != 0 or converged is None:
        raise RuntimeError(f"reconcile apply --watch exited {code}:\n{''.join(lines)[-3000:]}\n{stderr[-3000:]}")
    return {"converged_s": converged, "exit_s": time.perf_counter() - started, "launched": launched,
            "stdout": "".join(lines)}


def submissions(desired: Desired) -> dict[str, list[tuple[str, float]]]:
    """Per job id, the units it was submitted for and when (a grouped job carries several)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for line in (desired.layout.state_dir / "journal.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "submitted":
            out.setdefault(str(entry["job_id"]), []).append((entry["unit"], float(entry["ts"])))
    return out


def released_at(desired: Desired) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in (desired.layout.state_dir / "journal.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "released":
            out.setdefault(entry["unit"], float(entry["ts"]))
    return out


def job_records(desired: Desired, backend: str, ids: list[str]) -> dict[str, Job]:
    """What the backend recorded of these jobs (times included), by job id."""
    prefix = tag_prefix(desired.experiment)
    if backend == "local":
        from reconciler.backends.local.backend import LocalBackend

        snapshot = LocalBackend(desired.layout.state_dir / "local").query(prefix, ids)
    else:
        from reconciler.backends.slurm.backend import SlurmBackend

        snapshot = SlurmBackend().query(prefix, ids)
    return {job_id: snapshot.jobs[job_id] for job_id in ids if job_id in snapshot.jobs}


def checkpoint_ready(desired: Desired, jobs: dict[str, Job], finetune_job: dict[str, str]) -> dict[tuple[str, int], float]:
    """When each checkpoint was complete: the recipe state written after it (a non-final epoch; torchtune
    0.6.1 rewrites one file, so with 2 epochs its mtime is epoch 0's), or the fine-tune's end (the last)."""
    out: dict[tuple[str, int], float] = {}
    for unit in desired.units:
        if unit.kind != "finetune":
            continue
        job = jobs[finetune_job[unit.key]]
        assert job.ended_at is not None
        out[(unit.run, unit.epochs[-1])] = job.ended_at
        if len(unit.epochs) == 2:
            out[(unit.run, unit.epochs[0])] = (desired.layout.output_dir(unit.run) / RECIPE_STATE).stat().st_mtime
    return out


@dataclass(frozen=True)
class SchedJob:
    job_id: str
    seconds: float
    after: str | None = None  # the fine-tune job whose checkpoint it needs
    offset: float = 0.0  # seconds after that fine-tune's start when the checkpoint was complete


def best_makespan(jobs: list[SchedJob], slots: int, limit: int = 9) -> float | None:
    """The shortest makespan of these jobs on `slots` identical slots, each eval starting no earlier
    than its checkpoint (its fine-tune's start + offset); None when there are too many jobs to try
    every order. Every schedule is matched or beaten by the list schedule of its start order (each
    job on the slot that frees first, as early as it may start), so trying every order is exact."""
    if len(jobs) > limit:
        return None
    best = float("inf")
    for order in itertools.permutations(jobs):
        free = [0.0] * slots
        start: dict[str, float] = {}
        for job in order:
            if job.after is not None and job.after not in start:
                break  # an eval before its fine-tune: not an order any schedule has
            ready = start[job.after] + job.offset if job.after is not None else 0.0
            slot = min(range(slots), key=free.__getitem__)
            start[job.job_id] = max(free[slot], ready)
            free[slot] = start[job.job_id] + job.seconds
        else:
            best = min(best, max(free))
    return best


def analyse(exp: Path, backend: str, run: dict[str, Any], cfg: RealConfig) -> dict[str, Any]:
    desired = load_desired(exp)
    units = desired.by_key()
    by_job = submissions(desired)
    last_job: dict[str, str] = {}
    for job_id, carried in sorted(by_job.items(), key=lambda kv: min(ts for _, ts in kv[1])):
        for key, _ in carried:
            last_job[key] = job_id
    jobs = job_records(desired, backend, sorted(by_job, key=int))
    ready = checkpoint_ready(desired, jobs, last_job)
    ft_start = {key: jobs[last_job[key]].started_at for key in units if units[key].kind == "finetune"}
    # The jobs that ran the final attempt of every eval, each with the checkpoint it loads.
    eval_jobs: dict[str, tuple[str, int | None]] = {}
    for key, job_id in last_job.items():
        if units[key].kind == "eval":
            eval_jobs[job_id] = (units[key].run, units[key].epoch)
    loads: dict[str, int] = {}
    for run_name, epoch in eval_jobs.values():
        label = f"{run_name}/epoch{epoch}" if epoch is not None else run_name
        loads[label] = loads.get(label, 0) + 1
    duration = {job_id: (j.ended_at or 0.0) - (j.started_at or 0.0) for job_id, j in jobs.items()}
    paths = [duration[last_job[k]] for k in units if units[k].kind == "finetune"]
    for job_id, (run_name, epoch) in eval_jobs.items():
        if epoch is None:
            paths.append(duration[job_id])
        else:
            ft_key = f"finetune/{run_name}"
            paths.append(ready[(run_name, epoch)] - (ft_start[ft_key] or 0.0) + duration[job_id])
    finals = {last_job[k] for k in units}
    work = sum(duration[j] for j in finals)
    bound = max(max(paths), work / cfg.slots)
    # The best any scheduler could do with these very jobs on these slots (exact for a few jobs).
    ft_job = {last_job[k]: units[k].run for k in units if units[k].kind == "finetune"}
    shaped = [SchedJob(job_id, duration[job_id]) for job_id in ft_job]
    for job_id, (run_name, epoch) in eval_jobs.items():
        after = next((f for f, r in ft_job.items() if r == run_name), None) if epoch is not None else None
        offset = ready[(run_name, epoch)] - (ft_start[f"finetune/{run_name}"] or 0.0) if after else 0.0
        shaped.append(SchedJob(job_id, duration[job_id], after, offset))
    best = best_makespan(shaped, cfg.slots)
    if best is not None:
        bound = max(bound, best)
    started = [jobs[j].started_at for j in eval_jobs if jobs[j].started_at]
    ended = [jobs[j].ended_at for j in eval_jobs if jobs[j].ended_at]
    release = released_at(desired)
    reaction_release, reaction_start = [], []
    for key, unit in units.items():
        if unit.kind != "eval" or unit.epoch is None or unit.epoch == max(units[f"finetune/{unit.run}"].epochs):
            continue
        at = ready[(unit.run, unit.epoch)]
        job_id = last_job[key]
        submitted = min(ts for k, ts in by_job[job_id] if k == key)
        # Eligible to start: at its release, or when its fine-tune ended first (afterok met), or at its
        # submission if that came after the checkpoint.
        ft_end = jobs[last_job[f"finetune/{unit.run}"]].ended_at or float("inf")
        eligible = max(submitted, min(release.get(key, float("inf")), ft_end))
        reaction_release.append(eligible - at)
        reaction_start.append((jobs[job_id].started_at or 0.0) - at)
    return {
        "units": len(units),
        "jobs": len(by_job),
        "eval_jobs": len(eval_jobs),
        "model_loads_per_checkpoint": statistics.mean(loads.values()),
        "eval_stage_s": max(ended) - min(started),
        "eval_job_seconds": sum(duration[j] for j in eval_jobs),
        "makespan_s": run["converged_s"],
        "critical_path_s": max(paths),
        "work_over_slots_s": work / cfg.slots,
        "bound_s": bound,
        "bound_is_best_schedule": best is not None and best >= max(max(paths), work / cfg.slots),
        "ratio_makespan_to_bound": run["converged_s"] / bound,
        "reaction_release_s": {"median": statistics.median(reaction_release), "max": max(reaction_release)},
        "reaction_start_s": {"median": statistics.median(reaction_start), "max": max(reaction_start)},
        "passes": sum(1 for line in run["stdout"].splitlines() if " pass " in line),
    }


def measure_one(workdir: Path, backend: str, grouped: bool, cfg: RealConfig) -> dict[str, Any]:
    name = f"real{'g' if grouped else 'u'}{backend[0]}{uuid.uuid4().hex[:6]}"
    longer = f"-train{cfg.train_repeat}x" if cfg.train_repeat > 1 else ""
    exp = workdir / f"real-{backend}-{'grouped' if grouped else 'ungrouped'}{longer}"
    prepare(exp, name, cfg, grouped)
    interval = cfg.local_interval if backend == "local" else cfg.slurm_interval
    run = run_watch(exp, backend, interval)
    return {"backend": backend, "grouped": grouped, "interval": interval, **analyse(exp, backend, run, cfg)}


def measure(workdir: Path, cfg: RealConfig = RealConfig(), backends: tuple[str, ...] = ("local", "slurm"),
            grouping: tuple[bool, ...] = (False, True)) -> dict[str, Any]:
    from benchmarks.slurm_calls import cluster_up

    rows = []
    for backend in backends:
        if backend == "slurm" and not cluster_up():
            rows.append({"backend": backend, "skipped": "no SLURM cluster answers `sinfo` (scripts/slurm-up)"})
            continue
        for grouped in grouping:
            rows.append(measure_one(workdir, backend, grouped, cfg))
    return {"config": asdict(cfg), "rows": rows}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/reconciler-bench"))
    parser.add_argument("--backend", action="append", choices=("local", "slurm"))
    parser.add_argument("--grouped", choices=("no", "yes", "both"), default="both")
    parser.add_argument("--train-repeat", type=int, default=1, help="repeat the training split N times")
    args = parser.parse_args()
    grouping = {"no": (False,), "yes": (True,), "both": (False, True)}[args.grouped]
    result = measure(args.workdir, RealConfig(train_repeat=args.train_repeat),
                     backends=tuple(args.backend or ("local", "slurm")), grouping=grouping)
    print(json.dumps(result, indent=1))
