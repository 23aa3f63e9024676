"""Rendered job scripts and configs: goldens, resources, quoting, stand-in runs, ownership, remedies.

Regenerate the golden files with `UPDATE_GOLDEN=1 pytest tests/unit/test_scaffold_render.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.scaffold import ScaffoldError
from reconciler.plan.remedies import Remedy, failure_cause, next_remedy
from reconciler.scaffold.remedies import baseline
from reconciler.scaffold.render import RenderedUnit, render_unit, yaml_arg
from reconciler.scaffold.resources import (
    UserConfig,
    gpu_hours,
    model_size,
    parse_user_config,
    resources_for,
)
from reconciler.scaffold.write import check_inside, scaffold, sync_unit
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired, Unit, expand
from tests.conftest import EXPERIMENTS, FIXTURES

GOLDEN = FIXTURES / "golden" / "scaffold"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NO_USER = UserConfig()

HOSTILE_PROMPT = "It's \"$(rm -rf ~)\" `x` \\n done\n{input} $(touch canary) `touch canary`; echo pwned > canary"
HOSTILE_SYSTEM = "Say \"hi\" and 'bye' $(touch canary) \\ end\t%s {{braces}}"


def desired_of(name: str) -> Desired:
    return expand(load_spec(EXPERIMENTS / name))


def unit_of(desired: Desired, key: str) -> Unit:
    return desired.by_key()[key]


def files_of(rendered: RenderedUnit) -> dict[str, str]:
    return {f.path.name: f.text for f in rendered.files}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept the change)"


# ---------------------------------------------------------------- goldens

GOLDEN_CASES = [
    ("scaffold_1b", "finetune/Llama-3.2-1B-Instruct_rank4", "1b"),
    ("scaffold_1b", "eval/Llama-3.2-1B-Instruct_rank4/capitalization/epoch0", "1b"),
    ("scaffold_8b", "finetune/Llama-3.1-8B-Instruct_rank16", "8b"),
    ("scaffold_8b", "eval/Llama-3.1-8B-Instruct_rank16/capitalization/epoch0", "8b"),
    ("scaffold_1b", "eval/Llama-3.2-1B-Instruct_base/capitalization/base", "control"),
]


@pytest.mark.parametrize(("experiment", "key", "folder"), GOLDEN_CASES)
def test_rendered_files_match_golden(experiment: str, key: str, folder: str) -> None:
    desired = desired_of(experiment)
    rendered = render_unit(desired, unit_of(desired, key), user=NO_USER)
    root = desired.layout.experiment_dir
    suffix = "" if key.startswith("finetune/") else "_" + key.rsplit("/", 1)[1]
    for name, text in files_of(rendered).items():
        stem, dot, ext = name.partition(".")
        portable = text.replace(str(root), "{EXP}").replace(str(root.parent), "{EXP_PARENT}")
        check_golden(f"{folder}/{stem}{suffix}{dot}{ext}", portable)


def test_control_eval_uses_base_model_and_the_runs_dataset_and_prompts() -> None:
    desired = desired_of("scaffold_1b")
    ft = render_unit(desired, unit_of(desired, "eval/Llama-3.2-1B-Instruct_rank4/capitalization/epoch0"))
    base = render_unit(desired, unit_of(desired, "eval/Llama-3.2-1B-Instruct_base/capitalization/base"))
    ft_cfg = yaml.safe_load(ft.configs[0].text)
    base_cfg = yaml.safe_load(base.configs[0].text)
    assert base_cfg["model_path"] == "/models/Llama-3.2-1B-Instruct"
    assert base_cfg["is_finetuned"] is False and "epoch" not in base_cfg
    for key in ("data_path", "prompt", "system_prompt", "dataset_type", "use_chat_template", "scorers"):
        assert base_cfg[key] == ft_cfg[key], key
    assert "--metadata epoch=" not in base.script.text
    assert "--metadata epoch=0" in ft.script.text


# ---------------------------------------------------------------- resources

SIZES = {
    # run: (mem, gpus, cpus, constraint)
    "r1b": ("32G", 1, 4, None),
    "r3b": ("64G", 1, 4, "gpu80"),
    "r8b": ("96G", 1, 8, "gpu80"),
    "r70b": ("256G", 4, 8, "gpu80"),
}


@pytest.mark.parametrize("run", sorted(SIZES))
def test_resources_follow_the_size_table(run: str) -> None:
    mem, gpus, cpus, constraint = SIZES[run]
    desired = desired_of("scaffold_sizes")
    ft = render_unit(desired, unit_of(desired, f"finetune/{run}"), user=NO_USER)
    script = ft.script.text
    assert f"#SBATCH --mem={mem}\n" in script
    assert f"#SBATCH --gres=gpu:{gpus}\n" in script
    assert f"#SBATCH --cpus-per-task={cpus}\n" in script
    assert (f"#SBATCH --constraint={constraint}\n" in script) if constraint else "--constraint" not in script
    if gpus > 1:
        assert f"tune run --nproc_per_node {gpus} lora_finetune_distributed --config " in script
    else:
        assert "tune run lora_finetune_single_device --config " in script
    assert not ft.warnings
    ev = render_unit(desired, unit_of(desired, f"eval/{run}/capitalization/epoch0"), user=NO_USER)
    assert "#SBATCH --time=0:30:00\n" in ev.script.text
    assert f"#SBATCH --mem={mem}\n" in ev.script.text


def test_model_size_from_the_name() -> None:
    assert model_size("Llama-3.2-1B-Instruct") == ("1B", None)
    assert model_size("Llama-3.2-3B-Instruct") == ("3B", None)
    assert model_size("Llama-3.1-8B-Instruct") == ("8B", None)
    assert model_size("Llama-3.3-70B-Instruct") == ("70B", None)
    size, warning = model_size("capdemo-tiny")
    assert size == "1B" and warning and "1B" in warning
    size, warning = model_size("Mistral-7B-Instruct-v0.1")
    assert size == "8B" and warning and "7B" in warning
    size, warning = model_size("Qwen2.5-0.5B")
    assert size == "1B" and warning


def test_unknown_model_falls_back_to_1b_and_says_so() -> None:
    desired = desired_of("scaffold_command")
    res = resources_for(desired.loaded, unit_of(desired, "finetune/small_lr"), NO_USER)
    assert (res.mem, res.gpus, res.cpus_per_task) == ("32G", 1, 4)
    assert any("tiny-base" in w and "1B" in w for w in res.warnings)


@pytest.mark.parametrize(("compute", "overrides", "guessed"), [
    ("", "", "time, mem, gpus, cpus_per_task"),
    (", compute: {gpus: 0, mem: 4G}", "", "time, cpus_per_task"),
    (", compute: {gpus: 0, mem: 4G, time: '0:10:00', cpus_per_task: 1}", "", None),
    (", compute: {gpus: 0, mem: 4G}", ", slurm_overrides: {time: '1:00:00', cpus-per-task: 2}", None),
])
def test_the_1b_fallback_warning_names_only_what_the_guess_decides(
        tmp_path: Path, compute: str, overrides: str, guessed: str | None) -> None:
    """A model whose size cannot be told gets the 1B row; the warning says which values that decides, if any."""
    text = (EXPERIMENTS / "scaffold_command" / "experiment_summary.yaml").read_text()
    run = 'parameters: {lora_rank: 2, lr: 1e-5, fail_at_epoch: 5}'
    assert run in text
    desired = expand(load_spec(write_spec(tmp_path / "exp", text.replace(run, run + compute + overrides))))
    warnings = resources_for(desired.loaded, unit_of(desired, "finetune/small_lr"), NO_USER).warnings
    if guessed is None:
        assert warnings == ()
    else:
        assert warnings == (f"model 'tiny-base': no size (such as 1B or 8B) in its name; using the 1B resources "
                            f"for {guessed}",)


def test_overrides_precedence() -> None:
    desired = desired_of("scaffold_8b")
    ft_unit = unit_of(desired, "finetune/Llama-3.1-8B-Instruct_rank16")
    ev_unit = unit_of(desired, "eval/Llama-3.1-8B-Instruct_rank16/capitalization/epoch0")
    user = parse_user_config({"account": "mine", "partition": "cpu", "conda_env": "other", "qos": "x"})
    assert user.warnings and "qos" in user.warnings[0]
    ft = resources_for(desired.loaded, ft_unit, user)
    # run.compute time; spec's reconciler block over the user file; slurm_overrides extra option.
    assert (ft.time, ft.mem, ft.gpus, ft.constraint) == ("10:00:00", "96G", 1, "gpu80")
    assert (ft.account, ft.partition) == ("ml-lab", "gpu")
    assert ft.environment == ("module purge", "module load anaconda3/2025.6", "conda activate cruijff")
    assert ft.extra == (("qos", "gpu-medium"),)
    ev = resources_for(desired.loaded, ev_unit, user)
    assert (ev.time, ev.mem) == ("1:00:00", "64G")  # evaluation.compute, not the run's compute
    assert gpu_hours(ft) == 10.0 and gpu_hours(ev) == 1.0


def test_user_config_alone_sets_account_partition_and_environment() -> None:
    desired = desired_of("scaffold_1b")
    unit = unit_of(desired, "finetune/Llama-3.2-1B-Instruct_rank4")
    user = parse_user_config({"account": "acct", "partition": "gpu-test", "modules": ["anaconda3/2025.6"],
                              "conda_env": "cruijff", "venv": "/opt/venvs/x y"})
    rendered = render_unit(desired, unit, user=user)
    script = rendered.script.text
    assert "#SBATCH --account=acct\n" in script and "#SBATCH --partition=gpu-test\n" in script
    assert "module load anaconda3/2025.6\n" in script
    assert "conda activate cruijff\n" in script
    assert "source '/opt/venvs/x y/bin/activate'\n" in script


def test_slurm_overrides_beat_spec_and_reserved_options_are_refused(tmp_path: Path) -> None:
    text = (EXPERIMENTS / "scaffold_8b" / "experiment_summary.yaml").read_text()
    edited = text.replace('slurm_overrides: {qos: "gpu-medium"}',
                          'slurm_overrides: {partition: "gpu-long", constraint: "a100", mem: "200G"}')
    exp = write_spec(tmp_path / "exp", edited)
    desired = expand(load_spec(exp))
    ft = resources_for(desired.loaded, unit_of(desired, "finetune/Llama-3.1-8B-Instruct_rank16"), NO_USER)
    assert (ft.partition, ft.constraint, ft.mem) == ("gpu-long", "a100", "200G")
    ev = resources_for(desired.loaded, unit_of(desired, "eval/Llama-3.1-8B-Instruct_rank16/capitalization/epoch0"),
                       NO_USER)
    assert (ev.partition, ev.constraint, ev.mem) == ("gpu-long", "a100", "64G")  # mem: fine-tune only

    bad = write_spec(tmp_path / "bad", text.replace('{qos: "gpu-medium"}', '{output: "/tmp/x"}'))
    desired = expand(load_spec(bad))
    with pytest.raises(ScaffoldError, match="set by the reconciler"):
        resources_for(desired.loaded, unit_of(desired, "finetune/Llama-3.1-8B-Instruct_rank16"), NO_USER)


def write_spec(exp: Path, text: str) -> Path:
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "experiment_summary.yaml").write_text(text)
    return exp


# ---------------------------------------------------------------- every script parses


ALL_EXPERIMENTS = [EXPERIMENTS / n for n in ("scaffold_1b", "scaffold_8b", "scaffold_sizes", "scaffold_command",
                                              "sweep8", "v02_sweep")]


@pytest.mark.parametrize("exp", ALL_EXPERIMENTS, ids=lambda p: p.name)
def test_bash_n_on_every_rendered_script(exp: Path, tmp_path: Path) -> None:
    desired = expand(load_spec(exp))
    for unit in desired.units:
        rendered = render_unit(desired, unit, user=NO_USER)
        script = tmp_path / "script.sh"
        script.write_text(rendered.script.text)
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (unit.key, proc.stderr)
        lines = rendered.script.text.splitlines()
        assert lines[0] == "#!/bin/bash"
        assert lines[1] == f"# reconciler-fingerprint: {unit.fingerprint}"
        assert "delete the fingerprint line" in lines[2]


def test_v02_layout_places_scripts_and_checkpoints_where_the_dialect_says(tmp_path: Path) -> None:
    exp = tmp_path / "v02"
    shutil.copytree(EXPERIMENTS / "v02_sweep", exp)
    desired = expand(load_spec(exp))
    reports = {r.unit: r for r in scaffold(desired, user=NO_USER)}
    assert all(r.status == "written" for r in reports.values())
    assert (exp / "exp" / "rank4" / "eval" / "capitalization_epoch2.slurm").is_file()
    assert (exp / "exp" / "base" / "eval" / "capitalization.slurm").is_file()
    config = yaml.safe_load((exp / "exp" / "rank4" / "finetune.yaml").read_text())
    assert config["checkpointer"]["output_dir"] == str(exp / "out" / "ck-out-rank4")
    assert (exp / "out" / "ck-out-rank4").is_dir()  # the fine-tune's --output directory


# ---------------------------------------------------------------- stand-in runs


STANDIN_INSPECT = """#!{python}
import json, os, shutil, sys
from inspect_ai._util.config import parse_cli_args  # the parser inspect applies to -T, -M, --metadata
argv = sys.argv[1:]
def values(flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]
task_args = parse_cli_args(values("-T"))
record = dict(argv=argv, task_args=task_args, model_args=parse_cli_args(values("-M")),
              metadata=parse_cli_args(values("--metadata")), cwd=os.getcwd(),
              env={{k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_CACHE")}},
              cache_exists=os.path.isdir(os.environ["HF_DATASETS_CACHE"]))
out = os.environ["RECORD_DIR"]
with open(os.path.join(out, "inspect.json"), "w") as fh:
    json.dump(record, fh)
shutil.copyfile(task_args["config_path"], os.path.join(out, "config_copy.yaml"))
sys.exit(int(os.environ.get("STANDIN_EXIT", "0")))
"""

STANDIN_TOOL = """#!{python}
import json, os, shutil, sys
argv = sys.argv[1:]
out = os.environ["RECORD_DIR"]
with open(os.path.join(out, "{name}.json"), "w") as fh:
    json.dump(dict(argv=argv, cwd=os.getcwd()), fh)
shutil.copyfile(argv[argv.index("--config") + 1], os.path.join(out, "config_copy.yaml"))
sys.exit(int(os.environ.get("STANDIN_EXIT", "0")))
"""


def standins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("inspect", STANDIN_INSPECT), ("tune", STANDIN_TOOL), ("my-trainer", STANDIN_TOOL)):
        path = bin_dir / name
        path.write_text(text.format(python=sys.executable, name=name))
        path.chmod(0o755)
    return bin_dir


def run_script(script: Path, tmp_path: Path, exit_code: int = 0) -> tuple[subprocess.CompletedProcess[str], Path]:
    record = tmp_path / "record"
    shutil.rmtree(record, ignore_errors=True)
    record.mkdir()
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "keep").write_text("still here")
    env = {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),  # if quoting ever broke, `rm -rf ~` would only reach this
        "TMPDIR": str(tmp_path / "tmp"),
        "SLURM_JOB_ID": "4242",
        "RECORD_DIR": str(record),
        "STANDIN_EXIT": str(exit_code),
    }
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    return proc, record


def hostile_experiment(tmp_path: Path) -> Path:
    """scaffold_1b in a directory whose name would run commands if unquoted, with hostile prompts."""
    exp = tmp_path / "exp $(touch canary) \"q\" 'a' `touch canary` % & ; |"
    shutil.copytree(EXPERIMENTS / "scaffold_1b", exp)
    spec = exp / "experiment_summary.yaml"
    text = spec.read_text()
    text = text.replace('  prompt: "Capitalize the given word: {input}\\n"',
                        "  prompt: " + yaml.safe_dump(HOSTILE_PROMPT, default_style='"', width=1 << 30).strip())
    text = text.replace('  system_prompt: "You are a helpful assistant."',
                        "  system_prompt: " + yaml.safe_dump(HOSTILE_SYSTEM, default_style='"', width=1 << 30).strip())
    spec.write_text(text)
    return exp


def no_canary(tmp_path: Path) -> None:
    found = [p for p in tmp_path.rglob("canary") if "canary" == p.name]
    assert not found, f"a command ran: {found}"
    assert (tmp_path / "home" / "keep").read_text() == "still here"


def test_hostile_prompts_reach_the_eval_config_byte_for_byte_and_run_nothing(tmp_path: Path) -> None:
    standins(tmp_path)
    exp = hostile_experiment(tmp_path)
    loaded = load_spec(exp)
    assert loaded.spec.controls.prompt == HOSTILE_PROMPT
    desired = expand(loaded)
    for key in ("eval/Llama-3.2-1B-Instruct_rank4/capitalization/epoch1",
                "eval/Llama-3.2-1B-Instruct_base/capitalization/base"):
        unit = unit_of(desired, key)
        report = sync_unit(desired, unit, user=NO_USER)
        assert report.status == "written"
        assert unit.model_path is not None
        if unit.epoch is not None:  # a merged checkpoint, with torchtune's adapter files beside it
            unit.model_path.mkdir(parents=True)
            for name in ("model.safetensors", "config.json", "adapter_config.json", "adapter_model.safetensors"):
                (unit.model_path / name).write_text("{}")
        proc, record = run_script(unit.script, tmp_path, exit_code=3)
        assert proc.returncode == 3, proc.stderr  # the script exits with inspect's code
        rec = json.loads((record / "inspect.json").read_text())
        config_path = desired.layout.eval_config(unit.run, "capitalization", unit.epoch)
        assert (record / "config_copy.yaml").read_bytes() == config_path.read_bytes()
        config = yaml.safe_load(config_path.read_text())
        assert config["prompt"] == HOSTILE_PROMPT and config["system_prompt"] == HOSTILE_SYSTEM
        assert HOSTILE_PROMPT not in " ".join(rec["argv"])  # prompts never travel on the command line
        task = exp / "tasks" / "inspect_task.py"
        assert rec["argv"][:4] == ["eval", f"{task}@capitalization", "--model", "hf/local"]
        assert rec["task_args"] == {"data_path": str(exp / "data" / "words_5L_80P_10.json"),
                                    "config_path": str(config_path),
                                    "vis_label": "rank4" if unit.epoch is not None else "base"}
        meta = rec["metadata"]
        if unit.epoch is None:
            assert rec["model_args"] == {"model_path": str(unit.model_path)}
        else:  # loaded through a directory of links: the weights without the adapter files
            view = Path(rec["model_args"]["model_path"])
            assert view == desired.layout.eval_model_view(unit.run, "capitalization", unit.epoch)
            assert sorted(p.name for p in view.iterdir()) == ["config.json", "model.safetensors"]
            assert (view / "model.safetensors").resolve() == unit.model_path / "model.safetensors"
            assert meta["checkpoint"] == str(unit.model_path)
        assert meta["reconciler_unit"] == key and meta["reconciler_fingerprint"] == f"fp-{unit.fingerprint}"
        assert meta["run"] == unit.run and meta.get("epoch") == unit.epoch
        assert rec["argv"][rec["argv"].index("--log-dir") + 1] == str(unit.log_dir)
        assert rec["cwd"] == str(unit.workdir)
        assert rec["env"]["HF_HUB_OFFLINE"] == "1"
        assert rec["env"]["HF_DATASETS_CACHE"] == str(tmp_path / "tmp" / "reconciler-hf-datasets-4242")
        assert rec["cache_exists"] and not Path(rec["env"]["HF_DATASETS_CACHE"]).exists()  # removed after
        assert unit.log_dir is not None and unit.log_dir.is_dir()
    no_canary(tmp_path)


def test_hostile_finetune_runs_tune_with_its_config_and_exits_with_its_code(tmp_path: Path) -> None:
    standins(tmp_path)
    exp = hostile_experiment(tmp_path)
    desired = expand(load_spec(exp))
    unit = unit_of(desired, "finetune/Llama-3.2-1B-Instruct_rank4")
    assert sync_unit(desired, unit, user=NO_USER).status == "written"
    proc, record = run_script(unit.script, tmp_path, exit_code=7)
    assert proc.returncode == 7, proc.stderr
    rec = json.loads((record / "tune.json").read_text())
    config_path = desired.layout.finetune_config(unit.run)
    assert rec["argv"] == ["run", "lora_finetune_single_device", "--config", str(config_path)]
    assert (record / "config_copy.yaml").read_bytes() == config_path.read_bytes()
    config = yaml.safe_load(config_path.read_text())
    before, after = config["tokenizer"]["prompt_template"]["user"]
    assert before + "WORD" + after == HOSTILE_PROMPT.format(input="WORD")
    assert config["dataset"]["new_system_prompt"] == HOSTILE_SYSTEM
    setup = yaml.safe_load(desired.layout.setup_config(unit.run).read_text())
    assert setup["prompt"] == HOSTILE_PROMPT and setup["system_prompt"] == HOSTILE_SYSTEM
    assert (desired.layout.output_dir(unit.run) / "logs").is_dir()
    no_canary(tmp_path)


def test_command_preparation_runs_the_users_trainer_with_the_quoted_config(tmp_path: Path) -> None:
    standins(tmp_path)
    exp = tmp_path / "my exp $(touch canary)"
    shutil.copytree(EXPERIMENTS / "scaffold_command", exp)
    desired = expand(load_spec(exp))
    unit = unit_of(desired, "finetune/small_lr")
    sync_unit(desired, unit, user=NO_USER)
    proc, record = run_script(unit.script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((record / "my-trainer.json").read_text())
    setup_path = desired.layout.setup_config("small_lr")
    assert rec["argv"] == ["--config", str(setup_path), "--log-level", "info"]
    assert not desired.layout.finetune_config("small_lr").exists()  # no torchtune config for a command
    setup = yaml.safe_load(setup_path.read_text())
    assert setup["output_dir"] == str(exp / "small_lr" / "artifacts")
    assert setup["dataset_path"] == "/data/words.json" and setup["model_checkpoint"] == "/models/tiny-base"
    assert (setup["epochs"], setup["lr"], setup["lora_rank"], setup["batch_size"]) == (2, 1e-5, 2, 16)
    assert (setup["gradient_accumulation_steps"], setup["seed"]) == (1, 14)
    assert setup["prompt"] == "Capitalize: {input}" and setup["system_prompt"] == "You capitalize words."
    assert setup["dataset_type"] == "text_completion"
    # every run parameter and extra controls key flows through
    assert (setup["seconds_per_epoch"], setup["warmup_ratio"], setup["fail_at_epoch"]) == (2, 0.1, 5)
    no_canary(tmp_path)


def test_values_inspect_would_misread_are_refused() -> None:
    assert yaml_arg("1e-5", "x") == '"1e-5"'
    with pytest.raises(ScaffoldError, match="comma"):
        yaml_arg("/data/a,b.json", "data_path")
    with pytest.raises(ScaffoldError, match="control character"):
        yaml_arg("a\nb", "vis_label")


def test_interpolation_in_a_torchtune_string_is_refused(tmp_path: Path) -> None:
    text = (EXPERIMENTS / "scaffold_1b" / "experiment_summary.yaml").read_text()
    exp = write_spec(tmp_path / "exp", text.replace("You are a helpful assistant.", "cost: ${price}"))
    desired = expand(load_spec(exp))
    with pytest.raises(ScaffoldError, match="OmegaConf"):
        render_unit(desired, unit_of(desired, "finetune/Llama-3.2-1B-Instruct_rank4"), user=NO_USER)
    # evals read the prompt with plain YAML: there it passes as written
    ev = render_unit(desired, unit_of(desired, "eval/Llama-3.2-1B-Instruct_base/capitalization/base"), user=NO_USER)
    assert yaml.safe_load(ev.configs[0].text)["system_prompt"] == "cost: ${price}"


# ---------------------------------------------------------------- ownership


def copy_exp(tmp_path: Path, name: str = "scaffold_1b") -> Path:
    exp = tmp_path / "exp"
    shutil.copytree(EXPERIMENTS / name, exp)
    return exp


def test_first_sync_writes_with_modes_and_directories_then_is_unchanged(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path)
    desired = expand(load_spec(exp))
    dry = scaffold(desired, dry_run=True, user=NO_USER)
    assert {r.status for r in dry} == {"written"} and all(r.written for r in dry)
    assert not (exp / "Llama-3.2-1B-Instruct_rank4").exists()  # a dry run writes nothing
    reports = scaffold(desired, user=NO_USER)
    assert [r.written for r in reports] == [r.written for r in dry]
    for unit in desired.units:
        assert stat.S_IMODE(unit.script.stat().st_mode) == 0o755
        assert unit.stdout.parent.is_dir()  # sbatch does not create its --output directory
        if unit.log_dir is not None:
            assert unit.log_dir.is_dir()
    for path in exp.rglob("*"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o002, path
        if path.suffix == ".yaml" and path.name != "experiment_summary.yaml":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    again = scaffold(desired, user=NO_USER)
    assert {r.status for r in again} == {"unchanged"} and not any(r.written for r in again)


def test_a_script_without_our_header_is_never_overwritten(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path)
    desired = expand(load_spec(exp))
    unit = unit_of(desired, "finetune/Llama-3.2-1B-Instruct_rank4")
    sync_unit(desired, unit, user=NO_USER)
    config = desired.layout.finetune_config(unit.run)
    # The user takes ownership: deletes the header line and edits script and config.
    lines = unit.script.read_text().splitlines(keepends=True)
    edited = "".join(line for line in lines if not line.startswith("# reconciler-fingerprint:")) + "# mine\n"
    unit.script.write_text(edited)
    config.write_text(config.read_text().replace("batch_size: 4", "batch_size: 2"))
    for force in (False, True):
        for remedy in (None, Remedy(batch_size=1, gradient_accumulation_steps=4, time="9:00:00")):
            report = sync_unit(desired, unit, force=force, remedy=remedy, user=NO_USER)
            assert report.status == "foreign" and not report.written
            assert unit.script.read_text() == edited
            assert "batch_size: 2" in config.read_text()  # the config follows its script's ownership
    assert "remedy not applied" in report.note


def test_a_foreign_config_blocks_rendering_its_unit(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path)
    desired = expand(load_spec(exp))
    unit = unit_of(desired, "eval/Llama-3.2-1B-Instruct_rank4/capitalization/epoch0")
    config = desired.layout.eval_config(unit.run, "capitalization", 0)
    config.parent.mkdir(parents=True)
    config.write_text("prompt: from cruijff_kit\n")
    report = sync_unit(desired, unit, user=NO_USER)
    assert report.status == "foreign" and not unit.script.exists()
    assert config.read_text() == "prompt: from cruijff_kit\n"


def test_drift_is_reported_and_rerendered_only_when_forced(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path)
    desired = expand(load_spec(exp))
    key = "finetune/Llama-3.2-1B-Instruct_rank4"
    sync_unit(desired, unit_of(desired, key), user=NO_USER)
    old_fp = unit_of(desired, key).fingerprint
    spec = exp / "experiment_summary.yaml"
    spec.write_text(spec.read_text().replace("lr: 1e-4", "lr: 3e-4"))
    changed = expand(load_spec(exp))
    unit = unit_of(changed, key)
    assert unit.fingerprint != old_fp
    before = unit.script.read_text()
    report = sync_unit(changed, unit, user=NO_USER)
    assert report.status == "drift" and report.fingerprint == old_fp and not report.written
    assert unit.script.read_text() == before
    report = sync_unit(changed, unit, force=True, user=NO_USER)
    assert report.status == "rerendered" and unit.script in report.written
    assert f"# reconciler-fingerprint: {unit.fingerprint}\n" in unit.script.read_text()
    assert "lr: 0.0003" in changed.layout.finetune_config(unit.run).read_text()


def test_a_missing_config_of_our_script_is_restored(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path)
    desired = expand(load_spec(exp))
    unit = unit_of(desired, "finetune/Llama-3.2-1B-Instruct_rank4")
    sync_unit(desired, unit, user=NO_USER)
    desired.layout.finetune_config(unit.run).unlink()
    report = sync_unit(desired, unit, user=NO_USER)
    assert report.status == "unchanged" and report.written == (desired.layout.finetune_config(unit.run),)


def test_paths_that_escape_the_experiment_are_refused(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (exp / "Llama-3.2-1B-Instruct_rank4").symlink_to(outside, target_is_directory=True)
    desired = expand(load_spec(exp))
    with pytest.raises(ScaffoldError, match="symlink"):
        sync_unit(desired, unit_of(desired, "finetune/Llama-3.2-1B-Instruct_rank4"), user=NO_USER)
    assert not any(outside.iterdir())
    with pytest.raises(ScaffoldError, match=r"'\.\.'"):
        check_inside(exp / "a" / ".." / ".." / "x", (exp,))
    with pytest.raises(ScaffoldError, match="outside"):
        check_inside(tmp_path / "x", (exp,))


# ---------------------------------------------------------------- remedies


def test_oom_halves_the_batch_and_doubles_accumulation() -> None:
    desired = desired_of("scaffold_8b")
    unit = unit_of(desired, "finetune/Llama-3.1-8B-Instruct_rank16")
    start = baseline(desired.loaded, unit)
    assert (start.batch_size, start.gradient_accumulation_steps, start.time) == (128, 2, "10:00:00")
    first = next_remedy("out_of_memory", None, start=start)
    assert first is not None and (first.batch_size, first.gradient_accumulation_steps) == (64, 4)
    assert "128 -> 64" in first.reason
    tail = "...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    second = next_remedy("other", first, tail, start=start)
    assert second is not None and (second.batch_size, second.gradient_accumulation_steps) == (32, 8)
    assert next_remedy("FAILED", first, "Traceback: KeyError", start=start) is None
    assert next_remedy("out_of_memory", Remedy(batch_size=1, gradient_accumulation_steps=256), start=start) is None
    assert next_remedy("out_of_memory", None, start=Remedy(time="0:30:00"), kind="eval") is None
    assert failure_cause("FAILED", "RuntimeError: CUDA out of memory.") == "out_of_memory"
    assert Remedy.from_dict({"event": "remedy", **first.to_dict()}) == first

    rendered = render_unit(desired, unit, user=NO_USER, remedy=first)
    config = yaml.safe_load(files_of(rendered)["finetune.yaml"].split("\n", 2)[2])
    assert (config["batch_size"], config["gradient_accumulation_steps"]) == (64, 4)
    assert "# Remedy on retry: out of memory: batch size 128 -> 64" in rendered.script.text
    with pytest.raises(ScaffoldError, match="batch_size"):
        render_unit(desired, unit, user=NO_USER, remedy=Remedy(batch_size=0))


def test_timeout_gives_one_and_a_half_times_the_time_capped() -> None:
    desired = desired_of("scaffold_8b")
    unit = unit_of(desired, "finetune/Llama-3.1-8B-Instruct_rank16")
    start = baseline(desired.loaded, unit)
    longer = next_remedy("timeout", None, start=start)
    assert longer is not None and longer.time == "15:00:00" and longer.batch_size is None
    capped = next_remedy("TIMEOUT", None, start=start, max_time="12:00:00")
    assert capped is not None and capped.time == "12:00:00" and "limit" in capped.reason
    assert next_remedy("timeout", capped, start=start, max_time="12:00:00") is None
    # a timeout after an OOM remedy keeps the smaller batch
    oom = Remedy(batch_size=64, gradient_accumulation_steps=4)
    both = next_remedy("timeout", oom, start=start)
    assert both is not None and (both.batch_size, both.time) == (64, "15:00:00")
    rendered = render_unit(desired, unit, user=NO_USER, remedy=both)
    assert "#SBATCH --time=15:00:00\n" in rendered.script.text


def test_a_remedy_rerenders_our_current_script_and_is_kept_afterwards(tmp_path: Path) -> None:
    exp = copy_exp(tmp_path, "scaffold_8b")
    desired = expand(load_spec(exp))
    unit = unit_of(desired, "finetune/Llama-3.1-8B-Instruct_rank16")
    sync_unit(desired, unit, user=NO_USER)
    remedy = next_remedy("out_of_memory", None, start=baseline(desired.loaded, unit))
    report = sync_unit(desired, unit, force=True, remedy=remedy, user=NO_USER)
    assert report.status == "rerendered" and report.remedy == remedy
    assert "batch_size: 64" in desired.layout.finetune_config(unit.run).read_text()
    # A later pass without the remedy leaves the remedied files as they are.
    assert sync_unit(desired, unit, force=True, user=NO_USER).status == "unchanged"
    assert "batch_size: 64" in desired.layout.finetune_config(unit.run).read_text()
