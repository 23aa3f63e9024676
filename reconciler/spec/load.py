"""Load experiment_summary.yaml: parse with positions, validate, detect the dialect, locate every error."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from reconciler.errors import SpecError, SpecProblems
from reconciler.spec.location import SPEC_FILENAME, spec_path  # noqa: F401  (re-exported: callers import them from here)
from reconciler.spec.models import ExperimentSpec, NAME_RE
from reconciler.spec.yamlpos import Located, PathKey, format_path, load_yaml, read_spec_text

Dialect = Literal["v0.2", "v0.3"]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus where it came from. Relative paths in it resolve against `root`."""

    spec: ExperimentSpec
    path: Path
    dialect: Dialect
    experiment_dir: Path
    warnings: tuple[str, ...] = ()
    located: Located | None = field(default=None, repr=False, compare=False)
    # What scaffold.model_dir read of each model directory (a ModelDir, by path), read once per loaded
    # spec: the resources of every unit of a model named without its size come from it.
    model_dirs: dict[Path, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        """A path from the spec, absolute (relative ones are relative to the spec file)."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.root / p)


def load_spec(target: Path, text: str | None = None) -> LoadedSpec:
    path = spec_path(target)
    if path.suffix.lower() == ".md":
        from reconciler.spec.markdown import load_markdown

        located = load_markdown(path, read_spec_text(path) if text is None else text)
    else:
        located = load_yaml(path, text)
    data = located.data
    if not isinstance(data, dict):
        raise located.error((), "the top level must be a mapping (experiment:, runs:, evaluation: ...)")
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecProblems.of(_all_errors(exc, located)) from None
    problems: list[SpecError] = []
    dialect = _dialect(spec, located, problems)
    _check(spec, dialect, located, problems)
    if problems:
        raise SpecProblems.of(sorted(problems, key=_position)) from None
    assert dialect is not None
    exp_dir_text = spec.experiment.dir if dialect == "v0.3" else spec.experiment.directory
    assert exp_dir_text is not None
    path = Path(os.path.abspath(path))
    exp_dir = Path(exp_dir_text).expanduser()
    if not exp_dir.is_absolute():
        exp_dir = path.parent / exp_dir
    return LoadedSpec(
        spec=spec,
        path=path,
        dialect=dialect,
        experiment_dir=Path(_normalise(exp_dir)),
        warnings=tuple(_unknown_keys(spec, located)),
        located=located,
    )


def _normalise(p: Path) -> str:
    return os.path.normpath(str(p))


def _all_errors(exc: ValidationError, located: Located) -> list[SpecError]:
    """Every problem pydantic found, located, once each, in file order."""
    errors: dict[tuple[PathKey, str], SpecError] = {}
    for err in exc.errors(include_url=False):
        key = _data_path(err["loc"], located.data, err["type"])
        line, col = located.where(key)
        message = _message(err)
        errors.setdefault((key, message), SpecError(located.path, line or None, col or None, format_path(key), message))
    return sorted(errors.values(), key=_position)


def _position(error: SpecError) -> tuple[int, int]:
    return error.line or 0, error.column or 0


def _data_path(loc: tuple[Any, ...], data: Any, err_type: str) -> PathKey:
    """Keep the part of pydantic's location that names places in the document (drop union tags)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str):
            if part in node:
                out.append(part)
                node = node[part]
                continue
            if err_type == "missing" and i == len(loc) - 1:
                out.append(part)
            break
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
            continue
        break
    return tuple(out)


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        if "A-Za-z0-9._-" in pattern:
            return (f"{err['input']!r} is not a safe name: use letters, digits, '.', '_' and '-' "
                    "(starting with a letter or digit); names become paths and job names")
        if "~+/@" in pattern:
            return (f"{err['input']!r} is not an environment name or path: use letters, digits and . _ - + / @ ~ "
                    "(no spaces or shell syntax; it is placed after conda activate, module load or source)")
        if "\\d{4}" in pattern:
            return f"{err['input']!r} is not a date in YYYY-MM-DD form"
        return f"{err['input']!r} does not have the expected form ({pattern})"
    if kind in {"int_type", "float_type", "bool_type", "string_type", "dict_type", "list_type", "model_type"}:
        expected = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
                    "string_type": "a string", "dict_type": "a mapping", "list_type": "a list",
                    "model_type": "a mapping"}[kind]
        return f"expected {expected}, got {err['input']!r}"
    return f"{err['msg']}; got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else err["msg"]


