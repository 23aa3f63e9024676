"""Job records of the local backend on disk: one JSON file per job, replaced atomically under a lock."""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from reconciler.jobs import PENDING
from reconciler.errors import BackendUnavailable

SCHEMA_VERSION = 1

_RECORD_NAME = re.compile(r"^(\d+)\.json$")


@dataclass
class Record:
    """One job as stored in `jobs/{id}.json`. Identities are `[pid, start ticks]` from /proc."""

    job_id: str
    name: str
    tag: str
    script: str  # the user's script, as submitted (for reports)
    batch_script: str  # the snapshot that runs
    workdir: str
    stdout: str
    stderr: str | None  # None: stderr goes to stdout, as in sbatch
    open_mode: str  # "truncate" or "append" (sbatch --open-mode)
    time_limit: int | None  # seconds; None: no limit
    max_concurrent: int
    depends_on: list[str]
    submitted_at: float
    state: str = PENDING
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # True from the grant until the job's processes are reaped: the job holds a slot.
    active: bool = False
    # The supervisor validated its record; a supervisor dead before that never launched.
    booted: bool = False
    supervisor: list[int] | None = None
    process: list[int] | None = None
    schema_version: int = SCHEMA_VERSION


def jobs_dir(state_dir: Path) -> Path:
    """Where the job records, script snapshots and supervisor logs live."""
    return state_dir / "jobs"


def record_path(state_dir: Path, job_id: str) -> Path:
    """The record file of one job."""
    return jobs_dir(state_dir) / f"{job_id}.json"


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the backend's lock: every write to the state happens under it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def write_record(state_dir: Path, rec: Record) -> None:
    """Replace a job's record atomically. Callers hold the lock."""
    _write_atomic(record_path(state_dir, rec.job_id), json.dumps(asdict(rec), sort_keys=True))


def _parse_record(path: Path, text: str) -> Record:
    try:
        data = json.loads(text)
        known = {f.name for f in fields(Record)}
        return Record(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        # Never guess: an unreadable record could be a live job.
        raise BackendUnavailable(f"unreadable job record {path}: {exc}") from exc


def read_record(state_dir: Path, job_id: str) -> Record | None:
    """One job's record, or None if there is no such job."""
    if not job_id.isdigit():
        return None
    path = record_path(state_dir, job_id)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return _parse_record(path, text)


def load_records(state_dir: Path) -> dict[str, Record]:
    """Every job's record, by id (empty when the state dir does not exist yet)."""
    records: dict[str, Record] = {}
    try:
        entries = list(os.scandir(jobs_dir(state_dir)))
    except FileNotFoundError:
        return records
    for entry in entries:
        match = _RECORD_NAME.match(entry.name)
        if match:
            try:
                text = Path(entry.path).read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            records[match.group(1)] = _parse_record(Path(entry.path), text)
    return records


def _next_id(state_dir: Path) -> str:
    """Allocate the next job id. Callers hold the lock."""
    counter = state_dir / "next_id"
    try:
        next_id = int(counter.read_text())
    except (FileNotFoundError, ValueError):
        next_id = 1
    # A lost or stale counter must never hand out an id that has a record.
    highest = max(
        (int(m.group(1)) for p in jobs_dir(state_dir).iterdir() if (m := _RECORD_NAME.match(p.name))), default=0
    )
    next_id = max(next_id, highest + 1)
    _write_atomic(counter, f"{next_id + 1}\n")
    return str(next_id)
