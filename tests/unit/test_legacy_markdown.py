"""The older `experiment_summary.md` (cruijff_kit's prose era) is read as a spec when its tables map, with a
located error where they do not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import SpecError
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand
from tests.conftest import EXPERIMENTS

LEGACY = EXPERIMENTS / "legacy_md" / "experiment_summary.md"


def copy(tmp: Path, text: str | None = None) -> Path:
    exp = tmp / "exp"
    exp.mkdir()
    (exp / "experiment_summary.md").write_text(LEGACY.read_text() if text is None else text)
    return exp


def test_the_tables_map_to_the_v02_spec(tmp_path: Path) -> None:
    loaded = load_spec(copy(tmp_path))  # a directory with only experiment_summary.md
    spec = loaded.spec
    assert loaded.path.name == "experiment_summary.md" and loaded.dialect == "v0.2"
    assert (spec.experiment.name, spec.experiment.date) == ("cap_rank_sweep", "2025-11-10")
    assert spec.experiment.question == "Does a higher LoRA rank capitalize words better?"
    assert (spec.tools.preparation, spec.tools.evaluation) == ("torchtune", "inspect-ai")
    assert [(r.name, r.type, r.model, r.parameters) for r in spec.runs] == [
        ("r4_lr1e-5", "fine-tuned", "Llama-3.2-1B-Instruct", {"lora_rank": 4, "lr": 1e-5}),
        ("r8_lr1e-5", "fine-tuned", "Llama-3.2-1B-Instruct", {"lora_rank": 8, "lr": 1e-5}),
        ("base", "control", "Llama-3.2-1B-Instruct", {}),
    ]
    assert spec.models.base[0].path == "/scratch/gpfs/MSALGANIK/pretrained-llms/Llama-3.2-1B-Instruct"
    assert spec.data.training.path == "/scratch/gpfs/MSALGANIK/data/capitalization/words_5L_80P_1000.json"
    assert (spec.controls.epochs, spec.controls.batch_size, spec.controls.lr) == (2, 4, 1e-5)
    assert spec.controls.system_prompt == "You are a helpful assistant." and spec.controls.lora_rank is None
    task = spec.evaluation.tasks[0]
    assert (task.name, task.dataset) == ("capitalization", "same")
    assert task.script == "/home/user/cruijff_kit/experiments/capitalization/inspect_task_capitalization.py"
    assert [(m.run, m.tasks, m.epochs) for m in spec.evaluation.matrix] == [
        ("r4_lr1e-5", ["capitalization"], [0, 1]), ("r8_lr1e-5", ["capitalization"], [1]),
        ("base", ["capitalization"], None)]
    assert spec.evaluation.temperature == 0.0 and spec.evaluation.scorer[0].name == "match"  # type: ignore[index]
    assert spec.output is not None
    assert spec.output.base_directory == "/scratch/gpfs/MSALGANIK/user/ck-outputs/cap_rank_sweep"
    assert spec.output.checkpoint_pattern == "ck-out-{run_name}/epoch_{N}"
    desired = expand(loaded)
    assert [u.key for u in desired.units] == [
        "finetune/r4_lr1e-5", "finetune/r8_lr1e-5", "eval/r4_lr1e-5/capitalization/epoch0",
        "eval/r4_lr1e-5/capitalization/epoch1", "eval/r8_lr1e-5/capitalization/epoch1",
        "eval/base/capitalization/base"]
    assert desired.layout.experiment_dir == loaded.path.parent
    assert str(desired.layout.epoch_dir("r4_lr1e-5", 1)) == \
        "/scratch/gpfs/MSALGANIK/user/ck-outputs/cap_rank_sweep/ck-out-r4_lr1e-5/epoch_1"


def test_the_sentence_form_of_the_evaluation_plan(tmp_path: Path) -> None:
    text = LEGACY.read_text()
    start, end = text.index("### Evaluation Matrix"), text.index("## Configuration")
    text = text[:start] + "All runs will be evaluated on capitalization at the final epoch.\n\n" + text[end:]
    spec = load_spec(copy(tmp_path, text)).spec
    assert [(m.run, m.epochs) for m in spec.evaluation.matrix] == \
        [("r4_lr1e-5", [1]), ("r8_lr1e-5", [1]), ("base", None)]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize("case", ["type", "no-plan", "no-epochs", "model", "no-runs-table", "title", "task-column"])
def test_what_cannot_be_mapped_is_one_located_error(tmp_path: Path, case: str) -> None:
    text = LEGACY.read_text()
    if case == "type":
        text = text.replace("| 8 | 1e-5 | Fine-tuned |", "| 8 | 1e-5 | Sometimes |")
        where, field, message = line_of(text, "Sometimes"), "runs[1].type", "'Sometimes' is not a run type"
        col = text.splitlines()[where - 1].index("Sometimes") + 1
    elif case == "no-plan":
        start, end = text.index("### Evaluation Matrix"), text.index("## Configuration")
        text = text[:start] + "We will see.\n\n" + text[end:]
        where, field, message = line_of(text, "## Evaluation Plan"), "evaluation.matrix", 'no "Evaluation Matrix"'
        col = None
    elif case == "no-epochs":
        text = text.replace("| r8_lr1e-5 | ✓ epoch 1 |", "| r8_lr1e-5 | ✓ |")
        where, field, message = line_of(text, "| r8_lr1e-5 | ✓ |"), "evaluation.matrix[1].epochs", "name the epochs"
        col = text.splitlines()[where - 1].index("✓") + 1
    elif case == "model":
        text = text.replace("| r8_lr1e-5 | Llama-3.2-1B-Instruct |", "| r8_lr1e-5 | Llama-3.2-3B |")
        where, field, message = line_of(text, "Llama-3.2-3B |"), "runs[1].model", "'Llama-3.2-3B' is not a model"
        col = text.splitlines()[where - 1].index("Llama-3.2-3B") + 1
    elif case == "no-runs-table":
        start = text.index("| Run Name | Model | LoRA Rank")
        end = text.index("## Resources")
        text = text[:start] + text[end:]
        where, field, message = line_of(text, "## All Runs"), "runs", 'no "All Runs" table'
        col = None
    elif case == "task-column":
        text = text.replace("| Run Name | capitalization | Notes |", "| Run Name | capitalisation | Notes |")
        where, field, message = line_of(text, "| Run Name | capitalisation"), "evaluation.matrix", \
            "column 'capitalisation' is not a task of the Evaluation Tasks table"
        col = text.splitlines()[where - 1].index("capitalisation") + 1
    else:
        text = text.replace("# cap_rank_sweep", "# Capitalization rank sweep")
        where, field, message = 1, "experiment.name", "not a safe name"
        col = 3
    exp = copy(tmp_path, text)
    with pytest.raises(SpecError) as raised:
        load_spec(exp)
    error = raised.value
    assert (error.line, error.field) == (where, field) and message in error.message, str(error)
    if col is not None:
        assert error.column == col, str(error)
    result = CliRunner().invoke(main, ["validate", str(exp)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {exp / 'experiment_summary.md'}:{where}:")


def test_a_yaml_beside_it_wins(tmp_path: Path) -> None:
    exp = copy(tmp_path)
    shutil.copy(EXPERIMENTS / "v02_sweep" / "experiment_summary.yaml", exp / "experiment_summary.yaml")
    assert load_spec(exp).path.name == "experiment_summary.yaml"


PLACEHOLDERS = {
    "Experiment Name": "cap_demo", "sanity_check or experiment": "experiment", "N": "2", "M": "1", "N+M": "3",
    "Scientific question": "Does rank matter?", "YYYY-MM-DD": "2025-11-10",
    "Factor1": "LoRA rank", "Level1, Level2, Level3": "4, 8", "Factor2": "Learning rate", "LevelA, LevelB": "1e-5",
    "Varying Param 1": "LoRA Rank", "Varying Param 2": "Learning Rate", "run_1": "r4", "run_2": "r8",
    "run_base": "base", "model": "Llama-3.2-1B-Instruct", "Model Name": "Llama-3.2-1B-Instruct",
    "path": "/models/Llama-3.2-1B-Instruct", "dataset_path": "/data/words.json", "task1": "capitalization",
    "task2": "capitalization_long", "script_path": "/repo/task.py", "dataset_name": "words", "run1": "r4",
    "recipe_name": "lora_finetune_single_device", "B": "4", "R": "varies", "LR": "1e-5", "T": "0.0",
    "scorer_type": "match", "output_dir_base": "/scratch/ck-outputs/cap_demo", "example_run": "r4",
}


def test_the_real_templates_example_maps_once_filled_in(cruijff: Path, tmp_path: Path) -> None:
    template = (cruijff / "legacy-md-007b2bc" / "templates" / "experiment_summary.md").read_text()
    example = template.split("```markdown\n", 1)[1].split("\n```\n", 1)[0]
    rows = {"| {run_1} | {model} | {value} | {value} |": "| r4 | {model} | 4 | 1e-5 |",
            "| {run_2} | {model} | {value} | {value} |": "| r8 | {model} | 8 | 1e-5 |",
            "✓ epoch X,Y": "✓ epoch 0,1", "{notes}": "", "{prompt}": "You are a helpful assistant.",
            "**Epochs:** {N}": "**Epochs:** 2", "~{X}": "~10", "{description}": "Tests capitalization",
            "| {task1} | `{script_path}` | {dataset_name} | Tests capitalization |":
            "| {task1} | `{script_path}` | {dataset_name} | Tests capitalization |\n"
            "| {task2} | `{script_path}` | {dataset_name} | Longer words |"}
    for old, new in rows.items():
        example = example.replace(old, new)
    pattern = "ck-out-{run_name}/epoch_{N}"  # the one brace text that is not a placeholder
    example = example.replace(pattern, "PATTERN")
    filled = re.sub(r"\{([^{}]+)\}", lambda m: PLACEHOLDERS.get(m.group(1), m.group(0)), example)
    filled = filled.replace("PATTERN", pattern)
    spec = load_spec(copy(tmp_path, filled)).spec
    assert [(r.name, r.type, r.parameters) for r in spec.runs] == [
        ("r4", "fine-tuned", {"lora_rank": 4, "lr": 1e-5}), ("r8", "fine-tuned", {"lora_rank": 8, "lr": 1e-5}),
        ("base", "control", {})]
    assert [(m.run, m.tasks, m.epochs) for m in spec.evaluation.matrix] == \
        [("r4", ["capitalization", "capitalization_long"], [0, 1])]
    assert spec.output is not None and spec.output.checkpoint_pattern == "ck-out-{run_name}/epoch_{N}"
