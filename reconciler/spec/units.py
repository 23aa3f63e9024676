"""Expand a spec into units (the atoms of desired state), each with paths, dependencies and a fingerprint."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from reconciler.errors import SpecError
from reconciler.spec.layout import Layout, layout_for
from reconciler.spec.load import LoadedSpec
from reconciler.spec.models import Run, Task

Kind = Literal["finetune", "eval"]


@dataclass(frozen=True, slots=True)
class Unit:
    key: str
    kind: Kind
    run: str
    task: str | None
    epoch: int | None
    depends_on: tuple[str, ...]
    fingerprint: str
    job_name: str
    script: Path
    workdir: Path
    stdout: Path
    # finetune: the epochs it writes (epoch_0 .. epoch_{E-1}).
    epochs: tuple[int, ...] = ()
    # eval: the model it loads (a checkpoint epoch dir, the base model, or a given checkpoint).
    model_path: Path | None = None
    log_dir: Path | None = None
    # eval of a fine-tuned run: the checkpoint epoch that must be complete first.
    needs_epoch: int | None = None
    # eval: the evals with the same value may share one job (one model load); None: always alone.
    # The model it loads, the run (whose overrides shape the job) and every setting of the eval
    # that is not a task argument (evaluation.group_by_checkpoint: false sets None everywhere).
    share: str | None = None


@dataclass(frozen=True)
class Desired:
    """Everything the spec asks for."""

    loaded: LoadedSpec
    layout: Layout
    units: tuple[Unit, ...]

    @property
    def experiment(self) -> str:
        return self.loaded.spec.experiment.name

    def by_key(self) -> dict[str, Unit]:
        return {u.key: u for u in self.units}


def job_stdout(pattern: Path, job_id: str) -> Path:
    """A job's output file: the unit's `--output` pattern with SLURM's `%j` as the job id."""
    return Path(str(pattern).replace("%j", job_id))


def tag_for(experiment: str, key: str) -> str:
    """The job tag (SLURM --comment): which unit a job belongs to, across crashes and journals."""
    return f"reconciler:{experiment}:{key}"


def tag_prefix(experiment: str) -> str:
    return f"reconciler:{experiment}:"


GROUP_JOIN = "+"  # never in a name (spec/models.py NAME_PATTERN): safe to split on


def group_tag(experiment: str, keys: tuple[str, ...] | list[str]) -> str:
    """The tag of a job that carries several evals of one checkpoint:
    `reconciler:{experiment}:eval/{run}/{task1}+{task2}+.../{epochN|base}`. One unit: its own tag."""
    if len(keys) == 1:
        return tag_for(experiment, keys[0])
    parts = [key.split("/") for key in keys]
    run, cell = parts[0][1], parts[0][3]
    if any(len(p) != 4 or p[0] != "eval" or p[1] != run or p[3] != cell for p in parts):
        raise ValueError(f"not evals of one checkpoint: {list(keys)}")
    return tag_for(experiment, f"eval/{run}/{GROUP_JOIN.join(p[2] for p in parts)}/{cell}")


def units_of_tag(rest: str) -> tuple[str, ...]:
    """The unit keys a tag names, given the tag without its `reconciler:{experiment}:` prefix."""
    if GROUP_JOIN not in rest:
        return (rest,)
    parts = rest.split("/")
    if len(parts) != 4 or parts[0] != "eval":
        return (rest,)  # not a tag we write: taken as one (unknown) unit, as before
    return tuple(f"eval/{parts[1]}/{task}/{parts[3]}" for task in parts[2].split(GROUP_JOIN))


def finetune_key(run: str) -> str:
    return f"finetune/{run}"


def eval_key(run: str, task: str, epoch: int | None) -> str:
    return f"eval/{run}/{task}/" + (f"epoch{epoch}" if epoch is not None else "base")


def fingerprint(inputs: dict[str, Any]) -> str:
    """What a unit's artifacts were made from. Journals and `.eval` logs keep these: never change the encoding."""
    return _digest(_ENCODE(inputs))


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def canonical(value: Any) -> str:
    """A value as `fingerprint` sees it: two values differ for it exactly when these texts do."""
    return _ENCODE(value)


def _digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encoded(inputs: dict[str, Any]) -> dict[str, str]:
    """Each input as it stands in `fingerprint`'s canonical text: `"key":value`."""
    return {key: f"{_ENCODE(key)}:{_ENCODE(value)}" for key, value in inputs.items()}


