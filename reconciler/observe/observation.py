"""Merge every source (files, eval logs, scheduler, journal) into per-unit evidence."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.jobs import GONE, UNKNOWN, Job, Snapshot, job_order, shows_oom
from reconciler.journal import JournalView
from reconciler.observe.checkpoints import EpochEvidence, epoch_evidence
from reconciler.observe.attribution import OURS, JOB_NAME, Matrix, StdoutIndex, Unattributed, Where, attribute
from reconciler.observe.evallogs import HeaderCache, LogSummary, best_log, scan_dir
from reconciler.observe.reader import Reader
from reconciler.spec.fingerprint import read_script_fingerprint
from reconciler.spec.units import Desired, Unit, job_stdout, tag_for, tag_prefix, units_of_tag


@dataclass(frozen=True, slots=True)
class UnitEvidence:
    jobs: tuple[Job, ...] = ()  # oldest first
    attempts: int = 0  # submissions under the current fingerprint
    open_intent: bool = False
    epochs: tuple[EpochEvidence, ...] = ()  # finetune: one per epoch
    log: LogSummary | None = None  # eval: the log that speaks for the unit
    logs_seen: int = 0
    produced_fingerprint: str | None = None
    script_fingerprint: str | None = None  # from the rendered script's header, when read
    oom_in_stdout: bool = False  # the last failed job printed a CUDA out-of-memory error
    submit_error: str | None = None  # the last refusal of a submission under this fingerprint
    # eval: how the speaking log was attributed when the reconciler did not write it (adopted work)
    log_source: str | None = None
    complete_logs: int = 0  # eval: how many complete logs claim the unit (the newest wins)
    # eval: logs nearby that no source attributes and that may be this unit's (reported, never guessed)
    unattributed: tuple[str, ...] = ()
    model_missing: bool = False  # eval-only: its checkpoint_path does not exist


@dataclass(frozen=True)
class Observation:
    units: dict[str, UnitEvidence]
    scheduler_known: bool
    scheduler_note: str = ""  # why it is unknown, for reports
    read_at: dict[str, float] = field(default_factory=dict)
    unattributed: tuple[Unattributed, ...] = ()  # eval logs no source attributes to a unit
    # Not asked (an offline plan): presume the scheduler holds no job but those the journal says are in flight.
    presumed_empty: bool = False

    def get(self, key: str) -> UnitEvidence:
        return self.units.get(key) or UnitEvidence()


FileEvidence = dict[str, tuple[tuple[EpochEvidence, ...], list[LogSummary]]]


@dataclass
class Files:
    """What the files say: per unit, checkpoint epochs (fine-tunes) or the eval logs attributed to it.

    `waiting`: logs whose unit only their job's name can tell, by job id: ask the scheduler, then
    `settle`. `sources`: how each log not written by the reconciler was attributed. `missing_models`:
    eval-only units whose checkpoint_path does not exist (and that no unit of the experiment produces).
    """

    units: FileEvidence
    sources: dict[str, str] = field(default_factory=dict)
    unattributed: list[Unattributed] = field(default_factory=list)
    waiting: dict[str, list[tuple[LogSummary, Where]]] = field(default_factory=dict)
    missing_models: frozenset[str] = frozenset()
    matrix: Matrix | None = None

    def job_ids_to_ask(self) -> tuple[str, ...]:
        return tuple(sorted(self.waiting, key=lambda j: (len(j), j)))


def observe_files(desired: Desired, cache: HeaderCache, job_names: JobNames | None = None,
                  reader: Reader | None = None) -> Files:
    """The file side only: checkpoint epochs of fine-tunes, eval logs of evals (attributed: attribution.py).
    Every file is stat'ed, listed or read through `reader` (a pass's: it records them for the memo)."""
    read = reader or Reader()
    out: FileEvidence = {}
    layout = desired.layout
    for unit in desired.units:
        if unit.kind == "finetune":
            last = len(unit.epochs) - 1
            evidence = tuple(
                epoch_evidence(layout.epoch_dir(unit.run, n), final=(i == last), reader=read)
                for i, n in enumerate(unit.epochs)
            )
            out[unit.key] = (evidence, [])
    files = Files(units=out)
    scan_logs(desired, cache, files, job_names or JobNames(None), reader=read)
    missing = set()
    given = {r.name for r in desired.loaded.spec.runs if r.type == "eval-only"}
    for unit in desired.units:
        if unit.kind == "eval":
            out.setdefault(unit.key, ((), []))
            # An eval-only run's checkpoint_path that no unit of the experiment writes must be there already.
            if unit.run in given and not unit.depends_on and unit.model_path is not None:
                if not read.exists(unit.model_path):
                    missing.add(unit.key)
    files.missing_models = frozenset(missing)
    return files


def unit_logs(desired: Desired, unit: Unit) -> list[LogSummary]:
    """The logs attributed to one unit, read afresh (without asking the scheduler for job names)."""
    files = Files(units={})
    scan_logs(desired, HeaderCache(None), files, JobNames(None), runs={unit.run})
    return settle(files, JobNames(None)).units.get(unit.key, ((), []))[1]


def scan_logs(desired: Desired, cache: HeaderCache, files: Files, names: JobNames,
              runs: set[str] | None = None, reader: Reader | None = None) -> None:
    """Every eval log in each cell's logs/ directory and in each evaluated run's shared eval/logs/ (v0.2, or
    cruijff_kit before v0.3.2), attributed to its unit (or reported)."""
    layout = desired.layout
    matrix = files.matrix = Matrix(desired)
    read = reader or Reader()
    stdouts = StdoutIndex(read)
    claimed: dict[str, list[LogSummary]] = {}
    dirs: dict[str, Where] = {}
    shared = layout.dialect == "v0.2"
    for unit in desired.units:
        if unit.kind == "eval" and (runs is None or unit.run in runs):
            assert unit.log_dir is not None
            log_dir = str(unit.log_dir)
            if log_dir not in dirs:
                dirs[log_dir] = Where(unit.run) if shared else Where(unit.run, cell=unit.key)
    if not shared:
        for run in dict.fromkeys(where.run for where in dirs.values()):
            dirs[str(layout.eval_dir(run) / "logs")] = Where(run)
    keys = matrix.keys
    for log_dir, where in dirs.items():
        for log in scan_dir(log_dir, cache, read):
            if log.unit is not None and log.unit in keys:
                claimed.setdefault(log.unit, []).append(log)  # the reconciler's own: the usual case
                continue
            _place(log, where, matrix, names, files, claimed,
                   lambda log=log, log_dir=log_dir, run=where.run: stdouts.job_of(
                       log.path, _stdout_places(desired, run, Path(log_dir))))
    files.units.update({key: ((), logs) for key, logs in claimed.items()})


def _place(log: LogSummary, where: Where, matrix: Matrix, names: JobNames, files: Files,
           claimed: dict[str, list[LogSummary]], find_job: Callable[[], tuple[str, int | None] | None]) -> None:
    claim = attribute(log, where, matrix, find_job, None)
    if claim.key is None and claim.job_id is not None:
        if not names.knows(claim.job_id):
            files.waiting.setdefault(claim.job_id, []).append((log, where))
            return
        claim = attribute(log, where, matrix, lambda: find_job(), names.known)
    if claim.key is None:
        files.unattributed.append(Unattributed(log.path, claim.problem, claim.candidates))
        return
    claimed.setdefault(claim.key, []).append(log)
    if claim.source not in OURS or log.unit is None and log.fingerprint is None:
        files.sources[log.path] = claim.source + (f" {claim.job_id}" if claim.job_id and claim.source == JOB_NAME
                                                  else "")


def settle(files: Files, names: JobNames) -> Files:
    """Attribute the logs that waited for their job's name, now that the scheduler answered (or could not)."""
    if not files.waiting:
        return files
    assert files.matrix is not None
    claimed: dict[str, list[LogSummary]] = {}
    waiting, files.waiting = files.waiting, {}
    for job_id, logs in waiting.items():
        for log, where in logs:
            claim = attribute(log, where, files.matrix, lambda job_id=job_id: (job_id, None), names.known)
            if claim.key is None:
                files.unattributed.append(Unattributed(log.path, claim.problem, claim.candidates))
                continue
            claimed.setdefault(claim.key, []).append(log)
            files.sources[log.path] = claim.source + (f" {job_id}" if claim.source == JOB_NAME else "")
    for key, logs in claimed.items():
        epochs, before = files.units.get(key, ((), []))
        files.units[key] = (epochs, [*before, *logs])
    return files


