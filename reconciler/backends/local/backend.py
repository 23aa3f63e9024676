"""The embedded local backend: SLURM's semantics on this machine, with detached per-job supervisors.

State lives under `state_dir` (`{experiment}/.reconciler/local/`):

    lock            flock taken for every write (submit, grant, cancel, release, finish)
    next_id         the job-id counter
    last_check      when a waiting supervisor last looked for a stalled queue
    jobs/{id}.json  one record per job, replaced atomically (tmp + fsync + rename)
    jobs/{id}.sh    the script as submitted (sbatch snapshots it too)
    jobs/{id}.log   the supervisor's own output (tracebacks, if any)

Each job gets a detached supervisor (`local_runner`) at submit time. It waits until a
scheduling pass grants it a slot, runs `bash` on the script in its own process group,
enforces the time limit and cancellations, and writes the outcome. A pass (`schedule`) runs
under the lock whenever a slot may have freed: at submit, cancel, release, when a job ends,
and from `query` when it sees a free slot or a dead supervisor. The reconciler can therefore
die at any moment without stopping or losing a job.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from reconciler.jobs import (
    BOOT_FAIL,
    CANCELLED,
    COMPLETED,
    DEPENDENCY_NEVER_SATISFIED,
    NODE_FAIL,
    PENDING,
    RUNNING,
    TERMINAL_STATES,
    Job,
    Snapshot,
)
from reconciler.backends.base import Capabilities, SubmitRequest
from reconciler.backends.local.procs import is_alive, kill_group, process_identity
from reconciler.backends.local.store import (
    Record,
    _next_id,
    jobs_dir,
    load_records,
    locked,
    read_record,
    write_record,
)
from reconciler.timefmt import parse_time_limit
from reconciler.errors import BackendError, BackendUnavailable

CAPABILITIES = Capabilities(name="local", min_poll_seconds=0.2, default_poll_seconds=2.0, finetune_stagger_seconds=0.0)

# sbatch's default when neither the request nor the script names an output file.
DEFAULT_OUTPUT = "slurm-%j.out"

@dataclass(frozen=True)
class Directives:
    """The `#SBATCH` options this backend honours, as written in the script."""

    output: str | None = None
    error: str | None = None
    time: str | None = None
    job_name: str | None = None
    open_mode: str | None = None


_OPTIONS = {
    "-o": "output",
    "--output": "output",
    "-e": "error",
    "--error": "error",
    "-t": "time",
    "--time": "time",
    "-J": "job_name",
    "--job-name": "job_name",
    "--open-mode": "open_mode",
}


# ---------------------------------------------------------------- the public backend


class LocalBackend:
    """Runs job scripts on this machine with SLURM's states, dependencies and time limits."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(self, state_dir: Path, max_concurrent: int | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.max_concurrent = max(1, max_concurrent or os.cpu_count() or 1)
        # Supervisors we spawned, kept only to reap them (they are our children until we exit).
        self._children: list[subprocess.Popen[bytes]] = []

    def submit(self, request: SubmitRequest) -> str:
        self._reap_children()
        script = Path(request.script).expanduser().resolve()
        if not script.is_file():
            raise BackendError("local submit", None, f"script not found: {script}")
        try:
            directives = read_directives(script.read_text(errors="replace"))
            time_limit = parse_time_limit(directives.time) if directives.time else None
        except (OSError, ValueError) as exc:
            raise BackendError("local submit", None, f"{script}: {exc}") from exc
        open_mode = directives.open_mode or "truncate"
        if open_mode not in ("truncate", "append"):
            raise BackendError("local submit", None, f"{script}: invalid --open-mode {open_mode!r}")
        try:
            return self._submit(request, script, directives, time_limit, open_mode)
        except OSError as exc:
            raise BackendError("local submit", None, f"{script}: {exc}") from exc

    def _submit(
        self, request: SubmitRequest, script: Path, directives: Directives, time_limit: int | None, open_mode: str
    ) -> str:
        workdir = Path(request.workdir).expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        jobs_dir(self.state_dir).mkdir(parents=True, exist_ok=True)
        with locked(self.state_dir):
            for dep in request.depends_on:
                if read_record(self.state_dir, dep) is None:
                    raise BackendError("local submit", None, f"Job dependency problem: no job {dep}")
            job_id = _next_id(self.state_dir)
            name = request.name or directives.job_name or script.name
            stdout = _output_path(str(request.stdout or directives.output or DEFAULT_OUTPUT), workdir, job_id, name)
            stderr = _output_path(directives.error, workdir, job_id, name) if directives.error else None
            for path in (stdout, stderr):
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
            batch_script = jobs_dir(self.state_dir) / f"{job_id}.sh"
            shutil.copyfile(script, batch_script)
            supervisor = self._spawn_supervisor(job_id)
            record = Record(
                job_id=job_id,
                name=name,
                tag=request.tag,
                script=str(script),
                batch_script=str(batch_script),
                workdir=str(workdir),
                stdout=str(stdout),
                stderr=str(stderr) if stderr else None,
                open_mode=open_mode,
                time_limit=time_limit,
                max_concurrent=self.max_concurrent,
                depends_on=list(request.depends_on),
                submitted_at=time.time(),
                # A supervisor gone already is reported BOOT_FAIL by the next pass.
                supervisor=process_identity(supervisor.pid) or [supervisor.pid, -1],
            )
            write_record(self.state_dir, record)
            schedule_locked(self.state_dir)
        return job_id

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        self._reap_children()
        try:
            records = load_records(self.state_dir)
            if needs_pass(records):
                with locked(self.state_dir):
                    records = schedule_locked(self.state_dir)
        except OSError as exc:
            raise BackendUnavailable(f"local backend state unreadable under {self.state_dir}: {exc}") from exc
        wanted = set(job_ids)
        reasons = pending_reasons(records)
        jobs = {
            job_id: _to_job(rec, reasons.get(job_id))
            for job_id, rec in records.items()
            if job_id in wanted or rec.tag.startswith(tag_prefix)
        }
        return Snapshot(jobs=jobs, missing=frozenset(wanted - records.keys()))

    def cancel(self, job_ids: Collection[str]) -> None:
        if not job_ids or not jobs_dir(self.state_dir).is_dir():
            return
        with locked(self.state_dir):
            for job_id in job_ids:
                rec = read_record(self.state_dir, job_id)
                if rec is None or rec.state in TERMINAL_STATES:
                    continue  # scancel of a finished job changes nothing
                rec.state, rec.ended_at, rec.reason = CANCELLED, time.time(), None
                write_record(self.state_dir, rec)
                # Signal at once; the supervisor escalates to SIGKILL and frees the slot when all is gone.
                if is_alive(rec.supervisor):
                    kill_group(rec.process, signal.SIGTERM)
            schedule_locked(self.state_dir)

    def release(self, job_id: str) -> None:
        with locked(self.state_dir):
            rec = read_record(self.state_dir, job_id)
            if rec is None:
                raise BackendError("local release", None, f"Invalid job id specified: {job_id}")
            # Like `scontrol update Dependency=`; a job no longer pending has nothing to drop.
            if rec.state == PENDING and rec.depends_on:
                rec.depends_on = []
                write_record(self.state_dir, rec)
                schedule_locked(self.state_dir)

    def stdout_path(self, job_id: str) -> Path | None:
        """Where the job's standard output goes (None for an unknown job)."""
        return stdout_path(self.state_dir, job_id)

    def _spawn_supervisor(self, job_id: str) -> subprocess.Popen[bytes]:
        log = jobs_dir(self.state_dir) / f"{job_id}.log"
        with open(log, "ab") as log_file:
            # A new session: Ctrl-C or a closing terminal of the reconciler never reaches the job.
            child = subprocess.Popen(
                [sys.executable, "-m", "reconciler.backends.local.runner", str(self.state_dir), job_id],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                close_fds=True,  # never leak the lock's descriptor into a long-lived child
            )
        self._children.append(child)
        return child

    def _reap_children(self) -> None:
        self._children = [child for child in self._children if child.poll() is None]


