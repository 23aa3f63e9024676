"""A torchtune stand-in for fast tests: `python -m reconciler_standin.trainer --config PATH` fine-tunes the stand-in model.

It stands in for `tune run lora_finetune_single_device` and leaves what torchtune 0.6.1 leaves (see
fixtures/torchtune-0.6.1): per epoch the adapter files, then copies of the base model's files, and
after every epoch but the last `recipe_state/recipe_state.pt` beside the epoch directories."""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler_standin import capitalizer, weights
from reconciler_standin.capitalizer import ADAPTER_CONFIG, ADAPTER_FILE, OUTPUTS, Capitalizer

# The toy has ~1.5k parameters, not ~1e9: scaling the step lets LoRA-typical learning rates
# (1e-5 .. 5e-4) span "barely moves" to "diverges" here, as they do on a real model.
LR_SCALE = 1e4
# torchtune's copy_files skips weights and adapters; everything else in the base dir is copied.
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
MAX_COPY_BYTES = 100 * 1024 * 1024
FLOAT32_MAX = 3.4028234663852886e38  # checkpoints are float32; larger weights cannot be saved

REQUIRED = ("output_dir", "dataset_path", "model_checkpoint", "epochs", "lr", "lora_rank", "batch_size")


class ConfigError(ValueError):
    """The training config is unusable: exit 2 before anything is written."""


class TrainingFailed(RuntimeError):
    """Training stopped (simulated failure, diverged loss): exit 1."""


@dataclass(frozen=True)
class TrainConfig:
    """The trainer's flat config, named like cruijff_kit's setup_finetune.yaml keys."""

    output_dir: Path
    dataset_path: Path
    model_checkpoint: Path
    epochs: int
    lr: float
    lora_rank: int
    batch_size: int
    gradient_accumulation_steps: int = 1
    seed: int = 14
    prompt: str = "{input}"
    system_prompt: str = ""
    fail_at_epoch: int | None = None
    seconds_per_epoch: float = 2.0


def _int(raw: dict[str, Any], key: str, minimum: int) -> int:
    """raw[key] as an int >= minimum (bools, which are ints in Python, are refused)."""
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(raw: dict[str, Any], key: str, minimum: float, strict: bool) -> float:
    """raw[key] as a finite float above (strict) or at least minimum."""
    value = raw[key]
    # PyYAML reads `1e-4` (no dot) as a string, so numeric strings are accepted
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError(f"{key} must be a number {bound}, got {value!r}")
    return number


def parse_config(raw: Any) -> tuple[TrainConfig, list[str]]:
    """Validate a loaded YAML mapping; returns the config and the unknown keys (warned, not fatal)."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping")
    missing = [key for key in REQUIRED if raw.get(key) in (None, "")]
    if missing:
        raise ConfigError(f"missing required keys: {', '.join(missing)}")
    known = set(TrainConfig.__dataclass_fields__)
    fields: dict[str, Any] = {
        "output_dir": Path(str(raw["output_dir"])),
        "dataset_path": Path(str(raw["dataset_path"])),
        "model_checkpoint": Path(str(raw["model_checkpoint"])),
        "epochs": _int(raw, "epochs", 1),
        "lr": _float(raw, "lr", 0.0, strict=True),
        "lora_rank": _int(raw, "lora_rank", 1),
        "batch_size": _int(raw, "batch_size", 1),
    }
    if raw.get("gradient_accumulation_steps") is not None:
        fields["gradient_accumulation_steps"] = _int(raw, "gradient_accumulation_steps", 1)
    if raw.get("seed") is not None:
        fields["seed"] = _int(raw, "seed", 0)
    if raw.get("fail_at_epoch") is not None:
        fields["fail_at_epoch"] = _int(raw, "fail_at_epoch", 0)
    if raw.get("seconds_per_epoch") is not None:
        fields["seconds_per_epoch"] = _float(raw, "seconds_per_epoch", 0.0, strict=False)
    for key in ("prompt", "system_prompt"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str):
                raise ConfigError(f"{key} must be a string, got {raw[key]!r}")
            fields[key] = raw[key]
    if "{input}" not in fields.get("prompt", "{input}"):
        raise ConfigError("prompt must contain {input}")
    return TrainConfig(**fields), sorted(set(raw) - known)


def load_examples(config: TrainConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(letter, target) pairs for the train and validation splits, read as the model would see them."""
    try:
        splits = json.loads(config.dataset_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"dataset_path {config.dataset_path}: cannot read JSON: {exc}") from exc
    if not isinstance(splits, dict) or not splits.get("train"):
        raise ConfigError(f"dataset_path {config.dataset_path}: needs a non-empty 'train' list")

    def examples(split: str) -> list[tuple[int, int]]:
        pairs = []
        for record in splits.get(split) or []:
            # the prompt reaches the model whole; it answers about the prompt's last word
            word = capitalizer.word_of(config.prompt.format(input=record["input"]))
            target = str(record["output"])[:1]
            if word[:1] in capitalizer.LOWER and target in OUTPUTS:
                pairs.append((capitalizer.LOWER.index(word[0]), OUTPUTS.index(target)))
        return pairs

    train = examples("train")
    if not train:
        raise ConfigError(f"dataset_path {config.dataset_path}: no usable lower-case train records")
    return train, examples("validation")


