"""Which unit an eval log speaks for, whoever wrote it: the reconciler, cruijff_kit's workflows, or a hand-written script.

Asked in order; the first source that answers decides:

1. the reconciler's metadata (`reconciler_unit`);
2. the per-cell directory the log sits in (`{run}/eval/{task}_epoch{N}/logs/`); in a shared
   `{run}/eval/logs/` (v0.2, or cruijff_kit before v0.3.2) the log must say which cell it is:
   its task (`{task}` or `{task}_{vis_label}`) and the epoch in its metadata (ours, or cruijff_kit's
   `--metadata epoch=N` / `is_finetuned=false`, v0.2: `finetuned`), else
3. the checkpoint it evaluated: `-M model_path=.../epoch_N` (or the base model's path, for a control
   run), else the workflows' model name `--model hf/{run}_epoch_{N}`;
4. the job that wrote it, found by the `slurm-{id}.out` whose text names the log (inspect prints
   `Log: logs/<name>.eval` at the end): the stdout's place when it is inside `epoch_N/` (the
   workflows put eval stdout there), else the job's name from the scheduler (`eval-{task}-ep{N}` at
   cruijff_kit's HEAD, `eval-{task}-{run}-ep{N}` in older docs and ours);
5. for a run whose task has a single epoch in the matrix (and for control and eval-only runs),
   the task alone.

A log that claims something the experiment does not have (a run, a task, an epoch), or that
no source attributes although its task has several epochs, is reported, never ignored, and never
taken as proof of an epoch: its unit is run rather than guessed done. Sources that disagree (a
checkpoint of another run, a job name of another task) make a log unattributable, not a guess.
Everything here is pure except `StdoutIndex`, which lists directories and reads stdout tails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.observe.reader import Reader
from reconciler.observe.evallogs import LogSummary
from reconciler.spec.units import Desired, eval_key

# Sources, as reports name them.
METADATA = "metadata"
CELL = "cell directory"
CHECKPOINT = "checkpoint in model args"
MODEL_NAME = "model name"
STDOUT_PLACE = "slurm stdout in the checkpoint directory"
JOB_NAME = "job name"
TASK_ALONE = "task (one epoch in the matrix)"
OURS = (METADATA, CELL)  # how the reconciler's own logs are attributed: not "adopted"

CONTROL = -1  # an epoch value meaning "no epoch": a control or eval-only run's cell


@dataclass(frozen=True, slots=True)
class Where:
    """Where a log was found: in `run`'s eval directory, in a known cell's directory or a shared one."""

    run: str
    cell: str | None = None  # the unit key of the per-cell directory


@dataclass(frozen=True, slots=True)
class Claim:
    """What attribution concluded about one log."""

    key: str | None  # the unit it speaks for; None: unattributed
    source: str = ""  # how (one of the constants above), or why not (`problem`)
    problem: str = ""
    job_id: str | None = None  # the job whose name is needed (the log waits for the scheduler's answer)
    candidates: tuple[str, ...] = ()  # units it might be, for reports


@dataclass(frozen=True, slots=True)
class Unattributed:
    """A log no source attributed, with why and the units it might have been."""

    path: str
    problem: str
    candidates: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}: not attributed to any unit: {self.problem}"


class Matrix:
    """The experiment's cells by run and task, and how to read a checkpoint path (pure)."""

    def __init__(self, desired: Desired):
        spec = desired.loaded.spec
        layout = desired.layout
        self.keys = {u.key for u in desired.units}
        self.types = {r.name: r.type for r in spec.runs}
        # run -> task -> epochs in the matrix (CONTROL for a run evaluated once)
        self.cells: dict[str, dict[str, tuple[int, ...]]] = {}
        for unit in desired.units:
            if unit.kind == "eval":
                assert unit.task is not None
                tasks = self.cells.setdefault(unit.run, {})
                tasks[unit.task] = (*tasks.get(unit.task, ()), CONTROL if unit.epoch is None else unit.epoch)
        self.vis_labels = {(e.run, t): e.vis_label for e in spec.evaluation.matrix for t in e.tasks if e.vis_label}
        base = {m.name: _norm(str(desired.loaded.resolve(m.path))) for m in spec.models.base}
        self.base_paths = set(base.values())
        self.model_paths = {r.name: base[r.model] for r in spec.runs if r.type == "control"}
        for r in spec.runs:
            if r.type == "eval-only":
                self.model_paths[r.name] = _norm(str(desired.loaded.resolve(str(r.parameters["checkpoint_path"]))))
        if layout.dialect == "v0.2":
            pattern = re.escape(layout.checkpoint_pattern.strip("/"))
            pattern = pattern.replace(re.escape("{run_name}"), r"(?P<run>[^/]+)").replace(re.escape("{N}"),
                                                                                      r"(?P<epoch>\d+)")
        else:
            pattern = r"(?P<run>[^/]+)/artifacts/epoch_(?P<epoch>\d+)"
        self.checkpoint_re = re.compile(rf"(?:^|/){pattern}$")

    def key(self, run: str, task: str, epoch: int) -> str:
        return eval_key(run, task, None if epoch == CONTROL else epoch)

    def candidates(self, run: str, task: str | None = None) -> tuple[str, ...]:
        tasks = self.cells.get(run, {})
        return tuple(self.key(run, t, n) for t, epochs in tasks.items() if task in (None, t) for n in epochs)

    def task_of(self, log: LogSummary, run: str) -> str | None:
        """The matrix task a log ran, for this run: its name, or `{task}_{vis_label}` as cruijff_kit's tasks name
        themselves; None when no task of the run fits (or several do)."""
        tasks = self.cells.get(run, {})
        name = log.task
        if name in tasks:
            return name
        fits = [t for t in tasks if name in (f"{t}_{log.vis_label}", f"{t}_{self.vis_labels.get((run, t))}")]
        if not fits:
            fits = [t for t in tasks if name.startswith(f"{t}_")]
            longest = max((len(t) for t in fits), default=0)
            fits = [t for t in fits if len(t) == longest]
        return fits[0] if len(fits) == 1 else None

    def read_checkpoint(self, path: str, run: str) -> tuple[str | None, int | None]:
        """(run, epoch) a model path names: a fine-tune's epoch_N (run None when the layout's pattern does not
        place it), or this run's base model / given checkpoint (epoch CONTROL); (None, None): says nothing."""
        text = _norm(path)
        if self.model_paths.get(run) == text or text in self.base_paths:
            return run, CONTROL  # (a base model evaluated in a fine-tuned run's directory: said, then refused)
        match = self.checkpoint_re.search(text)
        if match:
            return match.group("run"), int(match.group("epoch"))
        last = re.fullmatch(r"epoch_(\d+)", os.path.basename(text))
        if last:
            return None, int(last.group(1))
        if run in self.model_paths and os.path.basename(text) == os.path.basename(self.model_paths[run]):
            return run, CONTROL  # the same model directory under another mount
        return None, None


