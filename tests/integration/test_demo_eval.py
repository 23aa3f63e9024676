"""The real `inspect eval` CLI scores the demo's base model and trained checkpoints offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml
from inspect_ai.log import EvalLog, read_eval_log

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "tests" / "standin" / "experiment"
DATA = EXAMPLE / "data" / "words.json"
BASE = EXAMPLE / "base_model"
TASK = f"{REPO / 'examples' / 'capitalization' / 'inspect_task.py'}@capitalization"
RUNS = {"r4_lr1e-4": "1e-4", "r4_lr5e-5": "5e-5"}  # same rank, two learning rates

pytestmark = pytest.mark.slow


def inspect_cli() -> str:
    """The venv's `inspect` script (next to this interpreter), else the one on PATH."""
    local = Path(sys.executable).with_name("inspect")
    found = str(local) if local.exists() else shutil.which("inspect")
    if not found:
        pytest.fail("the inspect CLI is not installed")
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two fine-tuned runs of 2 epochs each, trained by the real trainer CLI."""
    if "reconciler_standin" not in {ep.name for ep in entry_points(group="inspect_ai")}:
        pytest.fail("the stand-in capdemo model API is not registered: run `pip install -e tests/standin` "
                    "(scripts/test does)")
    root = tmp_path_factory.mktemp("demo")
    for run, lr in RUNS.items():
        config = {
            "output_dir": str(root / run / "artifacts"),
            "dataset_path": str(DATA),
            "model_checkpoint": str(BASE),
            "epochs": 2,
            "lr": lr,
            "lora_rank": 4,
            "batch_size": 8,
            "seed": 14,
            "prompt": "Capitalize the given word: {input}\n",
            "system_prompt": "You are a helpful assistant.",
            "seconds_per_epoch": 0,
        }
        (root / run).mkdir()
        (root / run / "setup_finetune.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "reconciler_standin.trainer"]
        command += ["--config", str(root / run / "setup_finetune.yaml")]
        result = subprocess.run(command, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
    return root


def run_eval(
    work: Path, label: str, model_path: Path, run: str, epoch: int | None
) -> subprocess.CompletedProcess[str]:
    """One `inspect eval` into its own log dir, as a cell's job script would run it."""
    config = work / "r4_lr1e-4" / "setup_finetune.yaml"  # prompt and system_prompt travel by file
    args = [
        inspect_cli(), "eval", TASK,
        "--model", "capdemo/local",
        "-M", f"model_path={model_path}",
        "-T", f"data_path={DATA}",
        "-T", f"config_path={config}",
        "-T", f"vis_label={label}",
        "--log-dir", str(work / "logs" / label),
        "--metadata", f"run={run}",
        "--display", "none",
    ]
    if epoch is not None:
        args += ["--metadata", f"epoch={epoch}"]
    # cwd outside the repo: inspect reads a .env found upward from the cwd
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=work)


def only_log(log_dir: Path) -> EvalLog:
    """The single .eval log in a directory, header only."""
    logs = sorted(log_dir.glob("*.eval"))
    assert len(logs) == 1, logs
    return read_eval_log(str(logs[0]), header_only=True)


def accuracy(log: EvalLog) -> float:
    """The headline accuracy of a complete capitalization log, after checking it is complete."""
    assert log.status == "success", log.error
    assert log.results is not None
    assert log.results.completed_samples == log.results.total_samples == 40
    assert log.eval.dataset.samples == 40 and log.eval.config.limit is None
    assert log.eval.task == "capitalization"
    score = log.results.scores[0]
    assert score.name == "match" and score.params == {"location": "exact", "ignore_case": False}
    return score.metrics["accuracy"].value


def test_control_and_checkpoints_score_differently(work: Path) -> None:
    cells = {"control": (BASE, "base", None)}
    for run in RUNS:
        for epoch in (0, 1):
            cells[f"{run}_epoch{epoch}"] = (work / run / "artifacts" / f"epoch_{epoch}", run, epoch)
    scores: dict[str, float] = {}
    for label, (model_path, run, epoch) in cells.items():
        result = run_eval(work, label, model_path, run, epoch)
        assert result.returncode == 0, result.stderr
        log = only_log(work / "logs" / label)
        assert log.eval.model == "capdemo/local"
        assert log.eval.model_args == {"model_path": str(model_path)}
        assert log.eval.metadata == ({"run": run} if epoch is None else {"run": run, "epoch": epoch})
        scores[label] = accuracy(log)
    fast, slow = RUNS
    assert 0 < scores["control"] < min(v for k, v in scores.items() if k != "control")
    for run in RUNS:
        assert scores[f"{run}_epoch1"] > scores[f"{run}_epoch0"]
    for epoch in (0, 1):
        assert scores[f"{fast}_epoch{epoch}"] > scores[f"{slow}_epoch{epoch}"]


def test_a_missing_checkpoint_fails_before_any_log(work: Path) -> None:
    result = run_eval(work, "missing", work / "nowhere" / "epoch_0", "nowhere", 0)
    assert result.returncode != 0
    assert "not a directory" in result.stderr
    assert not list((work / "logs").glob("missing/*.eval"))
