"""Write the demo's base model directory: `python -m reconciler_standin.base_model DIR`."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from reconciler_standin import weights
from reconciler_standin.capitalizer import BASE_FILE, BASE_KEY, LOWER, N_IN, N_OUT, Matrix
from reconciler_standin.weights import Tensor

SEED = 14
COPY_LOGIT = 6.0  # the base model mostly echoes the word as it is (lower case)
# Letters the base model already capitalizes: the control run's low but non-zero accuracy.
ALREADY_CAPITALIZED = "mk"

README = """# capdemo-base

A 5.5 KB stand-in for a base LLM, used by the reconciler's runnable demo
(`tests/standin/experiment`). Written by `python -m reconciler_standin.base_model`.

It answers a prompt by copying its last word and choosing the word's first character from
52 candidates (a-z, A-Z) with a 52x26 matrix (`capitalizer.weight` in `model.safetensors`).
Untrained, it capitalizes only words starting with one of: {letters}.
`reconciler_standin.trainer` fine-tunes a LoRA adapter on top of it;
`--model capdemo/local -M model_path=DIR` serves it to inspect-ai.
"""


def base_matrix(seed: int = SEED) -> Matrix:
    """Per letter: a strong lower-case copy logit, a weaker upper-case one, small noise elsewhere."""
    rng = random.Random(seed)
    matrix = [[rng.uniform(-1.0, 1.0) for _ in range(N_IN)] for _ in range(N_OUT)]
    for i, letter in enumerate(LOWER):
        # the gap is how far "Apple" trails "apple": letters with a wide gap take longer to learn
        gap = -1.0 if letter in ALREADY_CAPITALIZED else rng.uniform(1.0, 4.0)
        matrix[i][i] = COPY_LOGIT
        matrix[N_IN + i][i] = COPY_LOGIT - gap
    return matrix


def write(model_dir: Path, seed: int = SEED) -> Path:
    """Create a HF-like model directory: weights, config, tokenizer and generation configs, README."""
    model_dir.mkdir(parents=True, exist_ok=True)
    weights.save(model_dir / BASE_FILE, {BASE_KEY: Tensor.from_rows(base_matrix(seed))}, {"format": "pt"})
    files = {
        "config.json": {
            "architectures": ["CapDemoForCapitalization"],
            "model_type": "capdemo",
            "vocab_in": N_IN,
            "vocab_out": N_OUT,
            "torch_dtype": "float32",
            "seed": seed,
        },
        "tokenizer_config.json": {"tokenizer_class": "CapDemoWhitespaceTokenizer", "model_max_length": 64},
        "generation_config.json": {"do_sample": False, "max_new_tokens": 20},
    }
    for name, content in files.items():
        (model_dir / name).write_text(json.dumps(content, indent=2) + "\n")
    (model_dir / "README.md").write_text(README.format(letters=", ".join(ALREADY_CAPITALIZED)))
    return model_dir


def main(argv: list[str] | None = None) -> None:
    """Command line: write the base model into DIR."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    print(f"wrote {write(args.model_dir, args.seed)}")


if __name__ == "__main__":
    main()
