"""The values a unit's files are rendered from, resolved from the spec (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.scaffold import ScaffoldError
from reconciler.spec.load import LoadedSpec
from reconciler.spec.models import MatrixEntry, Run, Task
from reconciler.spec.units import Unit

# cruijff_kit's finetune_template.yaml values, used when neither the run nor controls set them.
DEFAULT_LR = 1e-4
DEFAULT_LORA_RANK = 64

# Keys TrainValues holds in fields of their own; every other run parameter or extra controls
# key flows to setup_finetune.yaml as written.
_PLACED = {"lr", "lora_rank", "batch_size", "gradient_accumulation_steps", "seed", "prompt", "system_prompt",
           "weight_decay", "lora_dropout", "batch_size_val", "epochs", "dataset_path", "dataset_type",
           "validation_during_training", "save_adapter_weights_only"}


@dataclass(frozen=True)
class TrainValues:
    """One fine-tune's hyperparameters and inputs: run.parameters > controls > defaults."""

    run: str
    model: str
    model_path: Path
    dataset_path: Path
    dataset_label: str
    dataset_type: str | None
    epochs: int
    lr: float | int
    lora_rank: int
    batch_size: int
    gradient_accumulation_steps: int
    seed: int
    prompt: str
    system_prompt: str
    validation: bool
    weight_decay: float | int | None = None
    lora_dropout: float | int | None = None
    batch_size_val: int | None = None
    # cruijff_kit's default since v0.3.2: epochs hold the adapter, not merged weights (disk).
    save_adapter_weights_only: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalValues:
    """One eval cell's inputs, as cruijff_kit's eval.yaml names them."""

    task_script: Path
    task_name: str
    model_path: Path
    data_path: Path
    prompt: str
    system_prompt: str
    assistant_prefix: str | None
    dataset_type: str | None
    use_chat_template: bool
    vis_label: str
    run: str
    epoch: int | None
    is_finetuned: bool
    source_model: str
    scorers: list[dict[str, Any]]
    temperature: float | int | None
    do_sample: bool
    max_tokens: int | None
    max_connections: int | None
    seed: int


def find_run(loaded: LoadedSpec, name: str) -> Run:
    return loaded.spec.run_named(name)


def find_task(loaded: LoadedSpec, name: str) -> Task:
    return next(t for t in loaded.spec.evaluation.tasks if t.name == name)


def base_model_path(loaded: LoadedSpec, run: Run) -> Path:
    base = next(m for m in loaded.spec.models.base if m.name == run.model)
    return loaded.resolve(base.path)


def train_values(loaded: LoadedSpec, run: Run) -> TrainValues:
    spec = loaded.spec
    controls = spec.controls
    params = run.parameters
    where = f"runs[{run.name}].parameters"

    def pick(key: str, default: Any) -> Any:
        if key in params:
            return params[key]
        if key in type(controls).model_fields:
            value = getattr(controls, key)
        else:
            value = (controls.model_extra or {}).get(key)
        return default if value is None else value

    dataset = train_data_path(loaded, run)
    label = spec.data.training.dataset_label or spec.data.training.label
    if dataset != loaded.resolve(spec.data.training.path) or not label:
        label = dataset.stem
    extra: dict[str, Any] = {}
    for key, value in {**(controls.model_extra or {}), **params}.items():
        if key not in _PLACED:
            extra[key] = value
    return TrainValues(
        run=run.name,
        model=run.model,
        model_path=base_model_path(loaded, run),
        dataset_path=dataset,
        dataset_label=label,
        dataset_type=controls.dataset_type,
        epochs=controls.epochs,
        lr=_number(pick("lr", DEFAULT_LR), f"{where}.lr"),
        lora_rank=_int(pick("lora_rank", DEFAULT_LORA_RANK), f"{where}.lora_rank", 1),
        batch_size=_int(pick("batch_size", controls.batch_size), f"{where}.batch_size", 1),
        gradient_accumulation_steps=_int(pick("gradient_accumulation_steps", 1),
                                         f"{where}.gradient_accumulation_steps", 1),
        seed=_int(pick("seed", 14), f"{where}.seed", 0),
        prompt=_text(pick("prompt", "{input}"), f"{where}.prompt"),
        system_prompt=_text(pick("system_prompt", ""), f"{where}.system_prompt"),
        validation=controls.validation_during_training,
        weight_decay=_optional_number(pick("weight_decay", None), f"{where}.weight_decay"),
        lora_dropout=_optional_number(pick("lora_dropout", None), f"{where}.lora_dropout"),
        batch_size_val=None if pick("batch_size_val", None) is None
        else _int(pick("batch_size_val", None), f"{where}.batch_size_val", 1),
        save_adapter_weights_only=_bool(pick("save_adapter_weights_only", True), f"{where}.save_adapter_weights_only"),
        extra=extra,
    )