def _stdout_places(desired: Desired, run: str, log_dir: Path) -> list[tuple[Path, int | None]]:
    """Where a job that wrote a log in `log_dir` may have left its slurm-{id}.out, with the epoch each place
    means: beside the log, in the cell or eval directory, in the run's output directory, and in each
    checkpoint epoch_N/ (cruijff_kit's eval scripts write their stdout into the checkpoint they evaluate)."""
    layout = desired.layout
    places: list[tuple[Path, int | None]] = [(log_dir, None), (log_dir.parent, None)]
    if log_dir.parent != layout.eval_dir(run):
        places.append((layout.eval_dir(run), None))
    run_type = desired.loaded.spec.run_named(run).type
    if run_type == "fine-tuned":
        places.append((layout.output_dir(run), None))
        places += [(layout.epoch_dir(run, n), n) for n in range(desired.loaded.spec.controls.epochs)]
    else:
        places.append((layout.run_dir(run) / "artifacts", None))
    return places


class JobNames:
    """What the scheduler said each job is called (None: it does not know the job), remembered across
    passes in `.reconciler/job-names.json`: a job's name never changes, so it is asked once."""

    def __init__(self, path: Path | None):
        self.path = path
        self.known: dict[str, str | None] = {}
        self.dirty = False
        if path is not None:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict):
                self.known = {str(k): v if isinstance(v, str) else None for k, v in data.items()}

    def knows(self, job_id: str) -> bool:
        return job_id in self.known

    def learn(self, asked: tuple[str, ...], snapshot: Snapshot | None) -> None:
        """Names from the scheduler's answer; an id it answered without (gone from accounting) is unknown."""
        if snapshot is None:
            return
        for job_id in asked:
            job = snapshot.jobs.get(job_id)
            name = job.name if job is not None and job.name else None
            if job is not None and job.live:
                continue  # still running: ask again next pass (and its log is not complete anyway)
            self.known[job_id] = name
            self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from reconciler.fsutil import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps(self.known, sort_keys=True) + "\n")
        except OSError:
            return  # only a cache: the next pass asks again
        self.dirty = False


