"""Job resources by model size, overridden by the spec and by the user's config.

Precedence, lowest first (a later source replaces what an earlier one set):

compute: time, mem, gpus, cpus_per_task, constraint
    1. the size table below, by the size in the model's name (no size in the name: 1B, warned)
    2. fine-tunes: `runs[].compute`; evals: `evaluation.compute`
    3. `runs[].slurm_overrides`: constraint for the run's fine-tune and its evals; time, mem,
       gpus and cpus_per_task for the fine-tune only (they describe training, not inference)
    4. a remedy on retry (time; see remedies.py)

placement: account, partition, constraint (and any other `#SBATCH` option named in slurm_overrides)
    1. constraint only: the size table
    2. the user config file: `$RECONCILER_CONFIG`, else `~/.config/reconciler/config.yaml`
    3. the experiment's `reconciler:` block (account, partition, constraint)
    4. `runs[].slurm_overrides`

environment activation: shell lines run before the job's command (tune, inspect)
    1. the user config file: its `environment` lines if given, else lines built from
       `modules` (module load), `conda_env` (conda activate), `venv` (source .../bin/activate)
    2. the experiment's `reconciler:` block, the same keys: when it names any of them, its lines
       replace the file's entirely (the experiment wins, as cruijff_kit's setup_finetune.yaml
       keys win over claude.local.md)
    With neither, the script says in a comment that no environment is activated: the job runs
    with the environment sbatch exports from the shell that submits it.

The more specific source wins: the user file holds one person's defaults for every
experiment, the spec speaks for this experiment, a run's overrides for that run alone.
Environment lines are the user's own shell text and are used as written; every other value
is validated here and shell-quoted where it is rendered.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from reconciler.timefmt import parse_time_limit
from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.model_dir import read_model_dir
from reconciler.spec.load import LoadedSpec
from reconciler.spec.models import ENV_NAME_PATTERN, Compute
from reconciler.spec.units import Unit

CONFIG_ENV = "RECONCILER_CONFIG"
DEFAULT_CONFIG = Path("~/.config/reconciler/config.yaml")

EVAL_TIME = "0:30:00"


@dataclass(frozen=True)
class SizeRow:
    mem: str
    gpus: int
    cpus: int
    constraint: str | None
    # Fine-tune wall time. cruijff_kit's default (15 min) times out real runs and its own
    # fixtures ask for about an hour on 1B; a TIMEOUT loses the whole run while a loose limit
    # only costs queue priority. So: 2 h for 1B, scaled with the model's step time, and a
    # TIMEOUT retry gets 1.5x (remedies.py).
    finetune_time: str
    # The Llama 3.x release whose model of this size a model torchtune has no builder for is rendered as.
    llama_minor: str


# The one size table: job resources, the plan's GPU-hour estimate and the torchtune fallback model.
SIZE_TABLE: dict[str, SizeRow] = {
    "1B": SizeRow(mem="32G", gpus=1, cpus=4, constraint=None, finetune_time="2:00:00", llama_minor="2"),
    "3B": SizeRow(mem="64G", gpus=1, cpus=4, constraint="gpu80", finetune_time="4:00:00", llama_minor="2"),
    "8B": SizeRow(mem="96G", gpus=1, cpus=8, constraint="gpu80", finetune_time="8:00:00", llama_minor="1"),
    "70B": SizeRow(mem="256G", gpus=4, cpus=8, constraint="gpu80", finetune_time="24:00:00", llama_minor="3"),
}
_BUCKETS = (("1B", 1.0), ("3B", 3.0), ("8B", 8.0), ("70B", 70.0))
# "Llama-3.2-1B-Instruct" -> 1, "Qwen2.5-0.5B" -> 0.5; the version number is not followed by B.
_SIZE_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")

# Options the reconciler sets itself: an override of these would break ownership or tracking.
_RESERVED = {"job-name", "output", "error", "comment", "dependency", "chdir", "parsable", "wrap", "array"}
_OPTION_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_MEM_RE = re.compile(r"^\d+[KMGT]?B?$")
ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)


@dataclass(frozen=True)
class UserConfig:
    """The user's defaults for every experiment (see the module docstring for precedence)."""

    account: str | None = None
    partition: str | None = None
    constraint: str | None = None
    environment: tuple[str, ...] = ()
    source: Path | None = None
    warnings: tuple[str, ...] = ()


