"""torchtune LoRA configs (finetune.yaml) and cruijff_kit's flat setup_finetune.yaml, as plain dicts (pure)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.model_dir import ModelDir, llama_builder, read_model_dir
from reconciler.scaffold.resources import SIZE_TABLE, Resources, model_size
from reconciler.scaffold.values import TrainValues

SINGLE_DEVICE_RECIPE = "lora_finetune_single_device"
DISTRIBUTED_RECIPE = "lora_finetune_distributed"
# cruijff_kit's defaults (setup_finetune.py, finetune_template.yaml).
MAX_SEQ_LEN = 2048
NUM_WARMUP_STEPS = 100
RUN_VAL_EVERY_N_STEPS = 50
LOG_EVERY_N_STEPS = 5
WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class TorchtuneModel:
    """What torchtune needs to know about a base model."""

    component: str
    model_type: str
    checkpoint_files: list[str] | dict[str, str]
    tokenizer: str = "torchtune.models.llama3.llama3_tokenizer"
    arguments: tuple[tuple[str, Any], ...] = ()  # a generic builder's dimensions, from config.json


def _shards(n: int) -> dict[str, str]:
    # torchtune expands this to model-00001-of-0000n.safetensors ... (HF's sharded layout).
    return {"filename_format": "model-{}-of-{}.safetensors", "max_filename": f"{n:05d}"}


# (Llama 3 minor version or None, size) -> model. Checkpoint files as Meta ships them on the Hub.
_LLAMA: dict[tuple[str | None, str], TorchtuneModel] = {
    ("2", "1B"): TorchtuneModel("torchtune.models.llama3_2.lora_llama3_2_1b", "LLAMA3_2", ["model.safetensors"]),
    ("2", "3B"): TorchtuneModel("torchtune.models.llama3_2.lora_llama3_2_3b", "LLAMA3_2", _shards(2)),
    ("1", "8B"): TorchtuneModel("torchtune.models.llama3_1.lora_llama3_1_8b", "LLAMA3", _shards(4)),
    ("1", "70B"): TorchtuneModel("torchtune.models.llama3_1.lora_llama3_1_70b", "LLAMA3", _shards(30)),
    ("3", "70B"): TorchtuneModel("torchtune.models.llama3_3.lora_llama3_3_70b", "LLAMA3", _shards(30)),
    (None, "8B"): TorchtuneModel("torchtune.models.llama3.lora_llama3_8b", "LLAMA3", _shards(4)),
    (None, "70B"): TorchtuneModel("torchtune.models.llama3.lora_llama3_70b", "LLAMA3", _shards(30)),
}
_LLAMA_RE = re.compile(r"llama[-_ ]?3(?:[._](\d))?", re.IGNORECASE)


def torchtune_model(name: str, model: ModelDir, component: str | None = None, model_type: str | None = None,
                    where: str = "models.base") -> tuple[TorchtuneModel, str | None]:
    """The torchtune model for a base model, and a warning when it is a guess.

    In order: a component named in the experiment; a Llama 3.x name with a size torchtune has a
    named builder for; the generic Llama builder with the dimensions of the directory's
    config.json; else (a directory not visible here) the Llama model of the name's size, warned.
    Checkpoint files are the directory's own when it can be read.
    """
    files: list[str] | None = list(model.weight_files) or None
    if component is not None:
        if not model_type:
            raise ScaffoldError(f"{where}.component: give model_type too (torchtune's checkpointer needs it, "
                                "for example LLAMA3_2 or QWEN2)")
        return TorchtuneModel(component, model_type, files or ["model.safetensors"]), None
    size, size_warning = model_size(name)
    match = _LLAMA_RE.search(name)
    key = (match.group(1), size) if match else None
    if key in _LLAMA and size_warning is None:
        named = _LLAMA[key]
        return (TorchtuneModel(named.component, named.model_type, files) if files else named), None
    if model.config is not None or model.path.is_dir():
        builder = llama_builder(model, where)
        return TorchtuneModel(builder.component, builder.model_type, files or ["model.safetensors"],
                              arguments=tuple(builder.arguments.items())), None
    # A model name we do not recognise gets the Llama model of its size, with a warning.
    fallback = _LLAMA[(SIZE_TABLE[size].llama_minor, size)]
    return fallback, (f"model {name!r} is not a Llama 3.x model torchtune is configured for here and "
                      f"{model.path} is not visible to read its config.json; rendering {fallback.component} "
                      f"(by size {size})")


def prompt_wrapping(prompt: str) -> tuple[str, str]:
    """The text before and after `{input}` (literal braces unescaped), as torchtune's PromptTemplate wants."""
    pieces = list(string.Formatter().parse(prompt))
    fields = [(i, name, spec, conv) for i, (_, name, spec, conv) in enumerate(pieces) if name is not None]
    if len(fields) != 1 or fields[0][1] != "input" or fields[0][2] or fields[0][3]:
        raise ScaffoldError(f"prompt {prompt!r}: torchtune wraps the input once, so the prompt needs exactly "
                            "one plain {input}; set controls.dataset_component to a dataset that formats it")
    at = fields[0][0]
    before = "".join(p[0] for p in pieces[: at + 1])
    after = "".join(p[0] for p in pieces[at + 1:])
    return before, after


