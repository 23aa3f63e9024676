"""Synthetic experiments of any size (runs x tasks x epochs), with the artifacts a real one leaves.

    python -m benchmarks.synth OUT --units 10000            # about 99 runs x 20 tasks x 5 epochs
    python -m benchmarks.synth OUT --runs 8 --tasks 2 --epochs 3

What is written (v0.3.4 layout, the one `reconciler/spec/layout.py` defines):

- `experiment_summary.yaml`: R fine-tuned runs, T tasks, every task on every epoch, plus data,
  a base model directory and the task script.
- checkpoints as torchtune writes them: `{run}/artifacts/epoch_N/` with adapter and base-model
  files; non-final epochs are followed by `recipe_state/recipe_state.pt` beside them (torchtune 0.6.1); the adapter safetensors has a valid header
  (the reconciler parses it for the final epoch).
- eval logs: copies of one real `.eval` log (`evallog.py`) in `{run}/eval/{task}_epochN/logs/`,
  with the unit key and fingerprint in their metadata, as the rendered job scripts write them.
- SLURM stdout files beside them (`slurm-{job}.out`), and the reconciler's journal (intent,
  submitted, job_state) for every job, with job ids far above a test cluster's.

Outcome mix (by unit index, so the same every time): every fine-tune complete; of the evals,
90% done (complete log), 2% failed (an `error` log and a FAILED job: a retry), 8% missing
(nothing yet: a submission). `artifact-paths.txt` lists the files whose existence is the
evidence (one per eval log, the checkpoint files per epoch): the stat floor stats exactly these.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from benchmarks.assets.checkpoint import ADAPTER_BYTES, BASE_FILES, write_checkpoint
from benchmarks.evallog import SLEEP_TASK, EvalCopier, make_template, write_task_data
from reconciler.spec.load import load_spec
from reconciler.spec.units import Unit, expand, tag_for

FORMAT = 5  # bump when what is generated changes: older directories are then regenerated
FIRST_JOB_ID = 50_000_000
TASKS_DEFAULT = 20
EPOCHS_DEFAULT = 5
DONE, FAILED, MISSING = "done", "failed", "missing"


@dataclass(frozen=True)
class Shape:
    runs: int
    tasks: int
    epochs: int

    @property
    def units(self) -> int:
        return self.runs * (1 + self.tasks * self.epochs)

    @classmethod
    def for_units(cls, units: int, tasks: int = TASKS_DEFAULT, epochs: int = EPOCHS_DEFAULT) -> Shape:
        return cls(runs=max(1, round(units / (1 + tasks * epochs))), tasks=tasks, epochs=epochs)


def eval_outcome(index: int) -> str:
    slot = index % 50
    if slot < 45:
        return DONE
    if slot == 45:
        return FAILED
    return MISSING


def spec_text(name: str, shape: Shape, *, seconds_per_epoch: float = 0.0,
              command: str = "python -m benchmarks.assets.sleep_trainer --config {config}",
              model_api: str = "mockllm/model", task_names: list[str] | None = None) -> str:
    # Evals ask for little and no GPU: the single-node test cluster has no gres and 2 CPUs (the
    # benchmarks submit only evals there; resources do not enter fingerprints). Runs carry no
    # `compute`: a 100k-unit file stays well under the loader's bound on values (yamlpos.MAX_NODES).
    compute = {"gpus": 0, "mem": "1G", "cpus_per_task": 1, "time": "0:10:00"}
    runs = [{"name": f"run{r:04d}", "type": "fine-tuned", "model": "tiny",
             "parameters": {"lora_rank": 4 << (r % 3), "lr": [1e-5, 5e-5, 1e-4, 3e-4][r % 4]}}
            for r in range(shape.runs)]
    names = task_names or [f"task{t:02d}" for t in range(shape.tasks)]
    tasks = [{"name": name, "script": "sleep_task.py", "dataset": "same", "description": f"synthetic task {t}"}
             for t, name in enumerate(names)]
    matrix = [{"run": run["name"], "tasks": [t["name"] for t in tasks], "epochs": list(range(shape.epochs))}
              for run in runs]
    spec = {
        "experiment": {"name": name, "project": "benchmarks", "question": "How fast is a pass at this size?",
                       "date": "2026-11-29", "dir": "."},
        "tools": {"preparation": "command", "command": command, "evaluation": "inspect-ai",
                  "model_api": model_api},
        "controls": {"system_prompt": "", "prompt": "{input}", "dataset_type": "chat_completion",
                     "epochs": shape.epochs, "batch_size": 8, "seed": 14,
                     "seconds_per_epoch": seconds_per_epoch},
        "models": {"base": [{"name": "tiny", "path": "base_model", "size_gb": 0.0001}]},
        "data": {"training": {"path": "data/data.json", "dataset_label": "data", "format": "json"}},
        "runs": runs,
        "evaluation": {"scorers": [{"name": "includes"}], "tasks": tasks, "matrix": matrix, "compute": compute},
    }
    return yaml.safe_dump(spec, sort_keys=False, width=1 << 20)


def write_skeleton(out: Path, name: str, shape: Shape, *, eval_seconds: float = 0.0, **spec_kw: object) -> None:
    """The experiment file, its data, a base model directory and the task script."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment_summary.yaml").write_text(spec_text(name, shape, **spec_kw))  # type: ignore[arg-type]
    write_task_data(out / "data" / "data.json", eval_seconds=eval_seconds)
    base = out / "base_model"
    base.mkdir(exist_ok=True)
    for fname, text in BASE_FILES.items():
        (base / fname).write_text(text)
    (base / "model.safetensors").write_bytes(ADAPTER_BYTES)
    shutil.copyfile(SLEEP_TASK, out / "sleep_task.py")


