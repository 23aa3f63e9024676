"""Is a torchtune epoch checkpoint complete? Decided from the files, in the order torchtune writes them."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CheckpointState = Literal["complete", "partial", "absent"]


@dataclass(frozen=True, slots=True)
class EpochEvidence:
    state: CheckpointState
    detail: str
    mtime: float | None = None  # when the last file torchtune writes appeared


def epoch_evidence(epoch_dir: Path, final: bool) -> EpochEvidence:
    """Non-final epochs: `recipe_state.pt` is written last, so its presence is proof.

    The final epoch has no recipe_state.pt: the adapter files must parse and a base-model file must
    have been copied; whether the job also exited 0 is for the planner to combine.
    """
    if not final:
        try:
            st = os.stat(epoch_dir / "recipe_state.pt")
            return EpochEvidence("complete", "recipe_state.pt written", st.st_mtime)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            return EpochEvidence("partial", f"{epoch_dir} is not a directory")
        if not epoch_dir.is_dir():
            return EpochEvidence("absent", "no checkpoint directory")
        return EpochEvidence("partial", "recipe_state.pt not written yet")
    if not epoch_dir.is_dir():
        return EpochEvidence("absent", "no checkpoint directory")
    problem = _final_epoch_problem(epoch_dir)
    if problem:
        return EpochEvidence("partial", problem)
    return EpochEvidence("complete", "adapter and config files parse", _latest_mtime(epoch_dir, LAST_WRITTEN))


# The files torchtune writes last in a final epoch (the adapter config sits in adapter_weights/ in
# some versions); one removed since the check above must not crash the pass.
LAST_WRITTEN = ("adapter_config.json", "adapter_weights/adapter_config.json", "config.json")


# Every file the final-epoch check stats or reads, beside the directories whose listing decides
# whether the others exist.
FINAL_EPOCH_FILES = ("model.safetensors.index.json", "model.safetensors", "adapter_model.safetensors",
                     "adapter_weights", "adapter_weights/adapter_model.safetensors", "adapter_config.json",
                     "adapter_weights/adapter_config.json", "config.json")


def epoch_inputs(epoch_dir: Path, final: bool) -> list[str]:
    """The paths `epoch_evidence` depends on, directory first: while each stats the same, so does it."""
    base = str(epoch_dir)
    if not final:
        return [base, os.path.join(base, "recipe_state.pt")]
    paths = [base, *(os.path.join(base, name) for name in FINAL_EPOCH_FILES)]
    try:
        with open(os.path.join(base, "model.safetensors.index.json"), "rb") as fh:
            weight_map = json.loads(fh.read())["weight_map"]
        paths.extend(os.path.join(base, str(shard)) for shard in sorted(set(weight_map.values())))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no index (the usual LoRA epoch), or one that does not parse: its own stat is enough
    return paths


def _latest_mtime(epoch_dir: Path, names: tuple[str, ...]) -> float | None:
    mtimes = []
    for name in names:
        try:
            mtimes.append(os.stat(epoch_dir / name).st_mtime)
        except OSError:
            continue
    return max(mtimes, default=None)


def _final_epoch_problem(epoch_dir: Path) -> str | None:
    merged_index = epoch_dir / "model.safetensors.index.json"
    if merged_index.exists():
        problem = _merged_problem(epoch_dir, merged_index)
        if problem:
            return problem
    elif (epoch_dir / "model.safetensors").exists():
        if (epoch_dir / "model.safetensors").stat().st_size == 0:
            return "model.safetensors is empty"
    else:
        for name in ("adapter_model.safetensors", "adapter_weights/adapter_model.safetensors"):
            if (epoch_dir / name).exists():
                problem = _safetensors_problem(epoch_dir / name)
                if problem:
                    return problem
                break
        else:
            return "no adapter_model.safetensors or merged weights yet"
    for name in ("adapter_config.json", "adapter_weights/adapter_config.json"):
        if (epoch_dir / name).exists():
            try:
                json.loads((epoch_dir / name).read_text())
            except (OSError, ValueError):
                return f"{name} does not parse (still being written?)"
            break
    else:
        return "adapter_config.json not written yet"
    if not (epoch_dir / "config.json").exists():
        return "base-model files (config.json) not copied yet"
    return None


def _merged_problem(epoch_dir: Path, index: Path) -> str | None:
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return "model.safetensors.index.json does not parse"
    for shard in sorted(shards):
        path = epoch_dir / shard
        if not path.exists() or path.stat().st_size == 0:
            return f"shard {shard} missing or empty"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """The header says how long the data is: a shorter file is still being written."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated"
            (length,) = struct.unpack("<Q", raw)
            if length > 100_000_000:
                return f"{path.name} has a corrupt header"
            header = json.loads(fh.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if path.stat().st_size < 8 + length + end:
            return f"{path.name} is shorter than its header says (still being written?)"
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return f"{path.name} does not parse"
    return None