def _dialect(spec: ExperimentSpec, located: Located, problems: list[SpecError]) -> Dialect | None:
    """The dialect, or None (with the problem noted) when the file does not say which it is."""
    has_dir, has_directory = spec.experiment.dir is not None, spec.experiment.directory is not None
    if has_dir and has_directory:
        problems.append(located.error(("experiment", "directory"),
                                      "give experiment.dir (v0.3.4) or experiment.directory (v0.2), not both"))
        return None
    if not has_dir and not has_directory:
        problems.append(located.error(("experiment",), "experiment.dir (v0.3.4) or experiment.directory (v0.2) "
                                                        "is required: where the experiment lives"))
        return None
    return "v0.3" if has_dir else "v0.2"


def _check(spec: ExperimentSpec, dialect: Dialect | None, located: Located, problems: list[SpecError]) -> None:
    """Rules that span fields: every broken one is noted, located. `dialect` None: the dialect's own rules
    are skipped (which dialect is meant is itself the problem)."""
    def fail(key: PathKey, message: str) -> None:
        problems.append(located.error(key, message))

    ev = spec.evaluation
    if ev.scorer is not None and ev.scorers is not None:
        fail(("evaluation", "scorer"), "give evaluation.scorers (v0.3.4) or evaluation.scorer (v0.2), not both")
    scorers = ev.scorers if ev.scorers is not None else ev.scorer
    if scorers is not None and not scorers:
        fail(("evaluation", "scorers" if ev.scorers is not None else "scorer"), "list at least one scorer")

    if dialect == "v0.2":
        out = spec.output
        if out is None or not out.base_directory:
            fail(("output",), "v0.2 experiments (experiment.directory) need output.base_directory for checkpoints")
        pattern = (out.checkpoint_pattern if out is not None else None) or "ck-out-{run_name}/epoch_{N}"
        if "{run_name}" not in pattern or "{N}" not in pattern:
            fail(("output", "checkpoint_pattern"), "must contain {run_name} and {N}, e.g. \"ck-out-{run_name}/epoch_{N}\"")
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            fail(("output", "checkpoint_pattern"), "must be a relative path inside output.base_directory")
        if Path(pattern).name != "epoch_{N}":
            fail(("output", "checkpoint_pattern"), "must end in epoch_{N}: torchtune names the epoch directories itself")
    elif dialect == "v0.3" and spec.controls.dataset_type is None:
        fail(("controls",), "controls.dataset_type is required (chat_completion or text_completion)")

    if spec.tools.preparation == "command" and not (spec.tools.command or "").strip():
        fail(("tools",), "tools.preparation: command needs tools.command, the trainer's command line")

    _check_prompt(spec.controls.prompt, ("controls", "prompt"), fail)

    models = {m.name for m in spec.models.base}
    runs: dict[str, int] = {}
    for i, run in enumerate(spec.runs):
        if run.name in runs:
            fail(("runs", i, "name"), f"{run.name!r} is defined twice (first at runs[{runs[run.name]}])")
        runs[run.name] = i
        if run.model not in models:
            fail(("runs", i, "model"), f"{run.model!r} is not a model under models.base ({', '.join(sorted(models))})")
        if run.type == "eval-only":
            if dialect == "v0.2":
                fail(("runs", i, "type"), "eval-only runs need the v0.3.4 dialect (experiment.dir)")
            if not isinstance(run.parameters.get("checkpoint_path"), str):
                fail(("runs", i, "parameters"), "eval-only runs need parameters.checkpoint_path, the checkpoint to evaluate")
        if "prompt" in run.parameters:
            if not isinstance(run.parameters["prompt"], str):
                fail(("runs", i, "parameters", "prompt"), "must be a string")
            _check_prompt(run.parameters["prompt"], ("runs", i, "parameters", "prompt"), fail)
        for key in ("lr", "lora_rank", "batch_size", "epochs"):
            value = run.parameters.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                fail(("runs", i, "parameters", key), f"expected a number, got {value!r}")
        if "epochs" in run.parameters:
            fail(("runs", i, "parameters", "epochs"), "set epochs once, under controls.epochs")

    tasks: dict[str, int] = {}
    for i, task in enumerate(ev.tasks):
        if task.name in tasks:
            fail(("evaluation", "tasks", i, "name"), f"{task.name!r} is defined twice (first at evaluation.tasks[{tasks[task.name]}])")
        tasks[task.name] = i
        if task.prompt is not None:
            _check_prompt(task.prompt, ("evaluation", "tasks", i, "prompt"), fail)
        if task.dataset is not None and task.eval_condition is not None:
            fail(("evaluation", "tasks", i), "give dataset or eval_condition, not both")

    epochs = spec.controls.epochs
    cells: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(ev.matrix):
        where = ("evaluation", "matrix", i)
        for j, task in enumerate(entry.tasks):
            if task not in tasks:
                fail(where + ("tasks", j), f"{task!r} is not a task defined under evaluation.tasks")
            if (entry.run, task) in cells:
                fail(where + ("tasks", j), f"{entry.run}/{task} is already in evaluation.matrix[{cells[(entry.run, task)]}]")
            cells[(entry.run, task)] = i
        if entry.run not in runs:
            fail(where + ("run",), f"{entry.run!r} is not a run defined under runs")
            continue  # its epochs cannot be checked against a run that is not there
        run = spec.runs[runs[entry.run]]
        if run.type == "fine-tuned":
            if entry.epochs is None:
                fail(where + ("epochs",), f"fine-tuned run {entry.run!r} needs epochs: a list of 0-based epochs below {epochs}")
            elif not entry.epochs:
                fail(where + ("epochs",), "list at least one epoch (0-based)")
            seen: set[int] = set()
            for k, n in enumerate(entry.epochs or []):
                if not 0 <= n < epochs:
                    fail(where + ("epochs", k),
                         f"epoch {n} is out of range: epochs are 0-based, so controls.epochs={epochs} gives 0..{epochs - 1}")
                if n in seen:
                    fail(where + ("epochs", k), f"epoch {n} is listed twice")
                seen.add(n)
        elif entry.epochs is not None:
            fail(where + ("epochs",), f"{run.type} runs are evaluated once: set epochs: null")