def _norm(path: str) -> str:
    return os.path.normpath(path).rstrip("/") if path else path


_MODEL_NAME = re.compile(r"^[^/]+/(?P<run>.+?)(?:_epoch_(?P<epoch>\d+)|_(?P<control>base|control))$")
_JOB_NAME = re.compile(r"^eval-(?P<middle>.+?)(?:-ep(?P<epoch>\d+)|-(?P<base>base))?$")


FindJob = Callable[[], "tuple[str, int | None] | None"]


def attribute(log: LogSummary, where: Where, matrix: Matrix, find_job: FindJob | None = None,
              job_names: dict[str, str | None] | None = None) -> Claim:
    """The unit a log speaks for (or why none).

    `find_job` (called only when the first three sources say nothing) gives the job whose stdout names the
    log: (job id, the epoch its stdout's place says, or None). `job_names`: what the scheduler said each job
    is called (a missing or None name: it does not know). Without `job_names`, a log that needs its job's
    name comes back with `job_id` set and no key: ask the scheduler, then attribute it again.
    """
    run = where.run
    if log.state == "unreadable":
        if where.cell is not None:
            return Claim(where.cell, CELL)  # the cell's own log, broken: the unit runs again
        return Claim(None, problem=f"unreadable ({log.error or 'not an inspect log'})",
                     candidates=matrix.candidates(run))

    # 1. the reconciler's metadata
    if log.unit is not None:
        if log.unit in matrix.keys:
            return Claim(log.unit, METADATA)
        if where.cell is None:
            return Claim(None, problem=f"its metadata names unit {log.unit!r}, which this experiment does not have",
                         candidates=matrix.candidates(run))
        # In a cell's own directory the directory decides (a log copied in, or kept from a renamed experiment).

    # 2. the per-cell directory
    if where.cell is not None:
        return Claim(where.cell, CELL)

    # In a shared logs/ directory (v0.2, or earlier work), the log must say which cell it is.
    if log.run is not None and log.run != run:
        if log.run not in matrix.cells:
            return Claim(None, problem=f"its metadata names run {log.run!r}, which this experiment does not evaluate")
        run = log.run
    task = matrix.task_of(log, run)
    if task is None:
        tasks = ", ".join(sorted(matrix.cells.get(run, {}))) or "none"
        return Claim(None, problem=f"task {log.task!r} is not evaluated for run {run!r} (its tasks: {tasks})",
                     candidates=matrix.candidates(run))
    epochs = matrix.cells[run][task]
    # the epoch in its metadata: the reconciler's, or cruijff_kit's --metadata epoch / is_finetuned
    meta_epoch = log.epoch if log.epoch is not None else (CONTROL if log.finetuned is False else None)
    if meta_epoch is not None:
        return _settle(matrix, run, task, meta_epoch, METADATA, "its metadata")

    # 3. the checkpoint it evaluated
    said = None
    for path, source in ((log.checkpoint, CHECKPOINT), (log.model_path, CHECKPOINT)):
        if path:
            ck_run, epoch = matrix.read_checkpoint(path, run)
            if ck_run is not None and ck_run != run:
                return Claim(None, problem=f"it evaluated {path}, a checkpoint of run {ck_run!r}, but sits in run "
                                           f"{run!r}'s directory", candidates=matrix.candidates(run, task))
            if epoch is not None:
                said = (epoch, source, f"its model path {path}")
                break
    if said is None and log.model:
        named = _MODEL_NAME.match(log.model)
        if named and named.group("run") == run:
            epoch = CONTROL if named.group("control") else int(named.group("epoch"))
            said = (epoch, MODEL_NAME, f"its model name {log.model}")
    if said is not None:
        return _settle(matrix, run, task, said[0], said[1], said[2])

    # 4. the job that wrote it
    job = find_job() if find_job is not None else None
    if job is not None:
        job_id, place_epoch = job
        if place_epoch is not None:
            return _settle(matrix, run, task, place_epoch, STDOUT_PLACE, f"its stdout slurm-{job_id}.out")
        if job_names is None:
            return Claim(None, job_id=job_id, candidates=matrix.candidates(run, task))
        name = job_names.get(job_id)
        if name:
            read = read_job_name(name, run, task, matrix)
            if isinstance(read, str):
                return Claim(None, problem=f"job {job_id} ({name}): {read}", candidates=matrix.candidates(run, task))
            if read is not None:
                return _settle(matrix, run, task, read, JOB_NAME, f"job {job_id} ({name})", job_id)

    # 5. the task alone
    if len(epochs) == 1:
        return Claim(matrix.key(run, task, epochs[0]), TASK_ALONE)
    why = "no epoch in its metadata, model path, model name" + (" or job name" if job else "; no job stdout names it")
    return Claim(None, problem=f"{why}, and {run}/{task} has {len(epochs)} epochs in the matrix: it could be any",
                 candidates=matrix.candidates(run, task))


