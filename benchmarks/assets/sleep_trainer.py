"""A torchtune stand-in that sleeps: `python -m benchmarks.assets.sleep_trainer --config setup_finetune.yaml`.

Reads `output_dir`, `epochs` and `seconds_per_epoch` from the run's rendered setup_finetune.yaml,
sleeps one "epoch" at a time and writes each `epoch_N/` in torchtune's order (adapter, configs,
then `recipe_state/recipe_state.pt` beside them after non-final epochs, as torchtune 0.6.1 does), so the reconciler sees checkpoints appear
exactly as it would on a cluster. Uses no CPU while it "trains".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from benchmarks.assets.checkpoint import write_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.assets.sleep_trainer")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    out = Path(config["output_dir"])
    epochs = int(config["epochs"])
    seconds = float(config.get("seconds_per_epoch") or 0.0)
    rank = int(config.get("lora_rank") or 8)
    print(f"Running LoRAFinetuneRecipeSingleDevice: {epochs} epochs of {seconds:g} s into {out}", flush=True)
    for epoch in range(epochs):
        time.sleep(seconds)
        print(f"{epoch + 1}|{(epoch + 1) * 25}|Loss: 1.0: 100%| 25/25", flush=True)
        print("Starting checkpoint save...", flush=True)
        write_checkpoint(out / f"epoch_{epoch}", epoch, final=epoch == epochs - 1, rank=rank)
        print(f"Checkpoint saved: {out / f'epoch_{epoch}'}", flush=True)
    print(f"Training finished: {epochs} epochs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
