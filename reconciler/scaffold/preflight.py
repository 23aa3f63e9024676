"""What a job will need, checked before any job runs: model directories, tokenizers, task files, the data
files of every fine-tune and eval, eval-only checkpoints, the eval environment.

Paths that are not visible here (the experiment is meant for a cluster's filesystem) are warnings
that say so; a path whose directory is here but which is itself missing is an error (a typo).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.errors import SpecError
from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.finetune_config import torchtune_model
from reconciler.scaffold.model_dir import read_model_dir
from reconciler.scaffold.resources import spec_environment
from reconciler.scaffold.values import eval_data_path, train_data_path
from reconciler.spec.load import LoadedSpec
from reconciler.spec.models import Run
from reconciler.spec.yamlpos import PathKey, format_path

Severity = Literal["error", "warning"]
Add = Callable[[Severity, PathKey, str], None]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    error: SpecError  # where (file:line:col, field) and what

    def __str__(self) -> str:
        return str(self.error)


def preflight(loaded: LoadedSpec, check_environment: bool = True, user_environment: bool = False) -> list[Problem]:
    """Every problem a job would meet, each located in the experiment file; errors first.

    `user_environment`: the user config names an environment for the jobs (they then do not run
    with this machine's, which cannot be checked from here).
    """
    problems: list[Problem] = []

    def add(severity: Severity, key: PathKey, message: str) -> None:
        if loaded.located is not None:
            error = loaded.located.error(key, message)
        else:
            error = SpecError(loaded.path, None, None, format_path(key), message)
        problems.append(Problem(severity, error))

    spec = loaded.spec
    hf = spec.tools.model_api.startswith("hf/")  # evals load models with transformers
    torchtune = spec.tools.preparation == "torchtune"
    evaluated = {r.model for r in spec.runs if r.type in ("fine-tuned", "control")}
    finetuned = {r.model for r in spec.runs if r.type == "fine-tuned"} if torchtune else set()
    for i, base in enumerate(spec.models.base):
        if base.name not in finetuned and not (hf and base.name in evaluated):
            continue  # another trainer or model API reads this directory its own way
        key: PathKey = ("models", "base", i, "path")
        path = loaded.resolve(base.path)
        if not path.is_dir():
            _missing(add, key, path, "model directory")
            continue
        model = read_model_dir(path, loaded.model_dirs)
        if model.config is None:
            add("error", key, f"{path}: {model.problem}: transformers and torchtune read the model from config.json")
            continue
        if base.name in finetuned:
            try:
                torchtune_model(base.name, model, base.component, base.model_type, f"models.base[{base.name}]")
            except ScaffoldError as exc:
                add("error", key, str(exc))
            if not model.has_tiktoken and base.component is None:
                add("error", key, f"{path}: no original/tokenizer.model, which torchtune's Llama 3 tokenizer reads")
            if not model.weight_files:
                add("error", key, f"{path}: no model.safetensors or model.safetensors.index.json to fine-tune from")
        if hf and not model.has_hf_tokenizer:
            add("error", key, f"{path}: no tokenizer.json: inspect-ai's hf provider loads the tokenizer with "
                              "transformers (torchtune copies it into every checkpoint from here)")
    for i, task in enumerate(spec.evaluation.tasks):
        script = loaded.resolve(task.script)
        if not script.is_file():
            _missing(add, ("evaluation", "tasks", i, "script"), script, "task file")
    for key, data, what in _data_files(loaded):
        if not data.is_file():
            _missing(add, key, data, what)
    _check_checkpoints(loaded, add)
    if check_environment and not user_environment:
        _check_environment(loaded, add)
    return sorted(problems, key=lambda p: p.severity != "error")


def _data_files(loaded: LoadedSpec) -> list[tuple[PathKey, Path, str]]:
    """Every data file a job reads, once each, located where the spec names it: the training file of
    each fine-tune (a run's own dataset_path, else data.training.path) and the dataset of each evaluated
    run x task (the task's dataset, else the run's eval_dataset_path or dataset_path, else the training file)."""
    spec = loaded.spec
    found: dict[Path, tuple[PathKey, Path, str]] = {}

    def note(key: PathKey, path: Path, what: str) -> None:
        found.setdefault(path, (key, path, what))

    note(("data", "training", "path"), loaded.resolve(spec.data.training.path), "training data file")
    runs = {r.name: (i, r) for i, r in enumerate(spec.runs)}
    for i, run in enumerate(spec.runs):
        if run.type == "fine-tuned":
            note(_run_key(i, run, ("dataset_path",)), train_data_path(loaded, run), f"training data file of {run.name}")
    tasks = {t.name: (j, t) for j, t in enumerate(spec.evaluation.tasks)}
    for entry in spec.evaluation.matrix:
        i, run = runs[entry.run]
        for name in entry.tasks:
            j, task = tasks[name]
            if task.dataset and task.dataset != "same":
                key: PathKey = ("evaluation", "tasks", j, "dataset")
            elif task.dataset == "same":
                key = ("data", "training", "path")
            else:
                key = _run_key(i, run, ("eval_dataset_path", "dataset_path"))
            note(key, eval_data_path(loaded, run, task), f"eval dataset of {run.name}/{task.name}")
    return list(found.values())


def _run_key(i: int, run: Run, parameters: tuple[str, ...]) -> PathKey:
    """Where a run names its own data file: parameters.NAME, else runs[i].dataset_path, else data.training.path."""
    for name in parameters:
        value = run.parameters.get(name)
        if isinstance(value, str) and value:
            return ("runs", i, "parameters", name)
    return ("runs", i, "dataset_path") if run.dataset_path else ("data", "training", "path")


def _check_checkpoints(loaded: LoadedSpec, add: Add) -> None:
    """An eval-only run's checkpoint_path: a warning only, as another unit or person may still write it."""
    for i, run in enumerate(loaded.spec.runs):
        value = run.parameters.get("checkpoint_path")
        if run.type != "eval-only" or not isinstance(value, str):
            continue
        path = loaded.resolve(value)
        if path.exists():
            continue
        key: PathKey = ("runs", i, "parameters", "checkpoint_path")
        if path.parent.is_dir():
            add("warning", key, f"checkpoint {path} does not exist yet: {run.name}'s evals fail unless it is "
                                "written before they run")
        else:
            add("warning", key, f"checkpoint {path} is not visible here (a path on the cluster?); jobs will need it")


def _missing(add: Add, key: PathKey, path: Path, what: str) -> None:
    """A typo (its directory is here) is an error; a path not visible here at all is a warning."""
    if path.parent.is_dir():
        add("error", key, f"{what} {path} does not exist")
    else:
        add("warning", key, f"{what} {path} is not visible here (a path on the cluster?); jobs will need it")


# What each program needs in the environment that runs the jobs.
_EVAL_MODULES = ("inspect_ai", "transformers", "accelerate")


def _check_environment(loaded: LoadedSpec, add: Add) -> None:
    """When the jobs' environment is this machine's (no activation named), look at what it has.

    The programs the jobs run (`tune`, `inspect`) missing from this PATH is one warning: the jobs may
    still find them on the cluster's nodes. An `inspect` here without what `--model hf/...` needs
    is an error: every eval would die.
    """
    spec = loaded.spec
    if spec_environment(loaded) is not None:
        return  # the experiment names the environment the jobs activate: not this machine's
    needed = []
    if spec.tools.preparation == "torchtune" and any(r.type == "fine-tuned" for r in spec.runs):
        needed.append("tune")
    needed.append("inspect")
    missing = [name for name in needed if shutil.which(name) is None]
    if missing:
        names = " and ".join(f"`{name}`" for name in missing)
        add("warning", ("tools",), f"{names} {'is' if len(missing) == 1 else 'are'} not on this PATH and no "
                                   "environment is named: the jobs run "
                                   f"{'it' if len(missing) == 1 else 'them'} with the PATH they are submitted "
                                   "with (set reconciler.conda_env, venv or modules, or install them here)")
    inspect = shutil.which("inspect")
    if inspect is None or not spec.tools.model_api.startswith("hf/"):
        return
    absent = _missing_modules(_interpreter(Path(inspect)), _EVAL_MODULES)
    if absent:
        add("error", ("tools", "model_api"), f"the environment of {inspect} lacks {', '.join(absent)}: "
                                             f"`--model {spec.tools.model_api}` needs them "
                                             "(pip install transformers accelerate)")


def _interpreter(script: Path) -> str:
    """The Python a console script runs with (its #! line)."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline().decode("utf-8", "replace").strip()
    except OSError:
        return "python3"
    return first[2:].strip().split()[0] if first.startswith("#!") and "python" in first else "python3"


def _missing_modules(python: str, modules: tuple[str, ...]) -> list[str]:
    # find_spec looks for a module without importing it: milliseconds, not transformers' seconds.
    code = ("import importlib.util as u, sys\n"
            "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))")
    try:
        done = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []  # not checkable here: say nothing rather than guess
    return done.stdout.split() if done.returncode == 0 else []