def _settle(matrix: Matrix, run: str, task: str, epoch: int, source: str, said: str,
            job_id: str | None = None) -> Claim:
    epochs = matrix.cells[run][task]
    if epoch in epochs:
        return Claim(matrix.key(run, task, epoch), source, job_id=job_id)
    what = "no epoch (a base or given model)" if epoch == CONTROL else f"epoch {epoch}"
    have = ", ".join("base" if n == CONTROL else str(n) for n in epochs)
    return Claim(None, problem=f"{said} says {what}, which the matrix does not have for {run}/{task} ({have})",
                 candidates=matrix.candidates(run, task))


def read_job_name(name: str, run: str, task: str, matrix: Matrix) -> int | str | None:
    """The epoch an eval job's name gives (CONTROL for none); a string when the name contradicts the log;
    None when the name says nothing (not an eval job name)."""
    match = _JOB_NAME.match(name)
    if match is None:
        return None
    middle = match.group("middle")
    if middle != task and middle != f"{task}-{run}":
        others = [t for t in matrix.cells.get(run, {}) if t != task and (middle == t or middle.startswith(f"{t}-"))]
        if others:
            return f"names task {others[0]!r}, but the log ran {task!r}"
        runs = [r for r in matrix.cells if r != run and middle == f"{task}-{r}"]
        if runs:
            return f"names run {runs[0]!r}, but the log is in {run!r}'s directory"
        if not middle.startswith(f"{task}-"):
            return None  # not one of the workflows' names
    if match.group("epoch") is not None:
        return int(match.group("epoch"))
    if match.group("base") is not None or matrix.cells[run][task] == (CONTROL,):
        return CONTROL  # `eval-{task}`: the workflows' name for a cell without an epoch
    return None