NO_USER_CONFIG = UserConfig()


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for, plus the lines that activate its environment."""

    size: str
    time: str
    mem: str
    gpus: int
    cpus_per_task: int
    constraint: str | None = None
    account: str | None = None
    partition: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # further `#SBATCH --key=value` options
    environment: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    device: str = "cuda"  # what torchtune trains on (and inspect loads onto): only `compute` changes it
    dtype: str = "bf16"


def model_size(model: str) -> tuple[str, str | None]:
    """The size-table row for a model name, and a warning when it is a guess."""
    match = _SIZE_RE.search(model)
    if match is None:
        return "1B", f"model {model!r}: no size (such as 1B or 8B) in its name; using the 1B resources"
    billions = float(match.group(1))
    for name, limit in _BUCKETS:
        if billions == limit:
            return name, None
    for name, limit in _BUCKETS:
        if billions < limit:
            return name, f"model {model!r}: {match.group(0)} is not in the size table; using the {name} resources"
    return "70B", f"model {model!r}: {match.group(0)} is larger than the size table; using the 70B resources"


def size_by_parameters(parameters: int) -> str:
    """The size-table row of a model with this many parameters: the smallest that holds it."""
    billions = parameters / 1e9
    return next((name for name, limit in _BUCKETS if billions <= limit), "70B")


def resources_for(loaded: LoadedSpec, unit: Unit, user: UserConfig = NO_USER_CONFIG) -> Resources:
    """The resources of one unit, every override applied (pure but for reading the model's config.json once)."""
    spec = loaded.spec
    run = loaded.spec.run_named(unit.run)
    size, warning = model_size(run.model)
    if warning is not None:
        base = next(m for m in spec.models.base if m.name == run.model)
        parameters = read_model_dir(loaded.resolve(base.path), loaded.model_dirs).parameters
        if parameters is not None:
            size, warning = size_by_parameters(parameters), None
    compute = run.compute if unit.kind == "finetune" else spec.evaluation.compute
    row = SIZE_TABLE[size]
    if warning is not None:
        # Warn only about what the guess decides: the size-table values no override replaces.
        guessed = _from_table(row, compute, run.slurm_overrides or {}, unit.kind == "finetune")
        warning = f"{warning} for {', '.join(guessed)}" if guessed else None
    res = Resources(
        size=size,
        time=row.finetune_time if unit.kind == "finetune" else EVAL_TIME,
        mem=row.mem,
        gpus=row.gpus,
        cpus_per_task=row.cpus,
        constraint=user.constraint or row.constraint,
        account=user.account,
        partition=user.partition,
        environment=user.environment,
        warnings=(warning,) if warning else (),
    )
    if compute is not None:
        res = _apply_compute(res, compute)
    settings = spec.reconciler
    own = spec_environment(loaded)
    res = replace(
        res,
        account=settings.account or res.account,
        partition=settings.partition or res.partition,
        constraint=settings.constraint or res.constraint,
        environment=own if own is not None else res.environment,
    )
    if run.slurm_overrides:
        res = _apply_overrides(res, run.slurm_overrides, unit.kind == "finetune", f"runs[{run.name}].slurm_overrides")
    return res


def _from_table(row: SizeRow, compute: Compute | None, overrides: Mapping[str, Any], finetune: bool) -> list[str]:
    """The fields of a job's resources that the size table decides (no `compute` or override sets them)."""
    fields = ["time", "mem", "gpus", "cpus_per_task"] + (["constraint"] if row.constraint else [])
    if compute is not None:
        fields = [f for f in fields if f == "constraint" or getattr(compute, f) is None]
    keys = {str(k).replace("-", "_") for k in overrides}
    # slurm_overrides set the constraint for every job of the run, the rest for its fine-tune only.
    return [f for f in fields if f not in keys or (f != "constraint" and not finetune)]


def spec_environment(loaded: LoadedSpec) -> tuple[str, ...] | None:
    """The activation lines the experiment names (None: it names none, the user config's apply)."""
    settings = loaded.spec.reconciler
    if settings.environment is not None:
        return tuple(settings.environment.splitlines())
    if settings.modules or settings.conda_env or settings.venv:
        return tuple(activation_lines(list(settings.modules or []), settings.conda_env, settings.venv))
    return None


def gpu_hours(res: Resources) -> float:
    """GPUs x time limit, in hours: the most a job can use (for a plan's cost estimate)."""
    seconds = parse_time_limit(res.time)
    return res.gpus * (seconds or 0) / 3600.0


def unit_gpu_hours(loaded: LoadedSpec, unit: Unit, user: UserConfig = NO_USER_CONFIG) -> float:
    return gpu_hours(resources_for(loaded, unit, user))


def _apply_compute(res: Resources, compute: Compute) -> Resources:
    if compute.time is not None:
        res = replace(res, time=_time(compute.time, "compute.time"))
    if compute.mem is not None:
        res = replace(res, mem=compute.mem)
    if compute.gpus is not None:
        res = replace(res, gpus=compute.gpus)
    if compute.cpus_per_task is not None:
        res = replace(res, cpus_per_task=compute.cpus_per_task)
    if compute.device is not None:
        res = replace(res, device=compute.device)
    if compute.dtype is not None:
        res = replace(res, dtype=compute.dtype)
    return res


def _apply_overrides(res: Resources, overrides: Mapping[str, Any], finetune: bool, where: str) -> Resources:
    extra = dict(res.extra)
    for raw_key, value in overrides.items():
        key = str(raw_key).replace("_", "-")
        if not _OPTION_RE.match(str(raw_key)):
            raise ScaffoldError(f"{where}: {raw_key!r} is not an sbatch option name")
        if key in _RESERVED:
            raise ScaffoldError(f"{where}.{raw_key}: --{key} is set by the reconciler and cannot be overridden")
        text = sbatch_value(value, f"{where}.{raw_key}")
        if key == "time":
            if finetune:
                res = replace(res, time=_time(text, f"{where}.time"))
        elif key == "mem":
            if not _MEM_RE.match(text):
                raise ScaffoldError(f"{where}.mem: {text!r} is not a memory size such as 80G")
            if finetune:
                res = replace(res, mem=text)
        elif key in ("gpus", "cpus-per-task"):
            if isinstance(value, bool) or not text.isdigit():
                raise ScaffoldError(f"{where}.{raw_key}: expected a whole number, got {value!r}")
            if finetune and key == "gpus":
                res = replace(res, gpus=int(text))
            elif finetune:
                res = replace(res, cpus_per_task=int(text))
        elif key == "constraint":
            res = replace(res, constraint=text)
        elif key == "account":
            res = replace(res, account=text)
        elif key == "partition":
            res = replace(res, partition=text)
        else:
            extra[key] = text
    return replace(res, extra=tuple(sorted(extra.items())))


def _time(text: str, where: str) -> str:
    try:
        parse_time_limit(text)
    except ValueError:
        raise ScaffoldError(f"{where}: {text!r} is not a SLURM time limit such as 2:00:00") from None
    return text


def sbatch_value(value: Any, where: str) -> str:
    """A value for an `#SBATCH` line: one printable line without backslashes (sbatch escapes them)."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise ScaffoldError(f"{where}: expected a string or number, got {value!r}")
    text = str(value)
    if not text or any(ch in text for ch in "\\\n\r\0") or not text.isprintable():
        raise ScaffoldError(f"{where}: {text!r} cannot be written on an #SBATCH line")
    return text


# ---------------------------------------------------------------- the user config file


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def load_user_config(path: Path | None = None) -> UserConfig:
    """Read the user config file; a missing file is an empty config."""
    path = user_config_path() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserConfig()
    except OSError as exc:
        raise ScaffoldError(f"{path}: cannot read the user config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScaffoldError(f"{path}: not valid YAML: {exc}") from None
    return parse_user_config(data, path)


def parse_user_config(data: Any, source: Path | None = None) -> UserConfig:
    """Validate the user config mapping: account, partition, environment, conda_env, venv, modules."""
    where = str(source or "user config")
    if data is None:
        return UserConfig(source=source)
    if not isinstance(data, dict):
        raise ScaffoldError(f"{where}: expected a mapping with keys account, partition, constraint, environment, "
                            "conda_env, venv, modules")
    known = {"account", "partition", "constraint", "environment", "conda_env", "venv", "modules"}
    warnings = tuple(f"{where}: unknown key {k!r} ignored" for k in data if k not in known)

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ScaffoldError(f"{where}: {key} must be a non-empty string, got {value!r}")
        return value

    def lines(key: str) -> list[str]:
        value = data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return value.splitlines()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ScaffoldError(f"{where}: {key} must be a string or a list of strings, got {value!r}")

    account, partition, constraint = text("account"), text("partition"), text("constraint")
    for key, value in (("account", account), ("partition", partition), ("constraint", constraint)):
        if value is not None:
            sbatch_value(value, f"{where}: {key}")
    environment = lines("environment")
    if not environment:
        modules, conda_env, venv = lines("modules"), text("conda_env"), text("venv")
        for key, values in (("modules", modules), ("conda_env", [conda_env])):
            for value in values:
                if value is not None and not ENV_NAME_RE.fullmatch(value):
                    raise ScaffoldError(f"{where}: {key}: {value!r} is not an environment name or path "
                                        "(no spaces or shell syntax: it is placed after conda activate, "
                                        "module load or source)")
        if venv is not None and not venv.isprintable():
            raise ScaffoldError(f"{where}: venv: {venv!r} contains a control character")
        environment = activation_lines(modules, conda_env, venv)
    return UserConfig(account=account, partition=partition, constraint=constraint, environment=tuple(environment),
                      source=source, warnings=warnings)


def activation_lines(modules: list[str], conda_env: str | None, venv: str | None) -> list[str]:
    """Shell lines for modules, then conda, then a venv (each value quoted)."""
    out = [f"module load {shlex.quote(m)}" for m in modules if m.strip()]
    if conda_env:
        # `conda activate` needs conda's shell function, which a batch shell has not loaded.
        out.append('eval "$(conda shell.bash hook)"')
        env = str(Path(conda_env).expanduser()) if conda_env.startswith("~") else conda_env
        out.append(f"conda activate {shlex.quote(env)}")
    if venv:
        out.append(f"source {shlex.quote(str(Path(venv).expanduser()) + '/bin/activate')}")
    return out
