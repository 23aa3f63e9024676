"""Merge every source (files, eval logs, scheduler, journal) into per-unit evidence."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.backends.base import GONE, UNKNOWN, Job, Snapshot
from reconciler.journal import JournalView
from reconciler.observe import inputs
from reconciler.observe.checkpoints import EpochEvidence, epoch_evidence, epoch_inputs
from reconciler.observe.evallogs import HeaderCache, LogSummary, best_log, scan_dir
from reconciler.spec.units import Desired, Unit, tag_for


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


@dataclass(frozen=True)
class Observation:
    units: dict[str, UnitEvidence]
    scheduler_known: bool
    scheduler_note: str = ""  # why it is unknown, for reports
    read_at: dict[str, float] = field(default_factory=dict)

    def get(self, key: str) -> UnitEvidence:
        return self.units.get(key) or UnitEvidence()


FileEvidence = dict[str, tuple[tuple[EpochEvidence, ...], list[LogSummary]]]


def observe_files(desired: Desired, cache: HeaderCache) -> FileEvidence:
    """The file side only: checkpoint epochs of fine-tunes, eval logs of evals."""
    out: FileEvidence = {}
    layout = desired.layout
    dialect = layout.dialect
    # Keyed by the path string: hashing a Path is a Python call, and v0.2 cells share one directory.
    dir_logs: dict[str, list[LogSummary]] = {}
    recording = inputs.active()
    for unit in desired.units:
        if unit.kind == "finetune":
            last = len(unit.epochs) - 1
            if recording:
                for i, n in enumerate(unit.epochs):
                    for path in epoch_inputs(layout.epoch_dir(unit.run, n), final=(i == last)):
                        inputs.note_path(path)
            evidence = tuple(
                epoch_evidence(layout.epoch_dir(unit.run, n), final=(i == last))
                for i, n in enumerate(unit.epochs)
            )
            out[unit.key] = (evidence, [])
        else:
            assert unit.log_dir is not None
            log_dir = str(unit.log_dir)
            logs = dir_logs.get(log_dir)
            if logs is None:
                logs = dir_logs[log_dir] = scan_dir(log_dir, cache)
            out[unit.key] = ((), logs_for(unit, logs, dialect))
    return out


def logs_for(unit: Unit, logs: list[LogSummary], dialect: str) -> list[LogSummary]:
    if dialect != "v0.2":
        return logs  # one directory per cell: every log in it is the cell's
    # v0.2 shares one log directory per run: tell cells apart by what the log records.
    mine = []
    for log in logs:
        if log.unit is not None:
            if log.unit == unit.key:
                mine.append(log)
        elif log.epoch == unit.epoch and (log.task == unit.task or log.task.startswith(f"{unit.task}_")):
            mine.append(log)
    return mine


def observe(
    desired: Desired,
    journal: JournalView,
    snapshot: Snapshot | None,
    cache: HeaderCache,
    scheduler_note: str = "",
    read_scripts: bool = True,
    files: FileEvidence | None = None,
) -> Observation:
    """`snapshot` is None when the scheduler was not asked or could not answer."""
    now = time.time()
    if files is None:
        files = observe_files(desired, cache)
    by_tag: dict[str, list[Job]] = {}
    if snapshot is not None:
        for job in snapshot.jobs.values():
            if job.tag:
                by_tag.setdefault(job.tag, []).append(job)
    experiment = desired.experiment
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
            for job in by_tag.get(tag_for(experiment, key), ()):
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
        epochs, logs = files[key]
        log = best_log(logs)
        produced = _produced_fingerprint(unit, log, ordered, fps)
        script_fp = None
        if read_scripts and produced is None and _done_on_disk(epochs, log):
            script_fp = read_script_fingerprint(unit.script)
            produced = script_fp
        oom = unit.kind == "finetune" and bool(ordered) and ordered[-1].state == "FAILED" \
            and stdout_shows_oom(unit.stdout, ordered[-1].job_id)
        units[key] = UnitEvidence(
            jobs=ordered, attempts=attempts, open_intent=history is not None and history.open_intent, epochs=epochs,
            log=log, logs_seen=len(logs), produced_fingerprint=produced, script_fingerprint=script_fp,
            oom_in_stdout=oom, submit_error=refused[-1] if refused else None,
        )
    read_at = {"files": now, "journal": now}
    if snapshot is not None:
        read_at["scheduler"] = now
    return Observation(units=units, scheduler_known=snapshot is not None, scheduler_note=scheduler_note, read_at=read_at)


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
    return tuple(sorted((j for j in jobs.values() if not _cancelled_and_ended(j, journal)), key=_job_order))


def _cancelled_and_ended(job: Job, journal: JournalView) -> bool:
    return job.job_id in journal.cancelled and not job.live and job.state != UNKNOWN


def _job_order(job: Job) -> tuple[int, str]:
    head = job.job_id.split("_", 1)[0]
    # isascii: `"²".isdigit()` is true, and int() refuses it; ids come from the scheduler and the journal.
    return (int(head) if head.isascii() and head.isdigit() else 0, job.job_id)


def all_done_on_disk(files: FileEvidence) -> bool:
    return all(_done_on_disk(epochs, best_log(logs)) for epochs, logs in files.values())


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


FINGERPRINT_MARK = "# reconciler-fingerprint:"


def read_script_fingerprint(script: Path) -> str | None:
    """The fingerprint a rendered script carries in its header (None: not ours, or absent)."""
    inputs.note_path(script)
    try:
        with open(script, encoding="utf-8", errors="replace") as fh:
            for _, line in zip(range(8), fh):
                if line.startswith(FINGERPRINT_MARK):
                    return line[len(FINGERPRINT_MARK):].strip() or None
    except OSError:
        return None
    return None


# torchtune's OOM leaves the job FAILED, not OUT_OF_MEMORY (cruijff_kit PR #484): read the stdout.
OOM_MARKERS = ("torch.OutOfMemoryError", "CUDA out of memory")
STDOUT_TAIL_BYTES = 64 * 1024


def shows_oom(text: str) -> bool:
    """Whether a job's output says it ran out of GPU memory."""
    return any(marker in text for marker in OOM_MARKERS)


def stdout_shows_oom(pattern: Path, job_id: str) -> bool:
    path = Path(str(pattern).replace("%j", job_id))
    inputs.note_path(path)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - STDOUT_TAIL_BYTES))
            tail = fh.read()
    except OSError:
        return False
    return shows_oom(tail.decode("utf-8", errors="replace"))