# --------------------------------------------------------------------------- the jobs' stdout (I/O)

_STDOUT_NAME = re.compile(r"^slurm-(?:.*-)?(\d+)\.out$")
STDOUT_TAIL_BYTES = 64 * 1024
_BLANKS = re.compile(r"[\s\u2500-\u257f]+")  # whitespace and rich's box drawing, which wrap long names


class StdoutIndex:
    """`slurm-{id}.out` files near logs, and which log each names. Lists each directory once per pass."""

    def __init__(self, reader: Reader | None = None) -> None:
        self.read = reader or Reader()
        self._listed: dict[str, list[tuple[str, str]]] = {}  # dir -> [(job id, path)]
        self._texts: dict[str, str] = {}

    def outs(self, directory: Path) -> list[tuple[str, str]]:
        key = str(directory)
        found = self._listed.get(key)
        if found is None:
            found = []
            try:
                entries = self.read.scandir(key)
            except OSError:
                entries = []
            for entry in entries:
                match = _STDOUT_NAME.match(entry.name)
                if match and entry.is_file():
                    found.append((match.group(1), entry.path))
            self._listed[key] = found
        return found

    def text(self, path: str) -> str:
        found = self._texts.get(path)
        if found is None:
            try:
                with self.read.open(path) as fh:
                    size = fh.seek(0, 2)
                    fh.seek(max(0, size - STDOUT_TAIL_BYTES))
                    found = _BLANKS.sub("", fh.read().decode("utf-8", errors="replace"))
            except OSError:
                found = ""
            self._texts[path] = found
        return found

    def job_of(self, log_path: str, places: Iterable[tuple[Path, int | None]]) -> tuple[str, int | None] | None:
        """(job id, epoch of its place) of the stdout that names the log; None when none does, or several."""
        name = os.path.basename(log_path)
        found = {(job_id, epoch) for directory, epoch in places for job_id, path in self.outs(directory)
                 if name in self.text(path)}
        return found.pop() if len(found) == 1 else None
