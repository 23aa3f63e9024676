"""What a Hugging Face model directory says about its model: architecture, dimensions, files.

Read once per directory (`config.json`, the safetensors index) and kept on the loaded spec
(`LoadedSpec.model_dirs`): the fine-tune config's generic torchtune builder, the checkpoint files
and the resources of a model whose name carries no size all come from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.scaffold import ScaffoldError


@dataclass(frozen=True)
class ModelDir:
    """A model directory as config.json describes it (None: the directory or its config is missing)."""

    path: Path
    config: dict[str, Any] | None
    weight_files: tuple[str, ...]  # model.safetensors, or the shards its index lists
    has_tiktoken: bool  # original/tokenizer.model: what torchtune's llama3 tokenizer reads
    has_hf_tokenizer: bool  # tokenizer.json or tokenizer.model: what transformers reads
    problem: str | None = None  # why config.json could not be read

    @property
    def parameters(self) -> int | None:
        """The parameter count of a Llama-family model, from its dimensions (None: not computable)."""
        c = self.config or {}
        try:
            vocab, width, layers = int(c["vocab_size"]), int(c["hidden_size"]), int(c["num_hidden_layers"])
            heads = int(c["num_attention_heads"])
            kv_heads = int(c.get("num_key_value_heads") or heads)
            head_dim = int(c.get("head_dim") or width // heads)
            inter = int(c["intermediate_size"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        attention = width * heads * head_dim * 2 + width * kv_heads * head_dim * 2
        per_layer = attention + 3 * width * inter + 2 * width
        embeddings = vocab * width * (1 if c.get("tie_word_embeddings") else 2)
        return embeddings + layers * per_layer + width


def read_model_dir(path: Path, known: dict[Path, Any] | None = None) -> ModelDir:
    """Read a model directory's config.json and weight index. `known`: what was read before, by path
    (a loaded spec's `model_dirs`: directories do not change while a spec is in use); None: read now."""
    if known is not None:
        hit = known.get(path)
        if hit is not None:
            return hit
        known[path] = model = _read_model_dir(path)
        return model
    return _read_model_dir(path)


def _read_model_dir(path: Path) -> ModelDir:
    config: dict[str, Any] | None = None
    problem: str | None = None
    try:
        loaded = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            config = loaded
        else:
            problem = "config.json is not a JSON object"
    except FileNotFoundError:
        problem = "no config.json" if path.is_dir() else "the directory does not exist"
    except (OSError, ValueError) as exc:
        problem = f"config.json does not parse ({exc})"
    return ModelDir(path=path, config=config, weight_files=_weight_files(path),
                    has_tiktoken=(path / "original" / "tokenizer.model").is_file(),
                    has_hf_tokenizer=(path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file(),
                    problem=problem)


def _weight_files(path: Path) -> tuple[str, ...]:
    try:
        index = json.loads((path / "model.safetensors.index.json").read_text(encoding="utf-8"))
        return tuple(sorted(set(str(v) for v in index["weight_map"].values())))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return ("model.safetensors",) if (path / "model.safetensors").is_file() else ()


@dataclass(frozen=True)
class GenericBuilder:
    """torchtune's generic LoRA builder for a Llama-family model and the arguments it needs."""

    component: str
    model_type: str
    arguments: dict[str, Any]


def llama_builder(model: ModelDir, where: str) -> GenericBuilder:
    """The torchtune component that builds this directory's model, with its dimensions.

    Llama 3.2 (rope scaled, tied embeddings) -> llama3_2.lora_llama3_2; Llama 3.1 (rope scaled)
    -> llama3_1.lora_llama3_1; Llama 3 (no scaling) -> llama3.lora_llama3. Anything else is an
    error that says how to name a component instead.
    """
    c = model.config
    if c is None:
        raise ScaffoldError(f"{where}: {model.path}: {model.problem}; a model directory needs config.json")
    arch = c.get("model_type")
    if arch != "llama":
        raise ScaffoldError(f"{where}: {model.path}/config.json: model_type {arch!r} is not a Llama model the "
                            "scaffold can map to a torchtune builder; name one with models.base[].component "
                            "(for example torchtune.models.qwen2_5.lora_qwen2_5_0_5b) and model_type")
    try:
        width, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        args: dict[str, Any] = {
            "vocab_size": int(c["vocab_size"]),
            "num_layers": int(c["num_hidden_layers"]),
            "num_heads": heads,
            "num_kv_heads": int(c.get("num_key_value_heads") or heads),
            "embed_dim": width,
            "max_seq_len": int(c.get("max_position_embeddings") or 2048),
            "intermediate_dim": int(c["intermediate_size"]),
            "norm_eps": float(c.get("rms_norm_eps", 1e-5)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ScaffoldError(f"{where}: {model.path}/config.json: missing or invalid dimension ({exc})") from None
    head_dim = c.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != width:
        raise ScaffoldError(f"{where}: {model.path}/config.json: head_dim {head_dim} x {heads} heads is not "
                            f"hidden_size {width}; torchtune's Llama builders derive head_dim from the width")
    # transformers 5 writes rope_parameters, older versions rope_theta and rope_scaling.
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type")
    args["rope_base"] = int(float(rope.get("rope_theta") or c.get("rope_theta") or 500000))
    tied = bool(c.get("tie_word_embeddings", False))
    if rope_type == "llama3":
        args["scale_factor"] = int(float(rope.get("factor", 8)))
        if tied:
            args["tie_word_embeddings"] = True
            return GenericBuilder("torchtune.models.llama3_2.lora_llama3_2", "LLAMA3_2", args)
        return GenericBuilder("torchtune.models.llama3_1.lora_llama3_1", "LLAMA3", args)
    if rope_type not in (None, "default"):
        raise ScaffoldError(f"{where}: {model.path}/config.json: rope type {rope_type!r} has no torchtune Llama "
                            "builder; name one with models.base[].component")
    if tied:
        raise ScaffoldError(f"{where}: {model.path}/config.json: tied embeddings without Llama 3's rope scaling "
                            "have no torchtune Llama builder; name one with models.base[].component")
    return GenericBuilder("torchtune.models.llama3.lora_llama3", "LLAMA3", args)
