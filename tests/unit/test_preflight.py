"""Bad input a job would meet is caught before any job runs: one located line each, exit 2, nothing submitted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.unit.test_model_dir import TINY, model_dir

SPEC = """\
experiment: {{name: "e", question: "q", date: "2026-01-01", dir: "."}}
tools: {{preparation: "torchtune"}}
controls: {{system_prompt: "", prompt: "{{input}}", dataset_type: "chat_completion", epochs: 2, batch_size: 4}}
models:
  base: [{{name: "tiny", path: "{model}"}}]
data: {{training: {{path: "{data}"}}}}
runs:
  - {{name: "r", type: "fine-tuned", model: "tiny", parameters: {{lora_rank: 4}}}}
  - {{name: "base", type: "control", model: "tiny"}}
evaluation:
  tasks: [{{name: "t", script: "{task}"}}]
  matrix:
    - {{run: "r", tasks: ["t"], epochs: [0, 1]}}
    - {{run: "base", tasks: ["t"]}}
"""


def experiment(tmp: Path, model: Path, task: str = "task.py", data: str = "d.json") -> Path:
    (tmp / "task.py").write_text("")
    (tmp / "d.json").write_text("{}")
    (tmp / "experiment_summary.yaml").write_text(SPEC.format(model=model, task=task, data=data))
    return tmp


def fake_inspect(tmp: Path, modules: list[str]) -> dict[str, str]:
    """An `inspect` on PATH whose Python has only `modules` (the jobs run this environment)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(f"#!/bin/sh\necho {' '.join(m for m in ('inspect_ai', 'transformers', 'accelerate') if m not in modules)}\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    inspect = bin_dir / "inspect"
    inspect.write_text(f"#!{python}\n")
    inspect.chmod(inspect.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECONCILER_CONFIG": str(tmp / "none.yaml")}


ALL = ["inspect_ai", "transformers", "accelerate"]


def run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=env)
    return result.exit_code, result.stderr


@pytest.mark.parametrize("command", [["validate"], ["scaffold"], ["plan", "--backend", "local"]])
def test_a_good_experiment_passes(tmp_path: Path, command: list[str]) -> None:
    exp = experiment(tmp_path, model_dir(tmp_path, TINY))
    code, err = run([*command, str(exp)], fake_inspect(tmp_path, ALL))
    assert code == 0 and "error" not in err, err


def breaks(tmp: Path, how: str) -> tuple[Path, str, str]:
    """An experiment broken one way, the field its error names, and a piece of the message."""
    model = model_dir(tmp, TINY)
    if how == "no-config":
        (model / "config.json").unlink()
        return experiment(tmp, model), "models.base[0].path", "no config.json"
    if how == "no-tokenizer":
        (model / "tokenizer.json").unlink()
        return experiment(tmp, model), "models.base[0].path", "no tokenizer.json"
    if how == "no-tiktoken":
        (model / "original" / "tokenizer.model").unlink()
        return experiment(tmp, model), "models.base[0].path", "original/tokenizer.model"
    if how == "architecture":
        (model / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt2"}))
        return experiment(tmp, model), "models.base[0].path", "model_type 'gpt2' is not a Llama model"
    if how == "misspelt-model":
        return experiment(tmp, tmp / "modle"), "models.base[0].path", "does not exist"
    if how == "task":
        return experiment(tmp, model, task="tsak.py"), "evaluation.tasks[0].script", "task file"
    if how == "data":
        return experiment(tmp, model, data="dta.json"), "data.training.path", "training data file"
    raise AssertionError(how)


CASES = ["no-config", "no-tokenizer", "no-tiktoken", "architecture", "misspelt-model", "task", "data"]


@pytest.mark.parametrize("how", CASES)
@pytest.mark.parametrize("command", [["validate"], ["scaffold"], ["plan", "--offline"], ["apply", "--backend", "local"]])
def test_each_problem_is_one_located_line_exit_2_and_nothing_is_written(tmp_path: Path, how: str,
                                                                        command: list[str]) -> None:
    exp, field, message = breaks(tmp_path, how)
    before = sorted(p.name for p in exp.iterdir())
    code, err = run([*command, str(exp)], fake_inspect(tmp_path, ALL))
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ") and field in line]
    assert len(lines) == 1 and message in lines[0], err
    assert "experiment_summary.yaml:" in lines[0]  # file:line:col
    assert "Traceback" not in err
    assert sorted(p.name for p in exp.iterdir() if p.name != "bin") == [n for n in before if n != "bin"]


def test_an_eval_environment_without_accelerate_is_refused_where_jobs_would_use_it(tmp_path: Path) -> None:
    exp = experiment(tmp_path, model_dir(tmp_path, TINY))
    env = fake_inspect(tmp_path, ["inspect_ai", "transformers"])
    for command in (["validate"], ["plan", "--backend", "local"], ["apply", "--backend", "local"]):
        code, err = run([*command, str(exp)], env)
        assert code == 2 and "lacks accelerate" in err and "tools.model_api" in err, (command, err)
    assert not (exp / ".reconciler" / "journal.jsonl").exists()
    code, err = run(["plan", "--offline", str(exp)], env)  # CI: the jobs' environment is not this one
    assert code == 0, err


def test_a_cluster_path_not_visible_here_is_a_warning_that_says_so(tmp_path: Path) -> None:
    exp = experiment(tmp_path, Path("/scratch/nobody/models/Llama-3.2-1B-Instruct"))
    code, err = run(["validate", str(exp)], fake_inspect(tmp_path, ALL))
    assert code == 0, err
    assert "warning:" in err and "not visible here (a path on the cluster?)" in err