def train_data_path(loaded: LoadedSpec, run: Run) -> Path:
    """The run's training file: its own dataset_path if set, else data.training.path."""
    own = run.parameters.get("dataset_path")
    if isinstance(own, str) and own:
        return loaded.resolve(own)
    if run.dataset_path:
        return loaded.resolve(run.dataset_path)
    return loaded.resolve(loaded.spec.data.training.path)


def eval_data_path(loaded: LoadedSpec, run: Run, task: Task) -> Path:
    """task.dataset ("same": data.training.path), else the run's eval/training file, else data.training.path."""
    training = loaded.spec.data.training.path
    if task.dataset:
        return loaded.resolve(training if task.dataset == "same" else task.dataset)
    for key in ("eval_dataset_path", "dataset_path"):
        value = run.parameters.get(key)
        if isinstance(value, str) and value:
            return loaded.resolve(value)
    if run.dataset_path:
        return loaded.resolve(run.dataset_path)
    return loaded.resolve(training)


def eval_values(loaded: LoadedSpec, unit: Unit) -> EvalValues:
    assert unit.task is not None and unit.model_path is not None
    spec = loaded.spec
    ev = spec.evaluation
    run = find_run(loaded, unit.run)
    task = find_task(loaded, unit.task)
    params = run.parameters
    # Precedence as in cruijff_kit: per-task > per-run > controls (system_prompt: task > controls).
    prompt = task.prompt if task.prompt is not None else params.get("prompt", spec.controls.prompt)
    system_prompt = task.system_prompt if task.system_prompt is not None else spec.controls.system_prompt
    scorers = ev.scorers if ev.scorers is not None else ev.scorer
    return EvalValues(
        task_script=loaded.resolve(task.script),
        task_name=task.name,
        model_path=unit.model_path,
        data_path=eval_data_path(loaded, run, task),
        prompt=_text(prompt, f"runs[{run.name}].parameters.prompt"),
        system_prompt=system_prompt,
        assistant_prefix=task.assistant_prefix if task.assistant_prefix is not None else ev.assistant_prefix,
        dataset_type=spec.controls.dataset_type,
        use_chat_template=spec.controls.dataset_type != "text_completion",
        vis_label=vis_label(_entry(loaded, run.name, task.name), run.name, task.name),
        run=run.name,
        epoch=unit.epoch if run.type == "fine-tuned" else None,
        is_finetuned=run.type != "control",
        source_model=run.model,
        scorers=[s.model_dump(exclude_none=True) for s in scorers or []],
        temperature=ev.temperature,
        do_sample=ev.do_sample,
        max_tokens=ev.max_tokens,
        max_connections=ev.max_connections,
        seed=ev.seed,
    )


def vis_label(entry: MatrixEntry, run: str, task: str) -> str:
    """The matrix entry's label (default: the run); with several tasks, `{label} ({task})` as cruijff_kit does."""
    label = entry.vis_label or run
    return f"{label} ({task})" if len(entry.tasks) > 1 else label


def _entry(loaded: LoadedSpec, run: str, task: str) -> MatrixEntry:
    return next(e for e in loaded.spec.evaluation.matrix if e.run == run and task in e.tasks)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScaffoldError(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScaffoldError(f"{where}: expected true or false, got {value!r}")
    return value


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScaffoldError(f"{where}: expected a number, got {value!r}")
    return value


def _optional_number(value: Any, where: str) -> float | int | None:
    return None if value is None else _number(value, where)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ScaffoldError(f"{where}: expected a string, got {value!r}")
    return value