def trainer_stdout(unit: Unit, job_id: int, epochs: int) -> str:
    lines = ["Running LoRAFinetuneRecipeSingleDevice with resolved config:", "",
             f"output_dir: {unit.workdir / 'artifacts'}", f"epochs: {epochs}", "batch_size: 8", ""]
    for epoch in range(epochs):
        bar = "".join(f"\r{epoch + 1}|{epoch * 25 + s}|Loss: {2.5 - 0.05 * s:.4f}: {4 * s:3d}%| {s}/25"
                      for s in range(1, 26))
        lines += [bar, "Validation loss: 1.0000", "Starting checkpoint save...",
                  f"Checkpoint saved in 0.01 seconds. (job {job_id})"]
    lines.append(f"Training finished: {epochs} epochs")
    return "\n".join(lines) + "\n"


def eval_stdout(unit: Unit, log_name: str, failed: bool) -> str:
    status = "RuntimeError: CUDA error: an illegal memory access was encountered" if failed else \
        "includes\naccuracy  1.000\nstderr    0.000"
    return (f"╭{'─' * 78}╮\n│{unit.task} (8 samples): mockllm/model{' ' * 40}│\n╰{'─' * 78}╯\n"
            f"run: {unit.run}, epoch: {unit.epoch}\n\ntotal time: 0:00:01\n\n{status}\n\nLog: logs/{log_name}\n")


