"""The demo trainer writes checkpoints and stdout the way torchtune does, deterministically."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler_standin import base_model, capitalizer, trainer, weights

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "tests" / "standin" / "experiment"
DATA = EXAMPLE / "data" / "words.json"
BASE = EXAMPLE / "base_model"
LOSS_RE = re.compile(r"(\d+)\|(\d+)\|Loss: ([0-9.eE+-]+)")  # cruijff_kit's extract_loss.py
BASE_FILES = {"README.md", "config.json", "generation_config.json", "tokenizer_config.json"}


def write_config(tmp_path: Path, name: str = "run", **overrides: Any) -> Path:
    """A flat trainer YAML under tmp_path/name; fast (no sleeping) unless overridden."""
    config = {
        "output_dir": str(tmp_path / name / "artifacts"),
        "dataset_path": str(DATA),
        "model_checkpoint": str(BASE),
        "epochs": 2,
        "lr": "1e-4",  # a string on purpose: PyYAML reads 1e-4 as one
        "lora_rank": 4,
        "batch_size": 8,
        "seed": 14,
        "prompt": "Capitalize the given word: {input}\n",
        "system_prompt": "You are a helpful assistant.",
        "seconds_per_epoch": 0,
    }
    config.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(config: Path) -> subprocess.CompletedProcess[str]:
    """The trainer exactly as a job script runs it (bytes first: text mode would turn \r into \n)."""
    raw = subprocess.run(
        [sys.executable, "-m", "reconciler_standin.trainer", "--config", str(config)],
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    return subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())


# An audit hook sees every real open-for-write and mkdir, so the test checks the order on disk,
# not what the trainer says it did. Hooks cannot be removed; it records only while `_events` is set.
_events: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _events is None:
        return
    if event == "open" and isinstance(args[1], str) and any(c in args[1] for c in "wax"):
        _events.append(os.fsdecode(args[0]))
    elif event == "os.mkdir":
        _events.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def test_checkpoints_are_written_in_torchtune_order(tmp_path: Path) -> None:
    global _events
    config = write_config(tmp_path, epochs=3)
    _events = []
    try:
        assert trainer.main(["--config", str(config)]) == 0
        raw = list(_events)
        events = list(dict.fromkeys(_events))  # mkdir(parents=True) may retry the same dir
    finally:
        _events = None
    artifacts = tmp_path / "run" / "artifacts"
    for epoch in range(3):
        epoch_dir = artifacts / f"epoch_{epoch}"
        mine = [Path(e) for e in events if Path(e) == epoch_dir or Path(e).parent == epoch_dir]
        names = ["<mkdir>" if p == epoch_dir else p.name for p in mine]
        assert names[:5] == [
            "<mkdir>",
            "adapter_model.pt",
            "adapter_model",
            "adapter_model.safetensors",
            "adapter_config.json",
        ]
        assert set(names[5:]) == BASE_FILES  # weights (model.safetensors) are never copied
        assert not (epoch_dir / "recipe_state.pt").exists()  # torchtune 0.6.1 keeps it beside the epochs
        assert (epoch_dir / "adapter_model").is_dir() and not any((epoch_dir / "adapter_model").iterdir())
    # As torchtune 0.6.1: the recipe state after epochs 0 and 1 (not 2), each time after the epoch's files.
    state = str(artifacts / "recipe_state" / "recipe_state.pt")
    writes = [i for i, e in enumerate(raw) if e == state]
    assert len(writes) == 2
    for epoch, at in zip((0, 1), writes):
        assert max(i for i, e in enumerate(raw) if Path(e).parent == artifacts / f"epoch_{epoch}") < at
        assert min(i for i, e in enumerate(raw) if Path(e).parent == artifacts / f"epoch_{epoch + 1}") > at
    assert sorted(p.name for p in artifacts.iterdir()) == ["epoch_0", "epoch_1", "epoch_2", "recipe_state"]


def test_stdout_looks_like_torchtune(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Running LoRAFinetuneRecipeSingleDevice with resolved config:\n")
    assert "lora_rank: 4" in out
    matches = [(int(e), int(s), float(loss)) for e, s, loss in LOSS_RE.findall(out)]
    assert {e for e, _, _ in matches} == {1, 2}  # 1-based in the progress bar
    assert [s for _, s, _ in matches] == list(range(1, 51))  # 200 examples / batch 8 = 25 steps per epoch
    assert matches[-1][2] < matches[0][2]
    # tqdm style: \r-separated updates share a physical line
    assert all(len(LOSS_RE.findall(line)) == 25 for line in out.split("\n") if "|Loss: " in line)
    assert "\r1|2|Loss: " in out
    assert len(re.findall(r"^Validation loss: \d+\.\d{4}$", out, re.M)) == 2
    assert out.count("Starting checkpoint save...") == 2
    for epoch in (0, 1):
        saved = tmp_path / "run" / "artifacts" / f"epoch_{epoch}" / "adapter_model.safetensors"
        line = rf"^Adapter checkpoint of size \d+\.\d\d GiB saved to {re.escape(str(saved))}$"
        assert re.search(line, out, re.M)
    assert len(re.findall(r"^Checkpoint saved in \d+\.\d\d seconds\.$", out, re.M)) == 2


def test_fail_at_epoch_exits_nonzero_after_the_earlier_epochs(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, epochs=3, fail_at_epoch=1))
    assert result.returncode == 1
    assert "fail_at_epoch=1" in result.stderr
    artifacts = tmp_path / "run" / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["epoch_0", "recipe_state"]
    assert (artifacts / "recipe_state" / "recipe_state.pt").is_file()
    assert {e for e, _, _ in LOSS_RE.findall(result.stdout)} == {"1"}


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, epochs=1, gradient_accumulation_steps=2))
    assert result.returncode == 0, result.stderr
    # 25 micro-batches of 8, two per optimizer step: 13 steps (the last one takes the odd batch)
    assert [int(s) for _, s, _ in LOSS_RE.findall(result.stdout)] == list(range(1, 14))


def test_a_diverging_run_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, epochs=3, lora_rank=1, lr=0.01))
    assert result.returncode == 1
    assert "training diverged" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": None}, "missing required keys: lr"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"lora_rank": 0}, "lora_rank must be an integer >= 1"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"prompt": "no placeholder"}, "prompt must contain {input}"),
        ({"model_checkpoint": "/nonexistent"}, "model_checkpoint"),
        ({"dataset_path": "/nonexistent.json"}, "dataset_path"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    config = write_config(tmp_path, **overrides)
    result = run_cli(config)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


def _adapter_bytes(
    tmp_path: Path, name: str, seed: int, capsys: pytest.CaptureFixture[str]
) -> tuple[bytes, list[str]]:
    """Train 2 epochs in-process; the final adapter's bytes and the loss lines printed."""
    assert trainer.main(["--config", str(write_config(tmp_path, name=name, seed=seed))]) == 0
    losses = LOSS_RE.findall(capsys.readouterr().out)
    return (tmp_path / name / "artifacts" / "epoch_1" / "adapter_model.safetensors").read_bytes(), losses