def _check_prompt(prompt: str, key: PathKey, fail: Any) -> None:
    if "{input}" not in prompt:
        fail(key, "the prompt must contain {input}, where each sample's input goes")
        return
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}
    except ValueError as exc:
        fail(key, f"invalid prompt template ({exc}); write literal braces as {{{{ and }}}}")
        return
    others = sorted(f for f in fields if f != "input")
    if others:
        fail(key, f"unknown placeholder {{{others[0]}}}; only {{input}} is filled in (write literal braces as {{{{ }}}})")


_FREE_FORM = {"parameters", "variables", "data_generation", "slurm_overrides", "params", "model_extra"}


def _unknown_keys(spec: ExperimentSpec, located: Located) -> list[str]:
    """One warning per key the models do not know (users add their own; we keep and ignore them)."""
    out: list[str] = []

    def walk(obj: Any, key: PathKey) -> None:
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                walk(item, key + (i,))
            return
        if not isinstance(obj, BaseModel):
            return
        # controls carries extra hyperparameters by design; they flow to the trainer.
        if obj.model_extra and key != ("controls",):
            for name in obj.model_extra:
                line, col = located.where_key(key + (name,))
                out.append(f"{located.path}:{line}:{col}: {format_path(key + (name,))}: unknown key, kept but not used")
        for name in type(obj).model_fields:
            if name not in _FREE_FORM:
                walk(getattr(obj, name), key + (name,))

    walk(spec, ())
    return out


def is_safe_name(value: str) -> bool:
    return bool(NAME_RE.fullmatch(value))  # fullmatch: `$` alone lets a trailing newline through