def generate(out: Path, shape: Shape, template: Path, name: str | None = None,
             all_done: bool = False) -> dict[str, object]:
    """Write the experiment at `out` (replacing what is there); returns its manifest.

    `all_done`: every eval has its complete log (a finished experiment) instead of the mix.
    """
    started = time.monotonic()
    discard(out)
    name = name or f"synth{shape.units}"
    write_skeleton(out, name, shape)
    desired = expand(load_spec(out))
    copier = EvalCopier(template)
    journal: list[str] = []
    floor: list[str] = []
    counts = {DONE: 0, FAILED: 0, MISSING: 0}
    now = time.time() - 86_400
    job_ids: dict[str, int] = {}
    next_id = FIRST_JOB_ID

    def record(event: str, **fields: object) -> None:
        journal.append(json.dumps({"ts": round(now, 3), "event": event, **fields}, separators=(",", ":"),
                                  sort_keys=True))

    def submitted(unit: Unit, state: str, exit_code: int) -> int:
        nonlocal next_id
        next_id += 1
        tag = tag_for(desired.experiment, unit.key)
        record("intent", unit=unit.key, fingerprint=unit.fingerprint, tag=tag, action="submit",
               reason="missing: nothing submitted yet")
        after = [str(job_ids[d]) for d in unit.depends_on if d in job_ids]
        record("submitted", unit=unit.key, job_id=str(next_id), fingerprint=unit.fingerprint, after=after)
        record("job_state", unit=unit.key, job_id=str(next_id), state=state, exit_code=exit_code)
        return next_id

    eval_index = 0
    for unit in desired.units:
        if unit.kind == "finetune":
            job = submitted(unit, "COMPLETED", 0)
            job_ids[unit.key] = job
            out_dir = desired.layout.output_dir(unit.run)
            for i, n in enumerate(unit.epochs):
                floor += map(str, write_checkpoint(desired.layout.epoch_dir(unit.run, n), n,
                                                   final=i == len(unit.epochs) - 1, rank=8))
            (out_dir / "logs").mkdir(parents=True, exist_ok=True)
            (out_dir / f"slurm-{job}.out").write_text(trainer_stdout(unit, job, len(unit.epochs)))
            continue
        outcome = DONE if all_done else eval_outcome(eval_index)
        eval_index += 1
        counts[outcome] += 1
        assert unit.log_dir is not None and unit.task is not None
        unit.log_dir.mkdir(parents=True, exist_ok=True)
        if outcome == MISSING:
            continue
        job = submitted(unit, "COMPLETED" if outcome == DONE else "FAILED", 0 if outcome == DONE else 1)
        digest = hashlib.sha256(unit.key.encode()).hexdigest()
        created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now + eval_index))
        log_name = f"{created[:19].replace(':', '-')}-00-00_{unit.task}_{digest[:22]}.eval"
        metadata = {"run": unit.run, "epoch": unit.epoch, "is_finetuned": True, "source_model": "tiny",
                    "reconciler_unit": unit.key, "reconciler_fingerprint": f"fp-{unit.fingerprint}"}
        header, start = copier.header_for(task=unit.task, created=created, eval_id=digest[22:44],
                                          metadata=metadata, model_path=str(unit.model_path),
                                          status="success" if outcome == DONE else "error")
        log_path = unit.log_dir / log_name
        copier.write(log_path, header, start)
        floor.append(str(log_path))
        stdout = Path(str(unit.stdout).replace("%j", str(job)))
        stdout.write_text(eval_stdout(unit, log_name, outcome == FAILED))

    state_dir = desired.layout.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "journal.jsonl").write_text("\n".join(journal) + "\n")
    (out / "artifact-paths.txt").write_text("\n".join(floor) + "\n")
    manifest: dict[str, object] = {
        "format": FORMAT, "name": name, "all_done": all_done, **asdict(shape), "units": len(desired.units),
        "evals": counts, "artifact_paths": len(floor), "template": str(template),
        "template_bytes": copier.size, "seconds": round(time.monotonic() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def discard(path: Path) -> None:
    """Move an old directory out of the way, into `.trash/` beside it, for `empty_trash` to delete.

    Deleting 300,000 files takes minutes on a disk mounted with `discard` (this one): far longer
    than writing them. The benchmark run deletes the trash in the background when it ends.
    """
    if not path.exists():
        return
    trash = path.parent / ".trash"
    trash.mkdir(exist_ok=True)
    os.replace(path, trash / f"{path.name}-{os.getpid()}-{time.monotonic_ns()}")


def empty_trash(workdir: Path) -> bool:
    """Delete `.trash/` in a detached, low-priority process; True when there was something to delete."""
    trash = workdir / ".trash"
    if not trash.is_dir() or not any(trash.iterdir()):
        return False
    doomed = workdir / f".trash-deleting-{os.getpid()}-{time.monotonic_ns()}"
    os.replace(trash, doomed)
    argv = ["rm", "-rf", "--", str(doomed)]
    if shutil.which("ionice"):
        argv = ["ionice", "-c", "3", *argv]
    subprocess.Popen(["nice", "-n", "19", *argv], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return True


def ensure(out: Path, shape: Shape, template: Path, fresh: bool = False, name: str | None = None,
           all_done: bool = False) -> dict[str, object]:
    """Reuse `out` when it was generated alike (format, shape, name, mix); otherwise generate it.

    Only offline plans and finished experiments are reused: they leave the artifacts as they were
    (a plan only writes the header cache, which each cold measurement removes first).
    """
    want = name or f"synth{shape.units}"
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if not fresh and manifest.get("format") == FORMAT and manifest.get("name") == want and \
                bool(manifest.get("all_done")) == all_done and \
                (manifest["runs"], manifest["tasks"], manifest["epochs"]) == (shape.runs, shape.tasks, shape.epochs):
            manifest["reused"] = True
            return dict(manifest)
    except (OSError, ValueError, KeyError):
        pass
    return generate(out, shape, template, name=want, all_done=all_done)


def floor_paths(out: Path) -> list[str]:
    return [p for p in (out / "artifact-paths.txt").read_text().split("\n") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synth", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--units", type=int, default=None, help="about this many units (20 tasks x 5 epochs per run)")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=TASKS_DEFAULT)
    parser.add_argument("--epochs", type=int, default=EPOCHS_DEFAULT)
    parser.add_argument("--template-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) /
                        "reconciler-bench" / "template")
    args = parser.parse_args(argv)
    shape = Shape.for_units(args.units, args.tasks, args.epochs) if args.units else \
        Shape(args.runs, args.tasks, args.epochs)
    manifest = generate(args.out, shape, make_template(args.template_dir))
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
