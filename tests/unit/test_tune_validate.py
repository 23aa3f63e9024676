"""Rendered torchtune configs, checked by torchtune itself: `tune validate`, and the dataset it builds.

torchtune is an optional extra (`pip install -e '.[stack]'`, torch from the CPU wheel); without it
these tests skip. `tune validate` resolves every top-level `_component_` and binds its arguments.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.scaffold.render import render_unit
from reconciler.scaffold.resources import UserConfig
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand
from tests.conftest import EXPERIMENTS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchtune") is None,
    reason="torchtune is not installed: it is the optional extra `.[stack]` "
           "(pip install torch==2.13.0 torchtune==0.6.1 torchao==0.10.0), needed to validate fine-tune configs",
)

CASES = [
    ("scaffold_sizes", "r1b"),
    ("scaffold_sizes", "r3b"),
    ("scaffold_sizes", "r8b"),
    ("scaffold_sizes", "r70b"),
    ("scaffold_1b", "Llama-3.2-1B-Instruct_rank4"),
    ("scaffold_8b", "Llama-3.1-8B-Instruct_rank16"),
]


def tune_command() -> list[str]:
    beside = Path(sys.executable).parent / "tune"
    found = str(beside) if beside.exists() else shutil.which("tune")
    if found is None:
        pytest.skip("torchtune is importable but its `tune` command is not on PATH")
    return [found]


def rendered_config(exp: Path, run: str, tmp_path: Path) -> Path:
    """The run's finetune.yaml as rendered, written to tmp_path."""
    desired = expand(load_spec(exp))
    rendered = render_unit(desired, desired.by_key()[f"finetune/{run}"], user=UserConfig())
    config = next(f for f in rendered.configs if f.path.name == "finetune.yaml")
    path = tmp_path / f"{run}.yaml"
    path.write_text(config.text)
    return path


def tune_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tune_command(), "validate", str(path)], capture_output=True, text=True, timeout=300,
                          check=False)


def validate_in_process(path: Path) -> None:
    """What `tune validate` does (OmegaConf.load + config.validate), without a new interpreter per file."""
    from omegaconf import OmegaConf
    from torchtune import config as tt_config

    tt_config.validate(OmegaConf.load(path))


@pytest.mark.slow
@pytest.mark.parametrize("run", ["r1b", "r3b", "r8b"])
def test_tune_validate_command_accepts_the_rendered_config(run: str, tmp_path: Path) -> None:
    proc = tune_validate(rendered_config(EXPERIMENTS / "scaffold_sizes", run, tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Config is well-formed!" in proc.stdout


@pytest.mark.parametrize(("experiment", "run"), CASES, ids=[c[1] for c in CASES])
def test_every_rendered_finetune_yaml_validates(experiment: str, run: str, tmp_path: Path) -> None:
    validate_in_process(rendered_config(EXPERIMENTS / experiment, run, tmp_path))


def test_tune_validate_rejects_a_misspelt_argument(tmp_path: Path) -> None:
    """The check has teeth: the same config with one keyword misspelt fails, in the command and in process."""
    from torchtune.config._errors import ConfigError

    path = rendered_config(EXPERIMENTS / "scaffold_sizes", "r1b", tmp_path)
    path.write_text(path.read_text().replace("  lora_rank: 8\n", "  lora_rnak: 8\n"))
    with pytest.raises(ConfigError, match="lora_rnak"):
        validate_in_process(path)
    proc = tune_validate(path)
    assert proc.returncode != 0
    assert "lora_rnak" in proc.stdout + proc.stderr


class RecordingTokenizer:
    """Stands in for the Llama 3 tokenizer: applies the config's prompt template, records the messages."""

    def __init__(self, template: Any) -> None:
        self.template = template
        self.seen: list[list[tuple[str, str]]] = []
        self.max_seq_len = 2048

    def __call__(self, sample: dict[str, Any], inference: bool = False) -> dict[str, Any]:
        messages = self.template(sample["messages"]) if self.template else sample["messages"]
        self.seen.append([(m.role, m.text_content) for m in messages])
        return {**sample, "tokens": [1, 2, 3], "mask": [True, False, False]}


def test_torchtune_builds_the_training_samples_the_eval_will_see(tmp_path: Path) -> None:
    """Through OmegaConf and torchtune's own instantiate: the system prompt and the formatted prompt are exact."""
    from omegaconf import OmegaConf
    from torchtune import config as tt_config
    from torchtune.data._prompt_templates import _get_prompt_template

    prompt = "It's \"$(rm -rf ~)\" `x` \\n done\n{input} -> {{ok}} %s"
    system = "Say \"hi\" and 'bye' \\ end"
    exp = tmp_path / "exp"
    shutil.copytree(EXPERIMENTS / "scaffold_1b", exp)
    spec = exp / "experiment_summary.yaml"
    text = spec.read_text()
    text = text.replace('  prompt: "Capitalize the given word: {input}\\n"',
                        "  prompt: " + yaml.safe_dump(prompt, default_style='"', width=1 << 30).strip())
    text = text.replace('"You are a helpful assistant."',
                        yaml.safe_dump(system, default_style='"', width=1 << 30).strip())
    spec.write_text(text)
    path = rendered_config(exp, "Llama-3.2-1B-Instruct_rank4", tmp_path)

    cfg = OmegaConf.load(path)
    template = _get_prompt_template(OmegaConf.to_object(cfg.tokenizer.prompt_template))
    tokenizer = RecordingTokenizer(template)
    for node, split in ((cfg.dataset, "train"), (cfg.dataset_val, "validation")):
        dataset = tt_config.instantiate(node, tokenizer)
        records = yaml.safe_load((exp / "data" / "words_5L_80P_10.json").read_text())[split]
        assert len(dataset) == len(records)
        dataset[0]
        assert tokenizer.seen[-1] == [
            ("system", system),
            ("user", prompt.format(input=records[0]["input"])),
            ("assistant", records[0]["output"]),
        ]