def epoch_fingerprints(shared: dict[str, str]) -> Callable[[int | None], str]:
    """`fingerprint({**inputs, "epoch": epoch})` for any epoch, given `encoded(inputs)`.

    The evals of one run and task differ only by their epoch, and the evals of one run share its
    fine-tune's inputs: encoding those thirty-odd values again for each of 100k units was a third
    of the spec's expansion."""
    keys = sorted(shared)
    if "epoch" in shared:
        raise ValueError("the shared inputs must not hold the epoch")
    cut = bisect.bisect(keys, "epoch")
    head = "{" + "".join(shared[key] + "," for key in keys[:cut]) + '"epoch":'
    tail = "".join("," + shared[key] for key in keys[cut:]) + "}"
    return lambda epoch: _digest(head + _ENCODE(epoch) + tail)


def expand(loaded: LoadedSpec) -> Desired:
    spec = loaded.spec
    layout = layout_for(loaded)
    runs = {r.name: r for r in spec.runs}
    tasks = {t.name: t for t in spec.evaluation.tasks}
    units: list[Unit] = []
    ft_encoded: dict[str, dict[str, str]] = {}
    for run in spec.runs:
        if run.type != "fine-tuned":
            continue
        inputs = finetune_inputs(loaded, run)
        ft_encoded[run.name] = encoded(inputs)
        key = finetune_key(run.name)
        # torchtune saves every epoch; the fine-tune is done when all of them are.
        epochs = tuple(range(spec.controls.epochs))
        units.append(Unit(
            key=key, kind="finetune", run=run.name, task=None, epoch=None, depends_on=(),
            fingerprint=fingerprint(inputs), job_name=run.name,
            script=layout.finetune_script(run.name), workdir=layout.run_dir(run.name),
            stdout=layout.finetune_stdout(run.name), epochs=epochs,
        ))

    # An eval-only run may evaluate a checkpoint a fine-tune of this experiment writes: it waits for it.
    produced = {os.path.normpath(layout.epoch_dir(r.name, n)): (r.name, n)
                for r in spec.runs if r.type == "fine-tuned" for n in range(spec.controls.epochs)}
    grouping = spec.evaluation.group_by_checkpoint
    shared_settings = canonical(share_settings(loaded)) if grouping else ""
    for entry in spec.evaluation.matrix:
        run = runs[entry.run]
        for task_name in entry.tasks:
            task = tasks[task_name]
            epochs: list[int | None] = list(entry.epochs) if run.type == "fine-tuned" and entry.epochs else [None]
            own = eval_inputs(loaded, run, task, None)
            del own["epoch"]
            fingerprint_at = epoch_fingerprints({**ft_encoded.get(run.name, {}), **encoded(own)})
            for epoch in epochs:
                share = _digest(f"{run.name}\0{epoch}\0{shared_settings}") if grouping else None
                unit = _eval_unit(loaded, layout, run, task, epoch, fingerprint_at(epoch), share)
                if run.type == "eval-only" and unit.model_path is not None:
                    maker = produced.get(os.path.normpath(unit.model_path))
                    if maker is not None:
                        unit = replace(unit, depends_on=(finetune_key(maker[0]),), needs_epoch=maker[1])
                units.append(unit)

    if not units:
        raise SpecError(loaded.path, None, None, "evaluation.matrix",
                        "the experiment expands to zero units: nothing to train or evaluate")
    return Desired(loaded=loaded, layout=layout, units=tuple(units))


def share_settings(loaded: LoadedSpec) -> dict[str, Any]:
    """What every eval of a shared job must agree on besides its model and run: the model API and
    the generation settings, which the job passes once to all its tasks."""
    ev = loaded.spec.evaluation
    return {"tools.model_api": loaded.spec.tools.model_api,
            **{f"evaluation.{name}": getattr(ev, name)
               for name in ("temperature", "do_sample", "seed", "max_tokens", "max_connections")},
            "evaluation.compute": ev.compute.model_dump() if ev.compute is not None else None}


def _eval_unit(loaded: LoadedSpec, layout: Layout, run: Run, task: Task, epoch: int | None,
               unit_fingerprint: str, share: str | None = None) -> Unit:
    key = eval_key(run.name, task.name, epoch)
    if run.type == "fine-tuned":
        assert epoch is not None
        model_path = layout.epoch_dir(run.name, epoch)
        depends = (finetune_key(run.name),)
        job_name = f"eval-{task.name}-{run.name}-ep{epoch}"
    else:
        model_path = _model_path(loaded, run)
        depends = ()
        job_name = f"eval-{task.name}-{run.name}-base"
    return Unit(
        key=key, kind="eval", run=run.name, task=task.name, epoch=epoch, depends_on=depends,
        fingerprint=unit_fingerprint, job_name=job_name,
        script=layout.eval_script(run.name, task.name, epoch),
        workdir=layout.cell_dir(run.name, task.name, epoch),
        stdout=layout.eval_stdout(run.name, task.name, epoch),
        model_path=model_path, log_dir=layout.eval_log_dir(run.name, task.name, epoch),
        needs_epoch=epoch if run.type == "fine-tuned" else None, share=share,
    )


