"""The README's "Your own experiment" walkthrough, run as written: its experiment file, its commands, a converged run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.demo_env import env
from tests.real_stack import EXAMPLE, requires_stack

pytestmark = [pytest.mark.slow, requires_stack]


def walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Your own experiment", 1)[1].split("\n## ", 1)[0]


def code_blocks(section: str) -> list[str]:
    """The fenced blocks, unindented (they sit inside a numbered list)."""
    return [textwrap.dedent(b) for b in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S)]


def test_the_walkthrough_converges_as_written(tmp_path: Path, tiny_model: Path) -> None:
    blocks = code_blocks(walkthrough())
    spec = next(b for b in blocks if b.startswith("# yaml-language-server"))
    commands = next(b for b in blocks if b.startswith("reconcile validate"))
    # Step 1, as its commands do it (the tiny model is made once per test session).
    exp = tmp_path / "my-sweep"
    (exp / "data").mkdir(parents=True)
    shutil.copytree(tiny_model, exp / "model")
    shutil.copy2(EXAMPLE / "data" / "words.json", exp / "data" / "words.json")
    shutil.copy2(EXAMPLE / "inspect_task.py", exp / "inspect_task.py")
    (exp / "experiment_summary.yaml").write_text(spec)
    subprocess.run(["reconcile", "schema", "--output", "experiment_summary.schema.json"], cwd=exp, env=env(),
                   check=True)
    outputs = []
    for line in commands.splitlines():
        words = shlex.split(line, comments=True)
        done = subprocess.run(words, cwd=exp, env=env(), capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    validate, planned, applied, status = outputs
    assert "1 fine-tunes, 2 evals" in validate
    assert "Plan: 3 to submit" in planned
    assert "converged" in applied and (exp / "summary.md").is_file() and (exp / "summary_accuracy.png").is_file()
    assert "3 done" in status
