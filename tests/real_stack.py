"""The real stack for tests: the tiny model (made once per session) and a copy of examples/capitalization using it.

The demo experiment is what the README runs: real `tune run` fine-tunes (torchtune 0.6.1) and real
`inspect eval --model hf/local` evals of a tiny random-weight Llama-3.2 model, on the CPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "capitalization"
MAKE_MODEL = REPO / "examples" / "tiny-llama" / "make_model.py"
STACK = ("torch", "torchtune", "transformers", "accelerate", "inspect_ai")


def missing_stack() -> list[str]:
    return [name for name in STACK if importlib.util.find_spec(name) is None]


requires_stack = pytest.mark.skipif(
    bool(missing_stack()),
    reason=f"the real stack is not installed ({', '.join(missing_stack())} missing): "
           "pip install -e '.[stack]' (RECONCILER_TEST_LIGHT=1 skips it on purpose)",
)


def make_tiny_model(dst: Path) -> Path:
    done = subprocess.run([sys.executable, str(MAKE_MODEL), str(dst)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"make_model.py failed:\n{done.stdout}\n{done.stderr}")
    return dst


def copy_real_demo(dst: Path, model: Path, experiment: str | None = None) -> Path:
    """examples/capitalization's inputs in `dst`, its base model pointing at `model`."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(EXAMPLE / "inspect_task.py", dst / "inspect_task.py")
    shutil.copytree(EXAMPLE / "data", dst / "data")
    text = (EXAMPLE / "experiment_summary.yaml").read_text()
    assert 'path: "../tiny-llama/model"' in text
    text = text.replace('path: "../tiny-llama/model"', f'path: "{model}"')
    if experiment is not None:
        text = text.replace('name: "capitalization_demo"', f'name: "{experiment}"')
    (dst / "experiment_summary.yaml").write_text(text)
    return dst
