"""`validate` lists every problem of a file, each with its location; `--max-errors N` shows the first N."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.unit.test_bad_input import GOOD
from tests.unit.test_model_dir import TINY, model_dir
from tests.unit.test_preflight import ALL, experiment, fake_inspect

LOCATED = re.compile(r"^error: (?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<field>\S+): ")


def broken(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    text = GOOD
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "experiment_summary.yaml"
    path.write_text(text)
    return path


# Three problems the schema finds (pydantic) and four that span fields; one file for each kind.
SCHEMA_EDITS = [
    ("  epochs: 2\n", "  epochs: two\n"),
    ('name: "r4_lr1e-5"', 'name: "r4 lr"'),
    ('name: "capitalization"\n', 'name: "capital ization"\n'),
]
SCHEMA_FIELDS = ["controls.epochs", "runs[0].name", "evaluation.tasks[0].name"]
CROSS_EDITS = [
    ('prompt: "Capitalize the given word: {input}\\n"', 'prompt: "Capitalize the given word"'),
    ('{run: "base", tasks: ["capitalization"], epochs: null}', '{run: "base", tasks: ["capitalization"], epochs: [0]}'),
    ('{run: "r8_lr1e-5", tasks', '{run: "rank16", tasks'),
    ('{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 1]}',
     '{run: "r4_lr1e-5", tasks: ["capitalization"], epochs: [0, 2]}'),
]
CROSS_FIELDS = ["controls.prompt", "evaluation.matrix[8].epochs", "evaluation.matrix[0].epochs[1]", "evaluation.matrix[2].run"]


@pytest.mark.parametrize(("edits", "fields"), [(SCHEMA_EDITS, SCHEMA_FIELDS), (CROSS_EDITS, CROSS_FIELDS)],
                         ids=["schema", "cross-field"])
def test_validate_lists_every_problem_in_file_order(tmp_path: Path, edits: list[tuple[str, str]],
                                                    fields: list[str]) -> None:
    path = broken(tmp_path, edits)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    matches = [LOCATED.match(line) for line in lines]
    assert all(matches), lines
    assert sorted(m["field"].rstrip(":") for m in matches) == sorted(fields), lines  # type: ignore[index]
    assert all(m["path"] == str(path) for m in matches)  # type: ignore[index]
    positions = [(int(m["line"]), int(m["col"])) for m in matches]  # type: ignore[index]
    assert positions == sorted(positions), lines
    assert "more problem" not in result.stderr


def test_max_errors_shows_the_first_n_and_counts_the_rest(tmp_path: Path) -> None:
    path = broken(tmp_path, CROSS_EDITS)
    result = CliRunner().invoke(main, ["validate", str(path), "--max-errors", "2"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(LOCATED.match(line) for line in lines[:2]), lines
    assert "2 more" in lines[2] and "--max-errors" in lines[2]


def test_other_commands_give_the_first_problem_and_say_how_to_see_them_all(tmp_path: Path) -> None:
    path = broken(tmp_path, CROSS_EDITS)
    result = CliRunner().invoke(main, ["plan", str(path), "--offline"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert LOCATED.match(line) and f"(3 more problems: `reconcile validate {path}` lists them all)" in line


def test_every_missing_file_a_job_needs_is_listed(tmp_path: Path) -> None:
    """A misspelt data path and a misspelt task file: both reported before anything runs, each located."""
    exp = experiment(tmp_path, model_dir(tmp_path, TINY), task="tsak.py", data="dtaa.json")
    result = CliRunner().invoke(main, ["validate", str(exp)], env=fake_inspect(tmp_path, ALL))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if LOCATED.match(line)]
    fields = {LOCATED.match(line)["field"].rstrip(":") for line in errors}  # type: ignore[index]
    assert fields == {"data.training.path", "evaluation.tasks[0].script"}, result.stderr


def edit(exp: Path, old: str, new: str) -> None:
    path = exp / "experiment_summary.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_per_task_and_per_run_datasets_are_checked(tmp_path: Path) -> None:
    """Each dataset a job reads is checked where the spec names it: a task's dataset, a run's own dataset_path."""
    exp = experiment(tmp_path, model_dir(tmp_path, TINY))
    edit(exp, 'script: "task.py"}', 'script: "task.py", dataset: "evl.json"}')
    edit(exp, "parameters: {lora_rank: 4}", 'parameters: {lora_rank: 4, dataset_path: "trian.json"}')
    result = CliRunner().invoke(main, ["validate", str(exp)], env=fake_inspect(tmp_path, ALL))
    assert result.exit_code == 2, result.output
    errors = {LOCATED.match(line)["field"].rstrip(":"): line  # type: ignore[index]
              for line in result.stderr.splitlines() if LOCATED.match(line)}
    assert set(errors) == {"evaluation.tasks[0].dataset", "runs[0].parameters.dataset_path"}, result.stderr
    assert "evl.json does not exist" in errors["evaluation.tasks[0].dataset"]
    assert "trian.json does not exist" in errors["runs[0].parameters.dataset_path"]


def test_a_missing_eval_only_checkpoint_is_a_warning(tmp_path: Path) -> None:
    exp = experiment(tmp_path, model_dir(tmp_path, TINY))
    edit(exp, '  - {name: "base", type: "control", model: "tiny"}',
         '  - {name: "base", type: "control", model: "tiny"}\n'
         '  - {name: "eo", type: "eval-only", model: "tiny", parameters: {checkpoint_path: "ckpt/epoch_0"}}')
    edit(exp, '    - {run: "base", tasks: ["t"]}', '    - {run: "base", tasks: ["t"]}\n    - {run: "eo", tasks: ["t"]}')
    result = CliRunner().invoke(main, ["validate", str(exp)], env=fake_inspect(tmp_path, ALL))
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.stderr.splitlines() if "checkpoint_path" in line)
    assert warning.startswith("warning: ") and "runs[2].parameters.checkpoint_path" in warning
    assert "not visible here" in warning  # ckpt/ itself is not there: maybe a path on the cluster