def finetune_yaml(v: TrainValues, output_dir: Path, dataset_component: str | None = None, *,
                  res: Resources | None = None, component: str | None = None, model_type: str | None = None,
                  model_dirs: dict[Path, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """A torchtune LoRA config for the run, in cruijff_kit's shape, with absolute paths (no interpolation).
    `model_dirs`: the loaded spec's model directories as read before (LoadedSpec.model_dirs)."""
    model, warning = torchtune_model(v.model, read_model_dir(v.model_path, model_dirs), component, model_type,
                                     f"models.base[{v.model}]")
    warnings = [warning] if warning else []
    if v.dataset_type == "text_completion" and dataset_component is None:
        warnings.append("dataset_type text_completion: torchtune's instruct_dataset still applies the model's "
                        "chat format; set controls.dataset_component for a raw-text dataset")
    base = str(v.model_path)
    tokenizer: dict[str, Any] = {
        "_component_": model.tokenizer,
        "path": f"{base}/original/tokenizer.model",
        "max_seq_len": _whole(v.extra.get("max_seq_len", MAX_SEQ_LEN), "max_seq_len"),
    }

    def dataset(split: str) -> dict[str, Any]:
        if dataset_component is not None:
            # cruijff_kit's own datasets take the prompt and format it with the HF chat template.
            return {
                "_component_": dataset_component, "source": "json", "data_files": str(v.dataset_path),
                "split": split, "model_path": base, "prompt": v.prompt, "system_prompt": v.system_prompt,
                "input_key": "input", "output_key": "output",
            }
        # The data file is {"train": [...], "validation": [...], "test": [...]}: `field` picks the
        # split, and HF's json loader names its single split "train".
        out: dict[str, Any] = {
            "_component_": "torchtune.datasets.instruct_dataset",
            "source": "json", "data_files": str(v.dataset_path), "field": split, "split": "train",
            "column_map": {"input": "input", "output": "output"},
            "train_on_input": False, "packed": False,
        }
        if v.system_prompt:
            out["new_system_prompt"] = v.system_prompt
        return out

    if dataset_component is None:
        before, after = prompt_wrapping(v.prompt)
        if before or after:
            tokenizer["prompt_template"] = {"user": [before, after]}

    config: dict[str, Any] = {
        "output_dir": str(output_dir),
        "model": {
            "_component_": model.component,
            "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
            "apply_lora_to_mlp": True,
            "lora_rank": v.lora_rank,
            "lora_alpha": 2 * v.lora_rank,
            "lora_dropout": float(v.lora_dropout or 0.0),
            **dict(model.arguments),
        },
        "tokenizer": tokenizer,
        "checkpointer": {
            "_component_": "torchtune.training.FullModelHFCheckpointer",
            "checkpoint_dir": base,
            "checkpoint_files": model.checkpoint_files,
            "recipe_checkpoint": None,
            # torchtune writes epoch_0, epoch_1, ... here: the layout's checkpoint directories.
            "output_dir": str(output_dir),
            "model_type": model.model_type,
        },
        "resume_from_checkpoint": False,
        "save_adapter_weights_only": v.save_adapter_weights_only,
        "dataset": dataset("train"),
        "seed": v.seed,
        "shuffle": True,
        "batch_size": v.batch_size,
        "optimizer": {
            "_component_": "torch.optim.AdamW",
            "fused": True,
            "weight_decay": v.weight_decay if v.weight_decay is not None else WEIGHT_DECAY,
            "lr": v.lr,
        },
        "lr_scheduler": {
            "_component_": "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
            "num_warmup_steps": _whole(v.extra.get("num_warmup_steps", NUM_WARMUP_STEPS), "num_warmup_steps"),
        },
        "loss": {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"},
        "epochs": v.epochs,
        "max_steps_per_epoch": None,
        "gradient_accumulation_steps": v.gradient_accumulation_steps,
        "compile": False,
    }
    if v.validation:
        # Read by torchtune's newer recipes and cruijff_kit's; 0.6.1's stock recipe skips them.
        every = v.extra.get("run_val_every_n_steps", RUN_VAL_EVERY_N_STEPS)
        config["run_val_every_n_steps"] = _whole(every, "run_val_every_n_steps")
        config["dataset_val"] = dataset("validation")
        if v.batch_size_val is not None:
            config["batch_size_val"] = v.batch_size_val
    config.update({
        # DiskLogger: no account, network or extra package needed on a compute node.
        "metric_logger": {
            "_component_": "torchtune.training.metric_logging.DiskLogger",
            "log_dir": str(output_dir / "logs"),
        },
        "log_every_n_steps": LOG_EVERY_N_STEPS,
        "log_peak_memory_stats": True,
        # A GPU cluster's values; only a run's `compute: {device: cpu, dtype: fp32}` changes them.
        "device": res.device if res is not None else "cuda",
        "dtype": res.dtype if res is not None else "bf16",
        "enable_activation_checkpointing": False,
        "enable_activation_offloading": False,
    })
    _check_no_interpolation(config)
    return config, warnings


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScaffoldError(f"controls.{key}: expected a whole number, got {value!r}")
    return value


def _check_no_interpolation(node: Any, where: str = "finetune.yaml") -> None:
    """torchtune reads its config with OmegaConf, which expands `${...}` (and does so twice on instantiate)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_no_interpolation(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_no_interpolation(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise ScaffoldError(f"{where}: {node!r} contains '${{', which torchtune's config loader (OmegaConf) "
                            "would expand; it cannot be passed through unchanged")


def setup_finetune(v: TrainValues, *, experiment_dir: Path, output_dir: Path, wandb_project: str,
                   res: Resources) -> dict[str, Any]:
    """The flat setup_finetune.yaml: cruijff_kit's keys, plus dataset_path and every extra parameter."""
    out: dict[str, Any] = {
        "my_wandb_project": wandb_project,
        "my_wandb_run_name": v.run,
        "torchtune_model_name": v.model,
        "model_checkpoint": str(v.model_path),
        "models_dir": str(v.model_path.parent),
        "input_dir_base": f"{v.dataset_path.parent}/",
        "dataset_label": v.dataset_label,
        "dataset_ext": v.dataset_path.suffix or ".json",
        "dataset_path": str(v.dataset_path),
        "dataset_type": v.dataset_type,
        "project_dir": f"{experiment_dir.parent}/",
        "experiment_name": experiment_dir.name,
        "output_dir": str(output_dir),
        "epochs": v.epochs,
        "lr": v.lr,
        "lora_rank": v.lora_rank,
        "batch_size": v.batch_size,
        "gradient_accumulation_steps": v.gradient_accumulation_steps,
        "seed": v.seed,
        "prompt": v.prompt,
        "system_prompt": v.system_prompt,
    }
    for key in ("weight_decay", "lora_dropout", "batch_size_val"):
        if getattr(v, key) is not None:
            out[key] = getattr(v, key)
    out["run_val_every_n_steps"] = v.extra.get("run_val_every_n_steps", RUN_VAL_EVERY_N_STEPS) if v.validation else 0
    out.update({"time": res.time, "gpus": res.gpus, "mem": res.mem, "cpus_per_task": res.cpus_per_task})
    for key in ("account", "partition", "constraint"):
        if getattr(res, key):
            out[key] = getattr(res, key)
    for key, value in v.extra.items():
        out.setdefault(key, value)  # the values above are resolved; an extra key never replaces them
    return out
