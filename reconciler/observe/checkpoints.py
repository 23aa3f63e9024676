"""Is a torchtune epoch checkpoint complete? Decided from the files, in the order torchtune writes them.

The rules come from real runs of torchtune 0.6.1, kept in `fixtures/torchtune-0.6.1/` (each case's
manifest lists every file in write order):

- An epoch's save writes, in this order: the merged weights (`model-0000k-of-0000n.safetensors` and
  `model.safetensors.index.json`, only when `save_adapter_weights_only: false`), `adapter_model.pt`,
  `adapter_model.safetensors`, `adapter_config.json`; then the base model's other files are
  copied in, keeping the base model's mtimes (so their mtimes say nothing about the save).
- After every epoch but the last, torchtune writes `{output_dir}/recipe_state/recipe_state.pt`
  (one file beside the epoch directories, rewritten after each non-final epoch), never
  `epoch_N/recipe_state.pt`. The last epoch gets no recipe state at all.
- `epoch_{N+1}/` is created only when epoch N+1 is saved, after epoch N's save is over.
- A run killed in its second epoch leaves `epoch_0/` and the recipe state, and no `epoch_1/`.
- cruijff_kit's post_finetune moves a merged save's adapter files into `epoch_N/adapter_weights/`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.observe.reader import Reader

CheckpointState = Literal["complete", "partial", "absent"]


@dataclass(frozen=True, slots=True)
class EpochEvidence:
    state: CheckpointState
    detail: str
    mtime: float | None = None  # when torchtune wrote this epoch's last own file


RECIPE_STATE = "recipe_state/recipe_state.pt"  # relative to the output dir (torchtune 0.6.1)
LEGACY_RECIPE_STATE = "recipe_state.pt"  # inside epoch_N/: other torchtune versions write it there, last

# The files torchtune itself writes into an epoch (the rest are copies of the base model with its
# mtimes), with their places after cruijff_kit's post-processing.
ADAPTER_CONFIGS = ("adapter_config.json", "adapter_weights/adapter_config.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_weights/adapter_model.safetensors")
OWN_FILES = (*ADAPTER_CONFIGS, *ADAPTER_WEIGHTS, "adapter_model.pt", "adapter_weights/adapter_model.pt",
             "model.safetensors.index.json", "model.safetensors")


def epoch_evidence(epoch_dir: Path, final: bool, reader: Reader | None = None) -> EpochEvidence:
    """Whether one epoch directory holds a complete checkpoint (every file stat'ed or read through `reader`).

    Every epoch: its weights parse (adapter or merged shards) and its adapter config parses. A
    non-final epoch is proven by what torchtune writes after it: the recipe state, newer than
    every file of the epoch, or the next epoch's save. The final epoch has nothing after it:
    the base model's config must have been copied, and whether the job also exited 0 is for the
    planner to combine.
    """
    read = reader or Reader()
    read.touch(epoch_dir)  # first: what its files' stats say depends on it (one that is not a directory)
    if not final:
        try:
            st = read.stat(epoch_dir / LEGACY_RECIPE_STATE)
            return EpochEvidence("complete", f"{LEGACY_RECIPE_STATE} written", st.st_mtime)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            return EpochEvidence("partial", f"{epoch_dir} is not a directory")
    if not read.is_dir(epoch_dir):
        if read.exists(epoch_dir):
            return EpochEvidence("partial", f"{epoch_dir} is not a directory")
        return EpochEvidence("absent", "no checkpoint directory")
    problem = _files_problem(epoch_dir, read)
    if problem:
        return EpochEvidence("partial", problem)
    written = _latest_mtime(epoch_dir, OWN_FILES, _shards(epoch_dir, read), read)
    if final:
        if not read.exists(epoch_dir / "config.json"):
            return EpochEvidence("partial", "base-model files (config.json) not copied yet")
        return EpochEvidence("complete", "adapter and config files parse", written)
    try:
        state_mtime: float | None = read.stat(epoch_dir.parent / RECIPE_STATE).st_mtime
    except OSError:
        state_mtime = None
    if state_mtime is not None and written is not None and state_mtime >= written:
        return EpochEvidence("complete", f"{RECIPE_STATE} written after it", written)
    if _next_epoch_saved(epoch_dir, read):
        # A copy (cp -r) resets mtimes; torchtune saves epochs in order, so a later save proves this one.
        return EpochEvidence("complete", "the next epoch was saved after it", written)
    return EpochEvidence("partial", f"{RECIPE_STATE} not written after its files yet")


def _shards(epoch_dir: Path, read: Reader) -> list[str]:
    """The merged weight files the epoch's index lists (none: an adapter-only save, or no index yet)."""
    try:
        weight_map = json.loads(read.read_bytes(epoch_dir / "model.safetensors.index.json"))["weight_map"]
        return sorted(set(str(shard) for shard in weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _next_epoch_dir(epoch_dir: Path) -> Path | None:
    prefix, _, number = epoch_dir.name.rpartition("_")
    if prefix != "epoch" or not number.isascii() or not number.isdigit():
        return None
    return epoch_dir.parent / f"epoch_{int(number) + 1}"


def _next_epoch_saved(epoch_dir: Path, read: Reader) -> bool:
    following = _next_epoch_dir(epoch_dir)
    return following is not None and any(read.exists(following / name) for name in ADAPTER_CONFIGS)


def _latest_mtime(epoch_dir: Path, names: tuple[str, ...], shards: list[str], read: Reader) -> float | None:
    mtimes = []
    for name in (*names, *shards):
        try:
            mtimes.append(read.stat(epoch_dir / name).st_mtime)
        except OSError:
            continue
    return max(mtimes, default=None)


def _files_problem(epoch_dir: Path, read: Reader) -> str | None:
    merged_index = epoch_dir / "model.safetensors.index.json"
    if read.exists(merged_index):
        problem = _merged_problem(epoch_dir, merged_index, read)
        if problem:
            return problem
    elif read.exists(epoch_dir / "model.safetensors"):
        if read.stat(epoch_dir / "model.safetensors").st_size == 0:
            return "model.safetensors is empty"
    else:
        for name in ADAPTER_WEIGHTS:
            if read.exists(epoch_dir / name):
                problem = _safetensors_problem(epoch_dir / name, read)
                if problem:
                    return problem
                break
        else:
            return "no adapter_model.safetensors or merged weights yet"
    for name in ADAPTER_CONFIGS:
        if read.exists(epoch_dir / name):
            try:
                json.loads(read.read_text(epoch_dir / name))
            except (OSError, ValueError):
                return f"{name} does not parse (still being written?)"
            break
    else:
        return "adapter_config.json not written yet"
    return None


def _merged_problem(epoch_dir: Path, index: Path, read: Reader) -> str | None:
    try:
        shards = set(json.loads(read.read_text(index))["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return "model.safetensors.index.json does not parse"
    for shard in sorted(shards):
        path = epoch_dir / shard
        if not read.exists(path) or read.stat(path).st_size == 0:
            return f"shard {shard} missing or empty"
    return None


def _safetensors_problem(path: Path, read: Reader) -> str | None:
    """The header says how long the data is: a shorter file is still being written."""
    try:
        with read.open(path) as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated"
            (length,) = struct.unpack("<Q", raw)
            if length > 100_000_000:
                return f"{path.name} has a corrupt header"
            header = json.loads(fh.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if read.stat(path).st_size < 8 + length + end:
            return f"{path.name} is shorter than its header says (still being written?)"
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return f"{path.name} does not parse"
    return None
