"""Write one torchtune-style epoch checkpoint (standard library only: the sleep trainer imports it)."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def _safetensors() -> bytes:
    """A valid LoRA adapter safetensors (two small F32 tensors): the reconciler parses its header."""
    names = ("base_model.model.layers.0.self_attn.q_proj.lora_a.weight",
             "base_model.model.layers.0.self_attn.q_proj.lora_b.weight")
    shapes = ((4, 16), (16, 4))
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in zip(names, shapes):
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


ADAPTER_BYTES = _safetensors()
BASE_FILES = {
    "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                               "num_hidden_layers": 16, "torch_dtype": "bfloat16"}, indent=2) + "\n",
    "generation_config.json": json.dumps({"bos_token_id": 128000, "eos_token_id": 128001}, indent=2) + "\n",
    "tokenizer_config.json": json.dumps({"model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"},
                                        indent=2) + "\n",
    "special_tokens_map.json": json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}) + "\n",
    "README.md": "# tiny\n\nA stand-in base model directory for the benchmarks.\n",
}


def write_checkpoint(epoch_dir: Path, epoch: int, final: bool, rank: int) -> list[Path]:
    """One epoch directory in torchtune 0.6.1's order; returns the files that prove it complete.

    Adapter weights first, then the adapter config and the base-model files torchtune copies, and
    after every epoch but the final one `recipe_state/recipe_state.pt` beside the epoch directories
    (fixtures/torchtune-0.6.1).
    """
    epoch_dir.mkdir(parents=True, exist_ok=True)
    (epoch_dir / "adapter_model.pt").write_bytes(ADAPTER_BYTES)
    (epoch_dir / "adapter_model.safetensors").write_bytes(ADAPTER_BYTES)
    (epoch_dir / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "base_model", "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
         "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"]}, indent=2) + "\n")
    for fname, text in BASE_FILES.items():
        (epoch_dir / fname).write_text(text)
    if not final:
        state = epoch_dir.parent / "recipe_state" / "recipe_state.pt"
        state.parent.mkdir(exist_ok=True)
        state.write_text(json.dumps({"epochs_run": epoch + 1, "seed": 14}))
        return [state]
    return [epoch_dir / "adapter_model.safetensors", epoch_dir / "adapter_config.json", epoch_dir / "config.json"]
