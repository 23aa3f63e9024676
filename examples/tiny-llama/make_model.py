"""Write a tiny Llama-3.2-architecture model with random weights, offline and deterministic from a seed.

    python examples/tiny-llama/make_model.py [OUT_DIR] [--seed 14] [--layers 2] [--width 64]

OUT_DIR (default: examples/tiny-llama/model) gets what torchtune and inspect-ai's hf provider read
from a Hugging Face model directory, as `tune download meta-llama/Llama-3.2-1B-Instruct` lays it out:

- config.json, generation_config.json, model.safetensors: transformers' LlamaForCausalLM with
  random weights (bf16), a Llama-3.2 rope and tied embeddings, vocabulary 128256 so that the
  Llama-3 special tokens (128000..128255) have their usual ids;
- original/tokenizer.model: the tiktoken file torchtune's llama3_tokenizer reads; the 256
  single-byte tokens and no merges, so every byte is one token;
- tokenizer.json, tokenizer_config.json, special_tokens_map.json: the same tokenizer for
  transformers (a byte-level BPE without merges, the same ids), with Llama 3's chat template.

Nothing is downloaded. The same seed and sizes give byte-identical files.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

VOCAB_SIZE = 128256
BEGIN, END, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
# Llama 3's special tokens as torchtune's llama3 tokenizer numbers them (models/llama3/_tokenizer.py).
NAMED_SPECIAL = {
    BEGIN: 128000, END: 128001, "<|reserved_special_token_0|>": 128002, "<|reserved_special_token_1|>": 128003,
    "<|finetune_right_pad_id|>": 128004, "<|step_id|>": 128005, "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007, "<|eom_id|>": 128008, EOT: 128009, "<|python_tag|>": 128010,
}
# The ids left between 128011 and the end of the vocabulary, as Meta's tokenizer names them.
RESERVED_SPECIAL = {f"<|reserved_special_token_{2 + i}|>": 128011 + i for i in range(VOCAB_SIZE - 128011)}
# Llama 3's chat format without the date lines of Meta's template: what torchtune trains on.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table (what byte-level BPE names each byte), indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    names: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in names:
            names[b] = chr(256 + extra)
            extra += 1
    return [names[b] for b in range(256)]


def write_tokenizers(out: Path) -> None:
    special = {**NAMED_SPECIAL, **RESERVED_SPECIAL}
    original = out / "original"
    original.mkdir(parents=True, exist_ok=True)
    # tiktoken's format: base64 of the token's bytes, then its rank (= its id).
    (original / "tokenizer.model").write_text(
        "".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {name: b for b, name in enumerate(byte_alphabet())}
    # Ids 256..127999 hold placeholders that no merge can produce, so the special tokens after them
    # keep Llama 3's ids (the library numbers added tokens from the end of the vocabulary).
    vocab.update({f"<unused{i}>": i for i in range(256, NAMED_SPECIAL[BEGIN])})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False)
                                  for name, _ in sorted(special.items(), key=lambda kv: kv[1])])
    tokenizer.save(str(out / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert loaded.token_to_id(EOT) == NAMED_SPECIAL[EOT], loaded.token_to_id(EOT)
    assert loaded.encode("Hi").ids == [ord("H"), ord("i")], loaded.encode("Hi").ids
    config = {
        "bos_token": BEGIN, "eos_token": EOT, "pad_token": "<|finetune_right_pad_id|>",
        "model_max_length": 131072, "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BEGIN, "eos_token": EOT, "pad_token": "<|finetune_right_pad_id|>"}, indent=2) + "\n")


def write_weights(out: Path, seed: int, layers: int, width: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(1, width // 16)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=width // heads,
        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        bos_token_id=NAMED_SPECIAL[BEGIN], eos_token_id=[NAMED_SPECIAL[END], NAMED_SPECIAL["<|eom_id|>"],
                                                        NAMED_SPECIAL[EOT]],
        torch_dtype="bfloat16", architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.do_sample = False
    model.save_pretrained(str(out), safe_serialization=True)
    # transformers 5 writes `rope_parameters`; 4.x reads `rope_theta` and `rope_scaling` and would
    # silently fall back to an unscaled rope without them. Meta's own files carry the legacy keys.
    path = out / "config.json"
    saved = json.loads(path.read_text())
    rope = dict(saved.get("rope_parameters") or {})
    saved.setdefault("rope_theta", rope.pop("rope_theta", 500000.0))
    saved.setdefault("rope_scaling", rope)
    saved.setdefault("torch_dtype", "bfloat16")
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_weights(args.out, args.seed, args.layers, args.width)
    write_tokenizers(args.out)
    print(f"tiny Llama model written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