def save_checkpoint(model: Capitalizer, config: TrainConfig, epoch: int, global_step: int) -> None:
    """Write epoch_N in torchtune 0.6.1's order; then, for non-final epochs only, the recipe state beside it."""
    started = time.monotonic()
    print("Starting checkpoint save...", flush=True)
    epoch_dir = config.output_dir / f"epoch_{epoch}"
    epoch_dir.mkdir(parents=True, exist_ok=True)
    tensors = capitalizer.adapter_tensors(model)
    blob = {name: {"shape": list(t.shape), "values": t.values} for name, t in tensors.items()}
    (epoch_dir / "adapter_model.pt").write_text(json.dumps(blob))
    (epoch_dir / "adapter_model").mkdir(exist_ok=True)
    size = weights.save(epoch_dir / ADAPTER_FILE, tensors, {"format": "pt"})
    gib = size / 1024**3
    print(f"Adapter checkpoint of size {gib:.2f} GiB saved to {epoch_dir / ADAPTER_FILE}", flush=True)
    adapter_config = {
        "base_model_name_or_path": str(config.model_checkpoint.resolve()),
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": config.lora_rank,
        "lora_alpha": 2 * config.lora_rank,
        "target_modules": ["capitalizer"],
    }
    (epoch_dir / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
    for source in sorted(config.model_checkpoint.iterdir()):
        name = source.name
        if name.endswith(WEIGHT_SUFFIXES) or name.startswith("adapter") or "index" in name:
            continue
        if source.is_dir():
            shutil.copytree(source, epoch_dir / name, dirs_exist_ok=True)
        elif source.stat().st_size <= MAX_COPY_BYTES:
            shutil.copy2(source, epoch_dir / name)
    if epoch + 1 < config.epochs:
        state = {"epochs_run": epoch + 1, "global_step": global_step, "seed": config.seed, "total_epochs": config.epochs}
        (config.output_dir / "recipe_state").mkdir(exist_ok=True)
        (config.output_dir / "recipe_state" / "recipe_state.pt").write_text(json.dumps(state))
    print(f"Checkpoint saved in {time.monotonic() - started:.2f} seconds.", flush=True)


def _mean(matrices: tuple[capitalizer.Matrix, ...]) -> capitalizer.Matrix:
    """Element-wise mean of equally shaped matrices."""
    return [[sum(values) / len(matrices) for values in zip(*rows)] for rows in zip(*matrices)]


def train(config: TrainConfig) -> int:
    """Run every epoch, printing torchtune-like progress; returns the final global step."""
    train_set, val_set = load_examples(config)
    try:
        base = capitalizer.load_base(config.model_checkpoint)
    except capitalizer.CheckpointError as exc:
        raise ConfigError(f"model_checkpoint: {exc}") from exc
    rng = random.Random(config.seed)
    print(f"Setting manual seed to local seed {config.seed}. Local seed is seed + rank = {config.seed} + 0")
    model = capitalizer.new_adapter(base, config.lora_rank, 2.0 * config.lora_rank, rng)
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    pause = config.seconds_per_epoch / steps_per_epoch
    print(f"Training {len(train_set)} examples: {steps_per_epoch} steps per epoch, {config.epochs} epochs.")
    global_step = 0
    for epoch in range(config.epochs):
        if config.fail_at_epoch == epoch:
            raise TrainingFailed(f"simulated failure at the start of epoch {epoch} (fail_at_epoch={epoch})")
        order = train_set[:]
        rng.shuffle(order)
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        for first in range(0, len(batches), config.gradient_accumulation_steps):
            group = batches[first : first + config.gradient_accumulation_steps]
            # accumulate micro-batch gradients, then one optimizer step (torchtune's global_step)
            losses, grads_a, grads_b = zip(*(model.gradients(batch) for batch in group))
            model.step(_mean(grads_a), _mean(grads_b), config.lr * LR_SCALE)
            step_loss = sum(losses) / len(losses)
            global_step += 1
            if not math.isfinite(step_loss) or not model.max_abs() < FLOAT32_MAX:
                raise TrainingFailed(
                    f"training diverged at step {global_step} (loss {step_loss}); try an lr below {config.lr}"
                )
            done = global_step - epoch * steps_per_epoch
            # tqdm redraws its bar with \r, so many updates share one physical line
            sys.stdout.write(
                f"\r{epoch + 1}|{global_step}|Loss: {step_loss}: "
                f"{100 * done // steps_per_epoch:3d}%| {done}/{steps_per_epoch}"
            )
            sys.stdout.flush()
            if pause:
                time.sleep(pause)
        sys.stdout.write("\n")
        if val_set:
            print(f"Validation loss: {model.loss(val_set):.4f}", flush=True)
        save_checkpoint(model, config, epoch, global_step)
    return global_step


def main(argv: list[str] | None = None) -> int:
    """Command line entry: 0 on success, 1 if training fails, 2 for a bad config."""
    parser = argparse.ArgumentParser(prog="python -m reconciler_standin.trainer", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="flat YAML training config")
    args = parser.parse_args(argv)
    try:
        try:
            raw = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {args.config}: {exc}") from exc
        config, unknown = parse_config(raw)
        if unknown:
            print(f"warning: ignoring unknown config keys: {', '.join(unknown)}", file=sys.stderr)
        resolved = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
        print("Running LoRAFinetuneRecipeSingleDevice with resolved config:\n")
        print(yaml.safe_dump(resolved, sort_keys=True), flush=True)
        steps = train(config)
    except ConfigError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        sys.stdout.flush()
        print(f"\nRuntimeError: {exc}", file=sys.stderr)
        return 1
    print(f"Training finished: {config.epochs} epochs, {steps} steps, checkpoints in {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
