"""The toy model: a frozen letter-to-character matrix plus a LoRA adapter, trained by plain SGD."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from reconciler_standin import weights
from reconciler_standin.weights import Tensor

LOWER = "abcdefghijklmnopqrstuvwxyz"
OUTPUTS = LOWER + LOWER.upper()  # the 52 characters the model can put first
N_IN, N_OUT = len(LOWER), len(OUTPUTS)

BASE_FILE = "model.safetensors"
BASE_KEY = "capitalizer.weight"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_A_KEY = "base_model.model.capitalizer.lora_A.weight"
LORA_B_KEY = "base_model.model.capitalizer.lora_B.weight"


class CheckpointError(ValueError):
    """A directory is not a loadable base model or epoch checkpoint."""


Matrix = list[list[float]]


def zeros(n_rows: int, n_cols: int) -> Matrix:
    """A fresh n_rows x n_cols matrix of zeros."""
    return [[0.0] * n_cols for _ in range(n_rows)]


def word_of(prompt: str) -> str:
    """The word to capitalize: the last whitespace-separated token of a prompt."""
    tokens = prompt.split()
    return tokens[-1] if tokens else ""


@dataclass
class Capitalizer:
    """Logits for the first output character = (base + scale * B @ A) @ onehot(first letter).

    The rest of the word is copied. A rank-r adapter can only move the logits inside an
    r-dimensional subspace, so low ranks fix the frequent letters first and interfere elsewhere.
    """

    base: Matrix  # N_OUT x N_IN, frozen
    lora_a: Matrix  # rank x N_IN
    lora_b: Matrix  # N_OUT x rank
    scale: float  # lora_alpha / rank

    @property
    def rank(self) -> int:
        """The adapter's rank (0 for a bare base model)."""
        return len(self.lora_a)

    def logits(self, letter: int) -> list[float]:
        """The N_OUT logits for a word starting with LOWER[letter]."""
        column = [row[letter] for row in self.base]
        if self.rank:
            hidden = [row[letter] for row in self.lora_a]
            for out, b_row in enumerate(self.lora_b):
                column[out] += self.scale * sum(b * h for b, h in zip(b_row, hidden))
        return column

    def answer(self, word: str) -> str:
        """Greedy decoding: the most likely first character, then the word's remaining letters."""
        if not word or word[0] not in LOWER:
            return word
        logits = self.logits(LOWER.index(word[0]))
        best = max(range(N_OUT), key=logits.__getitem__)
        return OUTPUTS[best] + word[1:]

    def loss(self, examples: list[tuple[int, int]]) -> float:
        """Mean cross-entropy of the target first character over (letter, target) pairs."""
        return sum(_cross_entropy(self.logits(x), y)[0] for x, y in examples) / len(examples)

    def gradients(self, examples: list[tuple[int, int]]) -> tuple[float, Matrix, Matrix]:
        """Mean loss and its gradients with respect to lora_a and lora_b (the base is frozen)."""
        grad_a, grad_b = zeros(self.rank, N_IN), zeros(N_OUT, self.rank)
        total = 0.0
        for letter, target in examples:
            loss, dlogits = _cross_entropy(self.logits(letter), target)
            total += loss
            hidden = [row[letter] for row in self.lora_a]
            for out, g in enumerate(dlogits):
                g *= self.scale / len(examples)
                b_row, gb_row = self.lora_b[out], grad_b[out]
                for k in range(self.rank):
                    gb_row[k] += g * hidden[k]
                    grad_a[k][letter] += g * b_row[k]
        return total / len(examples), grad_a, grad_b

    def max_abs(self) -> float:
        """The largest adapter weight in absolute value (inf or nan once training has blown up)."""
        return max((abs(v) for m in (self.lora_a, self.lora_b) for row in m for v in row), default=0.0)

    def step(self, grad_a: Matrix, grad_b: Matrix, lr: float) -> None:
        """One SGD update of the adapter."""
        for params, grads in ((self.lora_a, grad_a), (self.lora_b, grad_b)):
            for p_row, g_row in zip(params, grads):
                for k, g in enumerate(g_row):
                    p_row[k] -= lr * g


def _cross_entropy(logits: list[float], target: int) -> tuple[float, list[float]]:
    """Softmax cross-entropy and its gradient with respect to the logits."""
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    probs = [e / total for e in exps]
    grad = probs[:]
    grad[target] -= 1.0
    return -math.log(max(probs[target], 1e-300)), grad


def new_adapter(base: Matrix, rank: int, alpha: float, rng: random.Random) -> Capitalizer:
    """LoRA's initialisation: A uniform in +-1/sqrt(fan_in) (kaiming), B zero, so delta starts at 0."""
    bound = 1.0 / math.sqrt(N_IN)
    lora_a = [[rng.uniform(-bound, bound) for _ in range(N_IN)] for _ in range(rank)]
    return Capitalizer(base, lora_a, zeros(N_OUT, rank), alpha / rank)


def load_base(model_dir: Path) -> Matrix:
    """The frozen base matrix from a base model directory."""
    path = model_dir / BASE_FILE
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no {BASE_FILE}; not a capdemo base model directory")
    try:
        tensor = weights.load(path)[BASE_KEY]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: unreadable base weights: {exc!r}") from exc
    if tensor.shape != (N_OUT, N_IN):
        raise CheckpointError(f"{path}: {BASE_KEY} has shape {tensor.shape}, not {(N_OUT, N_IN)}")
    return tensor.rows()


def adapter_tensors(model: Capitalizer) -> dict[str, Tensor]:
    """The adapter's weights under PEFT-style names."""
    return {LORA_A_KEY: Tensor.from_rows(model.lora_a), LORA_B_KEY: Tensor.from_rows(model.lora_b)}


def load(model_dir: Path) -> Capitalizer:
    """Load an epoch checkpoint (adapter + the base it names) or a bare base model directory."""
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: not a directory")
    if not (model_dir / ADAPTER_CONFIG).is_file():
        if not (model_dir / BASE_FILE).is_file():
            raise CheckpointError(
                f"{model_dir}: neither an epoch checkpoint ({ADAPTER_CONFIG} + {ADAPTER_FILE}) "
                f"nor a base model directory ({BASE_FILE})"
            )
        return Capitalizer(load_base(model_dir), [], zeros(N_OUT, 0), 0.0)
    try:
        config = json.loads((model_dir / ADAPTER_CONFIG).read_text())
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
        base_dir = Path(config["base_model_name_or_path"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{model_dir / ADAPTER_CONFIG}: unreadable: {exc!r}") from exc
    if not base_dir.is_absolute():
        # post_finetune makes this absolute; a hub id here would need the network
        raise CheckpointError(
            f"{model_dir / ADAPTER_CONFIG}: base_model_name_or_path {base_dir} is not an absolute path"
        )
    try:
        tensors = weights.load(model_dir / ADAPTER_FILE)
        lora_a, lora_b = tensors[LORA_A_KEY], tensors[LORA_B_KEY]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{model_dir / ADAPTER_FILE}: unreadable adapter: {exc!r}") from exc
    if lora_a.shape != (rank, N_IN) or lora_b.shape != (N_OUT, rank):
        raise CheckpointError(
            f"{model_dir / ADAPTER_FILE}: shapes {lora_a.shape}, {lora_b.shape} do not match r={rank}"
        )
    return Capitalizer(load_base(base_dir), lora_a.rows(), lora_b.rows(), alpha / rank)
