"""The jobs' environment and placement, as cruijff_kit's workflows set them: named by the experiment or the
user config (the experiment wins), activated before tune/inspect, said so when nothing is named."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.render import render_unit
from reconciler.scaffold.resources import UserConfig, parse_user_config, resources_for
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired, expand
from tests.conftest import EXPERIMENTS

SPEC = EXPERIMENTS / "scaffold_1b" / "experiment_summary.yaml"
FINETUNE = "finetune/Llama-3.2-1B-Instruct_rank4"
EVAL = "eval/Llama-3.2-1B-Instruct_rank4/capitalization/epoch0"


def desired_with(tmp: Path, reconciler_block: str) -> Desired:
    text = SPEC.read_text()
    assert "\nreconciler:" not in text
    exp = tmp / "exp"
    exp.mkdir()
    for item in SPEC.parent.iterdir():
        if item.name != "experiment_summary.yaml":
            os.symlink(item, exp / item.name)
    (exp / "experiment_summary.yaml").write_text(text + reconciler_block)
    return expand(load_spec(exp))


def script_of(desired: Desired, key: str, user: UserConfig = UserConfig()) -> str:
    unit = next(u for u in desired.units if u.key == key)
    return render_unit(desired, unit, user=user).script.text


def test_the_experiment_names_the_environment_and_placement_and_wins_over_the_user_config(tmp_path: Path) -> None:
    desired = desired_with(tmp_path, "reconciler:\n  conda_env: cruijff\n  modules: [anaconda3/2025.6]\n"
                                     "  account: msalganik\n  partition: gpu-test\n  constraint: gpu80\n")
    user = parse_user_config({"account": "mine", "partition": "cpu", "constraint": "skylake", "venv": "/opt/v"})
    for key in (FINETUNE, EVAL):
        script = script_of(desired, key, user)
        lines = script.splitlines()
        activate = lines.index("conda activate cruijff")
        assert lines.index("module load anaconda3/2025.6") < activate
        command = next(i for i, line in enumerate(lines) if line.startswith(("tune run", "inspect eval")))
        assert activate < command, "the environment must be active before tune/inspect run"
        assert "#SBATCH --account=msalganik" in lines and "#SBATCH --partition=gpu-test" in lines
        assert "#SBATCH --constraint=gpu80" in lines
        assert "/opt/v" not in script and "mine" not in script and "skylake" not in script


def test_the_user_config_applies_when_the_experiment_names_nothing(tmp_path: Path) -> None:
    desired = desired_with(tmp_path, "")
    user = parse_user_config({"account": "mine", "constraint": "skylake", "conda_env": "cruijff"})
    script = script_of(desired, FINETUNE, user)
    assert "conda activate cruijff\n" in script and "#SBATCH --account=mine\n" in script
    assert "#SBATCH --constraint=skylake\n" in script


def test_with_nothing_named_the_script_says_no_environment_is_activated(tmp_path: Path) -> None:
    desired = desired_with(tmp_path, "")
    for key in (FINETUNE, EVAL):
        script = script_of(desired, key)
        assert "# No environment is activated" in script
        assert "conda activate" not in script and "bin/activate" not in script


@pytest.mark.parametrize("value", ["cru;rm -rf ~", "$(touch x)", "a b", "env`id`", "x|y", "x&&y"])
def test_a_conda_env_with_shell_metacharacters_is_rejected_with_its_location(tmp_path: Path, value: str) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    text = SPEC.read_text() + f"reconciler:\n  conda_env: {value!r}\n"
    (exp / "experiment_summary.yaml").write_text(text)
    line = text.splitlines().index(f"  conda_env: {value!r}") + 1
    result = CliRunner().invoke(main, ["validate", str(exp)])
    assert result.exit_code == 2
    assert f"experiment_summary.yaml:{line}:14: reconciler.conda_env: {value!r} is not an environment name" \
        in result.stderr
    with pytest.raises(ScaffoldError, match=r"config.yaml: conda_env: .* is not an environment name"):
        parse_user_config({"conda_env": value}, Path("/home/u/.config/reconciler/config.yaml"))


def test_resources_take_the_experiment_constraint_over_the_size_table(tmp_path: Path) -> None:
    desired = desired_with(tmp_path, "reconciler:\n  constraint: a100\n")
    unit = next(u for u in desired.units if u.key == FINETUNE)
    assert resources_for(desired.loaded, unit).constraint == "a100"


def fake_tools(tmp: Path, names: list[str]) -> str:
    """A PATH holding only these programs (and what /bin has)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"


def validate(exp: Path, path: str, tmp: Path) -> str:
    env = {"PATH": path, "RECONCILER_CONFIG": str(tmp / "none.yaml")}
    result = CliRunner().invoke(main, ["validate", str(exp)], env=env)
    assert result.exit_code == 0, result.output
    return result.stderr


def test_validate_warns_once_when_tune_and_inspect_are_not_on_path(tmp_path: Path) -> None:
    exp = desired_with(tmp_path, "").loaded.root
    err = validate(exp, fake_tools(tmp_path, []), tmp_path)
    warnings = [line for line in err.splitlines() if "not on this PATH" in line]
    assert len(warnings) == 1 and "`tune` and `inspect` are not on this PATH" in warnings[0], err
    err = validate(exp, fake_tools(tmp_path, ["tune"]), tmp_path)
    assert [line for line in err.splitlines() if "not on this PATH" in line] == \
        [next(line for line in err.splitlines() if "`inspect` is not on this PATH" in line)]


def test_no_environment_warning_when_the_experiment_names_one(tmp_path: Path) -> None:
    exp = desired_with(tmp_path, "reconciler:\n  venv: /opt/venvs/cruijff\n").loaded.root
    assert "not on this PATH" not in validate(exp, fake_tools(tmp_path, []), tmp_path)


def test_no_tools_section_means_torchtune_and_inspect_ai(tmp_path: Path) -> None:
    text = SPEC.read_text()
    start = text.index("\ntools:")
    end = text.index("\n\n", start + 1) if "\n\n" in text[start + 1:] else None
    without = text[:start] + "\n" + text[end:] if end else text[:start]
    assert "tools:" not in without
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "experiment_summary.yaml").write_text(without)
    loaded = load_spec(exp)
    assert (loaded.spec.tools.preparation, loaded.spec.tools.evaluation) == ("torchtune", "inspect-ai")
    with_tools = expand(load_spec(SPEC))
    assert [u.fingerprint for u in expand(loaded).units] == [u.fingerprint for u in with_tools.units]