def observe(
    desired: Desired,
    journal: JournalView,
    snapshot: Snapshot | None,
    cache: HeaderCache,
    scheduler_note: str = "",
    read_scripts: bool = True,
    files: Files | None = None,
    presumed_empty: bool = False,
    reader: Reader | None = None,
) -> Observation:
    """`snapshot` is None when the scheduler was not asked or could not answer; `presumed_empty`
    (only without a snapshot) plans as if it had answered that it holds nothing new. Scripts and
    stdout are read through `reader` (a pass's, as its `files` were)."""
    now = time.time()
    read = reader or Reader()
    if files is None:
        files = settle(observe_files(desired, cache, reader=read), JobNames(None))
    notes: dict[str, tuple[str, ...]] = {}
    for orphan in files.unattributed:
        for key in orphan.candidates:
            notes[key] = (*notes.get(key, ()), f"{os.path.basename(orphan.path)} ({orphan.problem})")
    sources, missing_models = files.sources, files.missing_models
    # Jobs by the unit their tag names; a job shared by the evals of one checkpoint, under each of them.
    by_tag: dict[str, list[Job]] = {}
    prefix = tag_prefix(desired.experiment)
    if snapshot is not None:
        for job in snapshot.jobs.values():
            if job.tag and job.tag.startswith(prefix):
                for key in units_of_tag(job.tag[len(prefix):]):
                    by_tag.setdefault(key, []).append(job)
    histories = journal.units
    units: dict[str, UnitEvidence] = {}
    for unit in desired.units:
        key, fingerprint = unit.key, unit.fingerprint
        history = histories.get(key)  # None: the journal never heard of the unit (most units, most passes)
        jobs: dict[str, Job] = {}
        fps: dict[str, str | None] = {}
        if history is not None:
            for job_id, fp in history.jobs:
                jobs[job_id] = _job_record(job_id, journal, snapshot)
                fps[job_id] = fp
        if by_tag:
            for job in by_tag.get(key, ()):
                jobs[job.job_id] = job  # found by tag (journal lost or crash before the job id was written)
                fps.setdefault(job.job_id, None)
        ordered = _ordered(jobs, journal)
        attempts = 0
        for job in ordered:
            if fps.get(job.job_id) in (None, fingerprint):
                attempts += 1
        # Refused submissions spend the budget too: a permanent sbatch error must not loop forever.
        refused: list[str] = []
        if history is not None and history.submit_failures:
            refused = [error for fp, error in history.submit_failures if fp in (None, fingerprint)]
            attempts += len(refused)
        epochs, logs = files.units[key]
        log = best_log(logs)
        produced = _produced_fingerprint(unit, log, ordered, fps)
        script_fp = None
        if read_scripts and produced is None and _done_on_disk(epochs, log):
            script_fp = read_script_fingerprint(unit.script, read.open)
            produced = script_fp
        oom = unit.kind == "finetune" and bool(ordered) and ordered[-1].state == "FAILED" \
            and stdout_shows_oom(unit.stdout, ordered[-1].job_id, read)
        units[key] = UnitEvidence(
            jobs=ordered, attempts=attempts, open_intent=history is not None and history.open_intent, epochs=epochs,
            log=log, logs_seen=len(logs), produced_fingerprint=produced, script_fingerprint=script_fp,
            oom_in_stdout=oom, submit_error=refused[-1] if refused else None,
            log_source=sources.get(log.path) if sources and log is not None else None,
            complete_logs=sum(1 for x in logs if x.state == "complete") if len(logs) > 1 else int(
                log is not None and log.state == "complete"),
            unattributed=notes.get(key, ()) if notes else (), model_missing=key in missing_models,
        )
    read_at = {"files": now, "journal": now}
    if snapshot is not None:
        read_at["scheduler"] = now
    return Observation(units=units, scheduler_known=snapshot is not None, scheduler_note=scheduler_note,
                       read_at=read_at, unattributed=tuple(files.unattributed),
                       presumed_empty=presumed_empty and snapshot is None)