def stdout_path(state_dir: Path, job_id: str) -> Path | None:
    """The file a job's standard output goes to, `%j` expanded (None for an unknown job)."""
    rec = read_record(Path(state_dir), job_id)
    return Path(rec.stdout) if rec else None


# ---------------------------------------------------------------- script directives


def read_directives(text: str) -> Directives:
    """The `#SBATCH` lines before the first command, as sbatch reads them. Raises ValueError."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break  # sbatch stops at the first command
        if not line.startswith("#SBATCH"):
            continue
        words = shlex.split(line[len("#SBATCH") :], comments=True)
        i = 0
        while i < len(words):
            word = words[i]
            key, _, value = word.partition("=")
            if word.startswith("--") and value:
                pass
            elif word in _OPTIONS and i + 1 < len(words):
                key, value = word, words[i + 1]
                i += 1
            elif word[:2] in _OPTIONS and not word.startswith("--"):
                key, value = word[:2], word[2:]  # glued short option: -t60
            if key in _OPTIONS and value:
                found[_OPTIONS[key]] = value
            i += 1
    return Directives(**found)


def expand_pattern(pattern: str, job_id: str, name: str) -> str:
    """sbatch filename pattern: %j job id, %x job name, %A job id (no arrays here), %% a percent."""

    def one(match: re.Match[str]) -> str:
        width, letter = match.group(1), match.group(2)
        if letter == "%":
            return "%"
        value = name if letter == "x" else job_id
        return value.zfill(int(width)) if width and letter != "x" else value

    return re.sub(r"%(\d*)([jxA%])", one, pattern)


def _output_path(pattern: str, workdir: Path, job_id: str, name: str) -> Path:
    path = Path(expand_pattern(pattern, job_id, name)).expanduser()
    return path if path.is_absolute() else workdir / path


# ---------------------------------------------------------------- scheduling


def dependency_state(rec: Record, records: dict[str, Record]) -> str:
    """`ok` (all afterok met), `wait`, or `never` (a dependency ended otherwise, as in SLURM)."""
    state = "ok"
    for dep_id in rec.depends_on:
        dep = records.get(dep_id)
        if dep is None:
            return "never"
        if dep.state == COMPLETED and (dep.exit_code or 0) == 0:
            continue
        if dep.state in TERMINAL_STATES:
            return "never"
        state = "wait"
    return state


def _holds_supervisor(rec: Record) -> bool:
    return rec.active or rec.state not in TERMINAL_STATES


def _eligible(records: dict[str, Record]) -> list[Record]:
    """Pending jobs whose dependencies are met, oldest first (FIFO)."""
    pending = [r for r in records.values() if r.state == PENDING and dependency_state(r, records) == "ok"]
    return sorted(pending, key=lambda r: int(r.job_id))


def needs_pass(records: dict[str, Record]) -> bool:
    """Whether a scheduling pass would change anything: a dead supervisor or a free slot to fill."""
    if any(_holds_supervisor(r) and not is_alive(r.supervisor) for r in records.values()):
        return True
    busy = sum(r.active for r in records.values())
    return any(busy < r.max_concurrent for r in _eligible(records))


def schedule_locked(state_dir: Path) -> dict[str, Record]:
    """One scheduling pass (caller holds the lock): fail dead jobs, grant free slots FIFO."""
    records = load_records(state_dir)
    now = time.time()
    for rec in records.values():
        if _holds_supervisor(rec) and not is_alive(rec.supervisor):
            # SLURM would report the node down; leave no orphan behind to race a resubmission.
            kill_group(rec.process, signal.SIGKILL)
            if rec.state not in TERMINAL_STATES:
                rec.state = NODE_FAIL if rec.booted else BOOT_FAIL
                rec.reason = f"supervisor died (see {jobs_dir(state_dir) / rec.job_id}.log)"
                rec.ended_at = now
            rec.active = False
            write_record(state_dir, rec)
    busy = sum(r.active for r in records.values())
    for rec in _eligible(records):
        if busy >= rec.max_concurrent:
            continue
        rec.state, rec.started_at, rec.active, rec.reason = RUNNING, now, True, None
        write_record(state_dir, rec)
        busy += 1
    return records


def schedule(state_dir: Path) -> dict[str, Record]:
    """One scheduling pass under the lock."""
    with locked(state_dir):
        return schedule_locked(state_dir)


def pending_reasons(records: dict[str, Record]) -> dict[str, str]:
    """squeue's reason for each pending job."""
    reasons: dict[str, str] = {}
    for rec in records.values():
        if rec.state == PENDING:
            waiting = dependency_state(rec, records)
            if waiting != "ok":
                reasons[rec.job_id] = DEPENDENCY_NEVER_SATISFIED if waiting == "never" else "Dependency"
    # The first eligible job waits for a slot; the ones behind it wait for their turn.
    for position, rec in enumerate(_eligible(records)):
        reasons[rec.job_id] = "Resources" if position == 0 else "Priority"
    return reasons


def _to_job(rec: Record, pending_reason: str | None) -> Job:
    return Job(
        job_id=rec.job_id,
        state=rec.state,
        name=rec.name,
        tag=rec.tag,
        reason=pending_reason if rec.state == PENDING else rec.reason,
        exit_code=rec.exit_code,
        submitted_at=rec.submitted_at,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        depends_on=tuple(rec.depends_on),
    )