def test_training_is_deterministic_given_the_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _adapter_bytes(tmp_path, "a", 14, capsys)
    again = _adapter_bytes(tmp_path, "b", 14, capsys)
    other = _adapter_bytes(tmp_path, "c", 15, capsys)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


def test_adapter_safetensors_parses(tmp_path: Path) -> None:
    assert trainer.main(["--config", str(write_config(tmp_path, epochs=1))]) == 0
    epoch_dir = tmp_path / "run" / "artifacts" / "epoch_0"
    blob = (epoch_dir / "adapter_model.safetensors").read_bytes()
    # parse by the spec, independently of reconciler_standin.weights
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    assert header.pop("__metadata__") == {"format": "pt"}
    shapes = {name: tuple(info["shape"]) for name, info in header.items()}
    assert shapes == {capitalizer.LORA_A_KEY: (4, 26), capitalizer.LORA_B_KEY: (52, 4)}
    spans = sorted(tuple(info["data_offsets"]) for info in header.values())
    assert spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[-1][1] == len(blob) - 8 - header_len
    assert all(info["dtype"] == "F32" for info in header.values())
    assert (8 + header_len) % 8 == 0
    assert weights.load(epoch_dir / "adapter_model.safetensors")[capitalizer.LORA_B_KEY].shape == (52, 4)
    adapter_config = json.loads((epoch_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8
    assert adapter_config["base_model_name_or_path"] == str(BASE.resolve())
    assert capitalizer.load(epoch_dir).rank == 4


def test_weights_reject_a_truncated_file() -> None:
    blob = weights.encode({"w": weights.Tensor((2, 3), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])})
    assert weights.decode(blob)[0]["w"].rows() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(ValueError, match="data offsets"):
        weights.decode(blob[:-4])


def test_committed_base_model_matches_its_generator(tmp_path: Path) -> None:
    fresh = base_model.write(tmp_path / "base")
    for name in sorted(p.name for p in fresh.iterdir()):
        assert (BASE / name).read_bytes() == (fresh / name).read_bytes(), name
    model = capitalizer.load(BASE)
    answers = [model.answer(r["input"]) == r["output"] for r in json.loads(DATA.read_text())["test"]]
    assert 0 < sum(answers) < len(answers) / 4  # the control run: low but not zero


def test_load_rejects_a_directory_that_is_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(capitalizer.CheckpointError, match="neither an epoch checkpoint"):
        capitalizer.load(tmp_path)
    with pytest.raises(capitalizer.CheckpointError, match="not a directory"):
        capitalizer.load(tmp_path / "missing")
