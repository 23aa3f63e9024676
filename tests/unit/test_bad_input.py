"""A corpus of broken experiment files: each exits 2 with one located line, no traceback, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import EXPERIMENTS

GOOD = (EXPERIMENTS / "sweep8" / "experiment_summary.yaml").read_text()

# (id, old text, new text, expected "field: message" fragment)
EDITS = [
    ("unknown-matrix-run", '{run: "r8_lr1e-5", tasks', '{run: "rank16", tasks', "evaluation.matrix[2].run: 'rank16' is not a run"),
    ("unknown-matrix-task", '{run: "r4_lr1e-5", tasks: ["capitalization"]', '{run: "r4_lr1e-5", tasks: ["capitalisation"]', "evaluation.matrix[0].tasks[0]: 'capitalisation' is not a task"),
    ("duplicate-run", 'name: "r4_lr5e-5"', 'name: "r4_lr1e-5"', "runs[1].name: 'r4_lr1e-5' is defined twice"),
    ("run-with-slash", 'name: "r4_lr1e-5"', 'name: "r4/lr1e-5"', "runs[0].name: 'r4/lr1e-5' is not a safe name"),
    ("run-with-dotdot", 'name: "r4_lr1e-5"', 'name: "../escape"', "runs[0].name: '../escape' is not a safe name"),
    ("run-with-space", 'name: "r4_lr1e-5"', 'name: "r4 lr"', "runs[0].name: 'r4 lr' is not a safe name"),
    ("run-with-shell", 'name: "r4_lr1e-5"', 'name: "r4;rm -rf ~"', "is not a safe name"),
    ("run-with-dollar", 'name: "r4_lr1e-5"', 'name: "$(id)"', "is not a safe name"),
    ("task-with-space", 'name: "capitalization"\n', 'name: "capital ization"\n', "evaluation.tasks[0].name"),
    ("epoch-out-of-range", '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 1]}', '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 2]}', "evaluation.matrix[0].epochs[1]: epoch 2 is out of range"),
    ("negative-epoch", '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 1]}', '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [-1]}', "evaluation.matrix[0].epochs[0]: epoch -1 is out of range"),
    ("string-epoch", '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 1]}', '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: ["0"]}', "evaluation.matrix[0].epochs[0]: expected an integer"),
    ("control-with-epochs", '{run: "base", tasks: ["capitalization"], epochs: null}', '{run: "base", tasks: ["capitalization"], epochs: [0]}', "evaluation.matrix[8].epochs: control runs are evaluated once"),
    ("finetune-without-epochs", '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 1]}', '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: null}', "needs epochs"),
    ("empty-matrix", "  matrix:\n", "  matrix: []\n  old_matrix:\n", "evaluation.matrix"),
    ("no-input-in-prompt", 'prompt: "Capitalize the given word: {input}\\n"', 'prompt: "Capitalize the given word"', "controls.prompt: the prompt must contain {input}"),
    ("stray-placeholder", 'prompt: "Capitalize the given word: {input}\\n"', 'prompt: "{word}: {input}"', "controls.prompt: unknown placeholder {word}"),
    ("epochs-not-int", "  epochs: 2\n", "  epochs: two\n", "controls.epochs: expected an integer"),
    ("epochs-zero", "  epochs: 2\n", "  epochs: 0\n", "controls.epochs"),
    ("bad-run-type", 'type: "fine-tuned", model: "Llama-3.2-1B-Instruct", parameters: {lora_rank: 4, lr: 1e-5}', 'type: "finetuned", model: "Llama-3.2-1B-Instruct", parameters: {lora_rank: 4, lr: 1e-5}', "runs[0].type"),
    ("unknown-model", 'name: "r4_lr1e-5", type: "fine-tuned", model: "Llama-3.2-1B-Instruct"', 'name: "r4_lr1e-5", type: "fine-tuned", model: "Llama-9B"', "runs[0].model: 'Llama-9B' is not a model"),
    ("bad-date", 'date: "2026-11-20"', 'date: "20 Nov 2026"', "experiment.date: '20 Nov 2026' is not a date"),
    ("missing-experiment-name", '  name: "cap_rank_lr_sweep"\n', "", "experiment.name: required field is missing"),
    ("both-dir-keys", '  dir: "."\n', '  dir: "."\n  directory: "."\n', "experiment.directory: give experiment.dir"),
    ("no-dir", '  dir: "."\n', "", "experiment.dir (v0.3.4) or experiment.directory (v0.2) is required"),
    ("missing-dataset-type", '  dataset_type: "chat_completion"\n', "", "controls.dataset_type is required"),
    ("bad-preparation", 'preparation: "torchtune"', 'preparation: "axolotl"', "tools.preparation"),
    ("command-without-command", 'preparation: "torchtune"', 'preparation: "command"', "tools.preparation: command needs tools.command"),
    ("lr-not-number", "lora_rank: 4, lr: 1e-5}", "lora_rank: 4, lr: fast}", "runs[0].parameters.lr: expected a number"),
    ("duplicate-key", "  batch_size: 4\n", "  batch_size: 4\n  batch_size: 8\n", "controls.batch_size: duplicate key"),
    ("duplicate-task", '  matrix:\n', '    - name: "capitalization"\n      script: "/scratch/other_task.py"\n  matrix:\n', ":61:13: evaluation.tasks[1].name: 'capitalization' is defined twice (first at evaluation.tasks[0])"),
    ("repeated-epoch", '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 1]}', '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [1, 1]}', ":62:65: evaluation.matrix[0].epochs[1]: epoch 1 is listed twice"),
    ("duplicate-cell", '{run: "base", tasks: ["capitalization"], epochs: null}', '{run: "base", tasks: ["capitalization", "capitalization"], epochs: null}', "evaluation.matrix[8].tasks[1]: base/capitalization is already"),
    ("python-tag", '  dir: "."\n', '  dir: !!python/object/apply:os.system ["id"]\n', "is not allowed"),
    ("tab-indent", "  epochs: 2\n", "\tepochs: 2\n", "invalid YAML"),
    ("unclosed-bracket", '  lora_rank: [4, 8, 16, 32]\n', '  lora_rank: [4, 8, 16, 32\n', "invalid YAML"),
    ("top-level-list", GOOD, "- 1\n- 2\n", "the top level must be a mapping"),
    ("empty-file", GOOD, "", "the file is empty"),
    ("eval-only-without-checkpoint", 'type: "control", model', 'type: "eval-only", model', "eval-only runs need parameters.checkpoint_path"),
    ("runs-not-list", "runs:\n", "runs: 5\nold_runs:\n", "runs: expected a list"),
    ("scorers-empty", '  scorers:\n    - name: "match"\n', "  scorers: []\n", "evaluation.scorers: list at least one scorer"),
    ("merge-key", 'output:\n  wandb_project: "cap_sweep"', 'output:\n  <<: {wandb_project: "x"}', "merge keys"),
]


def _case(tmp_path: Path, old: str, new: str) -> Path:
    assert old in GOOD, old
    path = tmp_path / "experiment_summary.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    return path


@pytest.mark.parametrize("name,old,new,expected", EDITS, ids=[e[0] for e in EDITS])
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_broken_file_exits_2_with_located_line(tmp_path: Path, name: str, old: str, new: str, expected: str,
                                               command: str) -> None:
    path = _case(tmp_path, old, new)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, [command, str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    # validate may list every problem an edit causes (a renamed run also orphans its matrix entries); others the first.
    assert len(lines) == 1 or (command == "validate" and lines), lines
    for line in lines:
        assert re.match(rf"^error: {re.escape(str(path))}:\d+:\d+: ", line), line  # file:line:col
    assert any(expected in line for line in lines), lines
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing may be written"


def test_corpus_is_large_enough() -> None:
    assert len(EDITS) >= 40


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = _case(tmp_path, *EDITS[0][1:3])
    proc = subprocess.run([sys.executable, "-m", "reconciler", "plan", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_an_experiment_with_nothing_to_do_is_refused(tmp_path: Path, command: str) -> None:
    """Zero units is an error, never "ALL_COMPLETE" on no work: a control run and an empty matrix."""
    head = GOOD[: GOOD.index("runs:\n")]
    path = tmp_path / "experiment_summary.yaml"
    path.write_text(head + 'runs:\n  - {name: "base", type: "control", model: "Llama-3.2-1B-Instruct", parameters: {}}\n'
                    'evaluation:\n  tasks:\n    - {name: "capitalization", script: "/scratch/t.py"}\n  matrix: []\n')
    args = [command, str(path)] + (["--backend", "local"] if command == "apply" else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or (command == "validate" and lines), lines  # validate may list every problem
    assert all(line.startswith(f"error: {path}:") for line in lines), lines
    assert any("evaluation.matrix" in line for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment_summary.yaml"], "nothing may be written"