def _job_record(job_id: str, journal: JournalView, snapshot: Snapshot | None) -> Job:
    if snapshot is not None and job_id in snapshot.jobs:
        return snapshot.jobs[job_id]
    if job_id in journal.terminal:
        return Job(job_id=job_id, state=journal.terminal[job_id], exit_code=journal.exit_codes.get(job_id))
    if snapshot is not None:
        return Job(job_id=job_id, state=GONE)
    return Job(job_id=job_id, state=UNKNOWN)


def _ordered(jobs: dict[str, Job], journal: JournalView) -> tuple[Job, ...]:
    """Oldest first. Jobs we cancelled and that have ended (a dependency that can never be met, a
    duplicate, `reconcile cancel`) say nothing about the unit: they are neither attempts nor failures."""
    if not jobs:
        return ()
    if len(jobs) == 1:  # the usual case: one job, nothing to sort
        (job,) = jobs.values()
        return () if _cancelled_and_ended(job, journal) else (job,)
    return tuple(sorted((j for j in jobs.values() if not _cancelled_and_ended(j, journal)), key=lambda j: job_order(j.job_id)))


def _cancelled_and_ended(job: Job, journal: JournalView) -> bool:
    return job.job_id in journal.cancelled and not job.live and job.state != UNKNOWN


def all_done_on_disk(files: Files) -> bool:
    """Every unit done by its files alone, and no log waiting for its job's name (the scheduler is then not asked)."""
    return not files.waiting and all(_done_on_disk(epochs, best_log(logs)) for epochs, logs in files.units.values())


def _done_on_disk(epochs: tuple[EpochEvidence, ...], log: LogSummary | None) -> bool:
    if epochs:
        return all(e.state == "complete" for e in epochs)
    return log is not None and log.state == "complete"


def _produced_fingerprint(unit: Unit, log: LogSummary | None, jobs: tuple[Job, ...],
                          fps: dict[str, str | None]) -> str | None:
    """Under which spec the artifacts were made: the log's own record first, then the journal."""
    if unit.kind == "eval" and log is not None and log.fingerprint:
        return log.fingerprint
    for job in reversed(jobs):
        if fps.get(job.job_id):
            return fps[job.job_id]
    return None


# torchtune's OOM leaves the job FAILED, not OUT_OF_MEMORY (cruijff_kit PR #484): read the stdout
# (jobs.shows_oom).
STDOUT_TAIL_BYTES = 64 * 1024


def stdout_shows_oom(pattern: Path, job_id: str, reader: Reader | None = None) -> bool:
    path = job_stdout(pattern, job_id)
    try:
        with (reader or Reader()).open(path) as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - STDOUT_TAIL_BYTES))
            tail = fh.read()
    except OSError:
        return False
    return shows_oom(tail.decode("utf-8", errors="replace"))
