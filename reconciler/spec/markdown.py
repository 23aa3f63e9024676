"""Read the older `experiment_summary.md` (cruijff_kit's prose era, template in shared/cruijff/legacy-md-*/) as a spec.

The Markdown's tables and bold-labelled lines are mapped to the v0.2 dialect's fields, each value
remembering its line and column, so the same validation and the same located errors apply:

| experiment_summary.yaml | experiment_summary.md |
|---|---|
| experiment.name, question, date | the `# Title`, Overview's **Question:** and **Created:** |
| experiment.directory | the file's own directory |
| tools | Tools' **Model Preparation:** and **Evaluation:** (default torchtune, inspect-ai) |
| runs | the "All Runs" table: Run Name, Model, Type (Fine-tuned / Control), one column per parameter |
| models.base | Resources / Models: `- **NAME**: \\`PATH\\`` |
| data.training.path | Resources / Dataset: **Path:** |
| evaluation.tasks | the "Evaluation Tasks" table: Task Name, Script, Dataset, Description |
| evaluation.matrix | the "Evaluation Matrix" table (`✓ epoch 0,1` per task), else the sentence "All runs will be evaluated on TASKS at epoch N" (or "the final epoch") |
| controls | Configuration / Training: **Epochs:**, **Batch size:**, **System prompt:**, **Prompt:**, **LoRA rank:**, **Learning rate:** |
| evaluation.temperature, scorer | Configuration / Evaluation: **Temperature:**, **Scorer:** |
| output.base_directory, checkpoint_pattern | Configuration / Output: **Checkpoint directory:**, **Naming pattern:** |

What cannot be mapped (a missing table, a run type or epoch list it cannot read) is one error with
its line and column. Nothing is ever written back into the file's sections (only `reconcile`'s
"Evaluations" status table, if the file has one; see report/state_file.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import SpecError
from reconciler.spec.yamlpos import Located, PathKey

MD_FILENAME = "experiment_summary.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BOLD = re.compile(r"^\s*[-*]?\s*\*\*(?P<key>[^*]+?):?\*\*:?\s*(?P<value>.*)$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_BLANKS = {"", "-", "—", "n/a", "na", "none", "(blank)", '""', "''"}

PARAMETER_NAMES = {"lora rank": "lora_rank", "rank": "lora_rank", "learning rate": "lr", "lr": "lr",
                   "batch size": "batch_size", "epochs": "epochs", "lora dropout": "lora_dropout",
                   "weight decay": "weight_decay"}
SKIP_COLUMNS = {"est. time", "est time", "estimated time", "time", "notes", "run name", "model", "type"}


@dataclass
class _Table:
    line: int  # the header row
    header: list[str]
    columns: list[int]  # 1-based column of each header cell
    rows: list[tuple[int, list[str], list[int]]] = field(default_factory=list)  # (line, cells, columns)


@dataclass
class _Section:
    title: str
    level: int
    line: int
    bold: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # key (lower) -> (value, line, col)
    items: list[tuple[str, str, int, int]] = field(default_factory=list)  # (key, value, line, col) in order
    tables: list[_Table] = field(default_factory=list)
    text: list[tuple[str, int]] = field(default_factory=list)
    parents: tuple[str, ...] = ()


def load_markdown(path: Path, text: str) -> Located:
    """The Markdown mapped to a v0.2 experiment document, with the position of every value."""
    sections = _sections(text)
    doc = _Document(path, sections)
    return doc.build()


def _split_row(line: str) -> tuple[list[str], list[int]]:
    body = line.rstrip("\r\n")
    cells, columns = [], []
    start = body.index("|") + 1 if body.lstrip().startswith("|") else 0
    i = start
    cell_start = i
    while i <= len(body):
        if i == len(body) or (body[i] == "|" and (i == 0 or body[i - 1] != "\\")):
            raw = body[cell_start:i]
            stripped = raw.strip()
            if i < len(body) or stripped:
                cells.append(stripped.replace("\\|", "|"))
                columns.append(cell_start + (len(raw) - len(raw.lstrip())) + 1)
            cell_start = i + 1
        i += 1
    return cells, columns


def _sections(text: str) -> list[_Section]:
    lines = text.splitlines()
    sections = [_Section("", 0, 1)]
    stack: list[tuple[int, str]] = []
    in_code = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_code = not in_code
            i += 1
            continue
        if in_code:
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            stack = [(lvl, title) for lvl, title in stack if lvl < level]
            title = heading.group(2).strip()
            sections.append(_Section(title, level, i + 1, parents=tuple(t for _, t in stack)))
            stack.append((level, title))
            i += 1
            continue
        current = sections[-1]
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            header, columns = _split_row(line)
            table = _Table(i + 1, header, columns)
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells, cols = _split_row(lines[i])
                table.rows.append((i + 1, cells, cols))
                i += 1
            current.tables.append(table)
            continue
        bold = _BOLD.match(line)
        if bold:
            key = bold.group("key").strip().rstrip(":").strip()
            value = bold.group("value").strip()
            col = line.index(value) + 1 if value else len(line) + 1
            current.bold.setdefault(key.lower(), (value, i + 1, col))
            current.items.append((key, value, i + 1, col))
        elif line.strip():
            current.text.append((line, i + 1))
        i += 1
    return sections


def _unquote(value: str) -> str:
    value = value.strip()
    for mark in ("`", '"', "'"):
        if len(value) >= 2 and value.startswith(mark) and value.endswith(mark):
            return value[1:-1]
    return value


def _scalar(value: str) -> Any:
    text = _unquote(value).strip()
    if _NUMBER.match(text):
        number = float(text)
        return int(number) if re.fullmatch(r"[-+]?\d+", text) else number
    return text


class _Document:
    def __init__(self, path: Path, sections: list[_Section]):
        self.path = path
        self.sections = sections
        self.positions: dict[PathKey, tuple[int, int]] = {(): (1, 1)}

    def error(self, line: int, col: int | None, key: str, message: str) -> SpecError:
        return SpecError(self.path, line, col, key, message)

    def find(self, *names: str, level: int | None = None) -> _Section | None:
        for section in self.sections:
            title = section.title.lower()
            if any(title == n or title.startswith(n) for n in names) and (level is None or section.level == level):
                return section
        return None

    def under(self, parent: str, *names: str) -> _Section | None:
        for section in self.sections:
            if any(section.title.lower().startswith(n) for n in names) and \
                    any(p.lower().startswith(parent) for p in section.parents):
                return section
        return self.find(*names)

    def put(self, data: dict[str, Any], key: PathKey, value: Any, line: int, col: int) -> None:
        node = data
        for part in key[:-1]:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[key[-1]] = value  # type: ignore[index]
        self.positions[key] = (line, col)

    def build(self) -> Located:
        data: dict[str, Any] = {}
        self._experiment(data)
        self._tools(data)
        self._models_and_data(data)
        self._runs(data)
        self._configuration(data)
        self._evaluation(data)
        return Located(data=data, positions=self.positions, path=self.path)

    # -- sections

    def _experiment(self, data: dict[str, Any]) -> None:
        title = next((s for s in self.sections if s.level == 1), None)
        if title is None:
            raise self.error(1, 1, "experiment.name", "no `# Title` line: the title names the experiment")
        self.positions[("experiment",)] = (title.line, 1)
        self.put(data, ("experiment", "name"), title.title, title.line, 3)
        overview = self.find("overview")
        if overview is not None:
            for label, key in (("question", "question"), ("created", "date"), ("date", "date")):
                if label in overview.bold and key not in data["experiment"]:
                    value, line, col = overview.bold[label]
                    self.put(data, ("experiment", key), _unquote(value), line, col)
        self.put(data, ("experiment", "directory"), ".", title.line, 1)

    def _tools(self, data: dict[str, Any]) -> None:
        tools = self.find("tools")
        if tools is None:
            return
        for label, key in (("model preparation", "preparation"), ("preparation", "preparation"),
                           ("evaluation", "evaluation")):
            if label in tools.bold and key not in data.get("tools", {}):
                value, line, col = tools.bold[label]
                self.put(data, ("tools", key), _unquote(value).split()[0].lower() if value else value, line, col)

    def _models_and_data(self, data: dict[str, Any]) -> None:
        models = self.under("resources", "models")
        if models is None:
            raise self.error(1, None, "models.base", "no \"Models\" section (under Resources) naming each "
                                                     "model's path as `- **NAME**: `PATH``")
        self.positions[("models",)] = self.positions[("models", "base")] = (models.line, 1)
        bases = []
        for key, value, line, col in models.items:
            path = _unquote(value)
            if path:
                self.positions[("models", "base", len(bases))] = (line, 1)
                self.positions[("models", "base", len(bases), "name")] = (line, 5)
                self.positions[("models", "base", len(bases), "path")] = (line, col)
                bases.append({"name": key, "path": path})
        data["models"] = {"base": bases}
        dataset = self.under("resources", "dataset")
        if dataset is None or "path" not in dataset.bold:
            line = dataset.line if dataset is not None else 1
            raise self.error(line, None, "data.training.path", "no **Path:** line under a \"Dataset\" section "
                                                               "(under Resources): the training data file")
        value, line, col = dataset.bold["path"]
        self.positions[("data",)] = self.positions[("data", "training")] = (dataset.line, 1)
        self.put(data, ("data", "training", "path"), _unquote(value), line, col)
        self.put(data, ("data", "training", "label"), Path(_unquote(value)).stem, line, col)

    def _runs(self, data: dict[str, Any]) -> None:
        section = self.find("all runs", "runs")
        table = section.tables[0] if section is not None and section.tables else None
        if section is None or table is None:
            raise self.error(section.line if section else 1, None, "runs",
                             "no \"All Runs\" table (Run Name | Model | ... | Type)")
        names = [h.strip().lower() for h in table.header]
        for needed in ("run name", "model", "type"):
            if needed not in names:
                raise self.error(table.line, 1, "runs", f"the All Runs table has no {needed!r} column "
                                                        f"(it has: {', '.join(table.header)})")
        self.positions[("runs",)] = (section.line, 1)
        runs = []
        for line, cells, cols in table.rows:
            cells = cells + [""] * (len(names) - len(cells))
            cols = cols + [cols[-1] if cols else 1] * (len(names) - len(cols))
            i = len(runs)
            row = dict(zip(names, cells))
            where = dict(zip(names, cols))
            kind = row["type"].strip().lower().replace(" ", "-")
            run_type = {"fine-tuned": "fine-tuned", "finetuned": "fine-tuned", "fine-tune": "fine-tuned",
                        "control": "control", "base": "control", "eval-only": "eval-only"}.get(kind)
            if run_type is None:
                raise self.error(line, where["type"], f"runs[{i}].type",
                                 f"{row['type']!r} is not a run type: write Fine-tuned or Control")
            parameters: dict[str, Any] = {}
            for name, header in zip(names, table.header):
                if name in SKIP_COLUMNS or _unquote(row[name]).strip().lower() in _BLANKS:
                    continue
                param = PARAMETER_NAMES.get(name, re.sub(r"\W+", "_", name).strip("_"))
                parameters[param] = _scalar(row[name])
                self.positions[("runs", i, "parameters", param)] = (line, where[name])
            self.positions[("runs", i)] = (line, 1)
            self.positions[("runs", i, "name")] = (line, where["run name"])
            self.positions[("runs", i, "model")] = (line, where["model"])
            self.positions[("runs", i, "type")] = (line, where["type"])
            self.positions[("runs", i, "parameters")] = (line, 1)
            runs.append({"name": _unquote(row["run name"]), "type": run_type, "model": _unquote(row["model"]),
                         "parameters": parameters})
        data["runs"] = runs

    def _configuration(self, data: dict[str, Any]) -> None:
        training = self.under("configuration", "training")
        if training is None:
            raise self.error(1, None, "controls", "no \"Training\" section (under Configuration) with **Epochs:** "
                                                 "and **Batch size:**")
        self.positions[("controls",)] = (training.line, 1)
        controls: dict[str, Any] = {}
        data["controls"] = controls
        for label, key, kind in (("epochs", "epochs", int), ("batch size", "batch_size", int),
                                 ("system prompt", "system_prompt", str), ("prompt", "prompt", str),
                                 ("lora rank", "lora_rank", int), ("learning rate", "lr", float)):
            if label not in training.bold:
                continue
            value, line, col = training.bold[label]
            if kind is str:
                text = value.strip()
                if text.lower().endswith("(blank)"):
                    text = text[: -len("(blank)")].strip()
                parsed: Any = _unquote(text.split(' or ')[0]) if text else ""
            else:
                parsed = _scalar(value)
                if not isinstance(parsed, int | float):
                    continue  # "varies (see All Runs)": the runs' own columns say
            self.put(data, ("controls", key), parsed, line, col)
        evaluation = self.under("configuration", "evaluation")
        if evaluation is not None:
            if "temperature" in evaluation.bold:
                value, line, col = evaluation.bold["temperature"]
                self.put(data, ("evaluation", "temperature"), _scalar(value), line, col)
            if "scorer" in evaluation.bold:
                value, line, col = evaluation.bold["scorer"]
                self.put(data, ("evaluation", "scorer"), [{"name": _unquote(value).split()[0]}], line, col)
        output = self.under("configuration", "output")
        if output is not None:
            for label, key in (("checkpoint directory", "base_directory"), ("naming pattern", "checkpoint_pattern")):
                if label in output.bold:
                    value, line, col = output.bold[label]
                    self.put(data, ("output", key), _unquote(value), line, col)
            if "output" in data:
                self.positions[("output",)] = (output.line, 1)

    def _evaluation(self, data: dict[str, Any]) -> None:
        tasks_section = self.under("resources", "evaluation tasks")
        table = tasks_section.tables[0] if tasks_section is not None and tasks_section.tables else None
        if tasks_section is None or table is None:
            raise self.error(tasks_section.line if tasks_section else 1, None, "evaluation.tasks",
                             "no \"Evaluation Tasks\" table (Task Name | Script | Dataset | Description)")
        names = [h.strip().lower() for h in table.header]
        for needed in ("task name", "script"):
            if needed not in names:
                raise self.error(table.line, 1, "evaluation.tasks", f"the Evaluation Tasks table has no {needed!r} "
                                                                    "column")
        evaluation = data.setdefault("evaluation", {})
        self.positions[("evaluation",)] = self.positions[("evaluation", "tasks")] = (tasks_section.line, 1)
        tasks = []
        for line, cells, cols in table.rows:
            row = dict(zip(names, cells + [""] * len(names)))
            where = dict(zip(names, cols + [1] * len(names)))
            i = len(tasks)
            task: dict[str, Any] = {"name": _unquote(row["task name"]), "script": _unquote(row["script"])}
            dataset = _unquote(row.get("dataset", ""))
            task["dataset"] = dataset if ("/" in dataset or dataset.endswith((".json", ".parquet"))) else "same"
            if row.get("description"):
                task["description"] = row["description"]
            self.positions[("evaluation", "tasks", i)] = (line, 1)
            self.positions[("evaluation", "tasks", i, "name")] = (line, where["task name"])
            self.positions[("evaluation", "tasks", i, "script")] = (line, where["script"])
            tasks.append(task)
        evaluation["tasks"] = tasks
        evaluation["matrix"] = self._matrix(data, [t["name"] for t in tasks])

    def _matrix(self, data: dict[str, Any], tasks: list[str]) -> list[dict[str, Any]]:
        plan = self.find("evaluation plan")
        matrix_section = self.find("evaluation matrix")
        runs = data["runs"]
        types = {r["name"]: r["type"] for r in runs}
        if matrix_section is not None and matrix_section.tables:
            table = matrix_section.tables[0]
            self.positions[("evaluation", "matrix")] = (matrix_section.line, 1)
            names = [h.strip() for h in table.header]
            if not names or names[0].lower() != "run name":
                raise self.error(table.line, 1, "evaluation.matrix", "the Evaluation Matrix table's first column "
                                                                    "must be Run Name")
            entries = []
            for line, cells, cols in table.rows:
                run = _unquote(cells[0]) if cells else ""
                i = len(entries)
                self.positions[("evaluation", "matrix", i)] = (line, 1)
                self.positions[("evaluation", "matrix", i, "run")] = (line, cols[0] if cols else 1)
                chosen: list[str] = []
                epochs: set[int] = set()
                for j, header in enumerate(names[1:], start=1):
                    if header.lower() in ("notes", "note", "comments") or j >= len(cells):
                        continue
                    if header not in tasks:
                        raise self.error(table.line, table.columns[j], "evaluation.matrix",
                                         f"column {header!r} is not a task of the Evaluation Tasks table "
                                         f"({', '.join(tasks)})")
                    cell = cells[j]
                    if not cell.strip() or cell.strip().lower() in _BLANKS or cell.strip().startswith(("✗", "x ", "no")):
                        continue
                    chosen.append(header)
                    found = [int(n) for n in re.findall(r"\d+", cell)]
                    if types.get(run) == "fine-tuned":
                        if not found:
                            raise self.error(line, cols[j], f"evaluation.matrix[{i}].epochs",
                                             f"{cell!r}: name the epochs to evaluate, e.g. \"✓ epoch 0,1\" "
                                             "(0-based)")
                        epochs.update(found)
                    self.positions[("evaluation", "matrix", i, "epochs")] = (line, cols[j])
                if not chosen:
                    continue
                entry: dict[str, Any] = {"run": run, "tasks": chosen,
                                         "epochs": sorted(epochs) if types.get(run) == "fine-tuned" else None}
                entries.append(entry)
            return entries
        sentence = None
        for section in [s for s in (plan,) if s is not None]:
            for text, line in section.text:
                match = re.search(r"evaluated on (?P<tasks>.+?) at (?P<epochs>[^.]+)", text, re.IGNORECASE)
                if match:
                    sentence = (match, line, text)
                    break
        if sentence is None:
            line = plan.line if plan is not None else 1
            raise self.error(line, None, "evaluation.matrix",
                             "no \"Evaluation Matrix\" table (Run Name | TASK ... with \"✓ epoch 0,1\") and no "
                             "sentence \"All runs will be evaluated on TASKS at epoch N\"")
        match, line, text = sentence
        named = [t for t in tasks if re.search(rf"(?<![\w-]){re.escape(t)}(?![\w-])", match.group("tasks"))]
        if not named:
            raise self.error(line, match.start("tasks") + 1, "evaluation.matrix",
                             f"{match.group('tasks')!r} names none of the tasks ({', '.join(tasks)})")
        said = match.group("epochs").lower()
        epochs_total = data.get("controls", {}).get("epochs")
        if re.search(r"\b(final|last)\b", said) and isinstance(epochs_total, int):
            epochs = [epochs_total - 1]
        else:
            epochs = [int(n) for n in re.findall(r"\d+", said)]
        if not epochs:
            raise self.error(line, match.start("epochs") + 1, "evaluation.matrix",
                             f"{match.group('epochs')!r}: name the epochs (0-based, e.g. \"epoch 0\") or \"the final "
                             "epoch\"")
        self.positions[("evaluation", "matrix")] = (line, match.start() + 1)
        out = []
        for i, run in enumerate(runs):
            self.positions[("evaluation", "matrix", i)] = (line, match.start() + 1)
            out.append({"run": run["name"], "tasks": named,
                        "epochs": epochs if run["type"] == "fine-tuned" else None})
        return out