def unit_inputs(loaded: LoadedSpec) -> Callable[[Unit], dict[str, Any]]:
    """The spec values behind each unit's fingerprint, by where they stand in the spec (for
    `reconcile diff`). Recomputed on demand rather than kept on every unit: at 100k units they
    were 100 MB."""
    runs = {r.name: r for r in loaded.spec.runs}
    tasks = {t.name: t for t in loaded.spec.evaluation.tasks}
    finetunes: dict[str, dict[str, Any]] = {}

    def inputs_of(unit: Unit) -> dict[str, Any]:
        run = runs[unit.run]
        inputs: dict[str, Any] = {}
        if run.type == "fine-tuned":
            if run.name not in finetunes:
                finetunes[run.name] = finetune_inputs(loaded, run)
            inputs.update(finetunes[run.name])
        if unit.kind == "eval":
            assert unit.task is not None
            inputs.update(eval_inputs(loaded, run, tasks[unit.task], unit.epoch))
        return inputs

    return inputs_of


def _model_path(loaded: LoadedSpec, run: Run) -> Path:
    if run.type == "eval-only":
        return loaded.resolve(str(run.parameters["checkpoint_path"]))
    base = next(m for m in loaded.spec.models.base if m.name == run.model)
    return loaded.resolve(base.path)


def finetune_inputs(loaded: LoadedSpec, run: Run) -> dict[str, Any]:
    """Every spec value that shapes a fine-tune's checkpoints, keyed by where it stands in the spec."""
    spec = loaded.spec
    r = f"runs[{run.name}]"
    base = next(m for m in spec.models.base if m.name == run.model)
    out: dict[str, Any] = {
        f"{r}.model": run.model,
        f"models.base[{base.name}].path": base.path,
        "tools.preparation": spec.tools.preparation,
        "data.training.path": spec.data.training.path,
    }
    if spec.tools.preparation == "command":
        out["tools.command"] = spec.tools.command
    for name, value in spec.controls.model_dump(exclude_none=True).items():
        if name != "validation_during_training":
            out[f"controls.{name}"] = value
    for name, value in run.parameters.items():
        out[f"{r}.parameters.{name}"] = value
    if run.dataset_path:
        out[f"{r}.dataset_path"] = run.dataset_path
    return out


def eval_inputs(loaded: LoadedSpec, run: Run, task: Task, epoch: int | None) -> dict[str, Any]:
    """Every spec value that shapes an eval's log (on top of its fine-tune's inputs)."""
    spec = loaded.spec
    ev = spec.evaluation
    t = f"evaluation.tasks[{task.name}]"
    out: dict[str, Any] = {
        "tools.model_api": spec.tools.model_api,
        f"{t}.script": task.script,
        f"{t}.dataset": task.dataset,
        "epoch": epoch,
    }
    for name in ("prompt", "system_prompt", "assistant_prefix", "eval_condition"):
        value = getattr(task, name)
        if value is not None:
            out[f"{t}.{name}"] = value
    for name in ("temperature", "do_sample", "seed", "max_tokens", "assistant_prefix"):
        value = getattr(ev, name)
        if value is not None:
            out[f"evaluation.{name}"] = value
    scorers = ev.scorers if ev.scorers is not None else ev.scorer
    if scorers:
        out["evaluation.scorers"] = [s.model_dump(exclude_none=True) for s in scorers]
    if run.type != "fine-tuned":
        r = f"runs[{run.name}]"
        out[f"{r}.type"] = run.type
        out[f"{r}.model"] = run.model
        base = next(m for m in spec.models.base if m.name == run.model)
        out[f"models.base[{base.name}].path"] = base.path
        for name, value in run.parameters.items():
            out[f"{r}.parameters.{name}"] = value
        out["controls.prompt"] = spec.controls.prompt
        out["controls.system_prompt"] = spec.controls.system_prompt
        out["controls.dataset_type"] = spec.controls.dataset_type
        out["data.training.path"] = spec.data.training.path
    return out
