"""The detached supervisor of one local job: wait for a slot, run the script, record the outcome.

Started by `LocalBackend.submit` as `python -m reconciler.backends.local.runner STATE_DIR JOB_ID`
in a session of its own, so it outlives the reconciler.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from reconciler.jobs import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, TIMEOUT
from reconciler.backends.local.backend import needs_pass, schedule, schedule_locked
from reconciler.backends.local.procs import process_identity
from reconciler.backends.local.store import Record, load_records, locked, read_record, write_record

# How often a waiting job reads its own record to see whether it was granted a slot.
POLL_PENDING_SECONDS = 0.2
# How often a running job checks for exit, cancellation and its time limit.
POLL_RUNNING_SECONDS = 0.1
# Waiting jobs also look for work now and then, so that a slot freed by a supervisor that
# died is refilled even while no reconciler is running. One of them does it per period (a
# shared time stamp), so the cost does not grow with the square of the queue length.
SAFETY_CHECK_SECONDS = 10.0
STAMP_POLL_SECONDS = (1.0, 3.0)  # jittered, so the waiting jobs do not align
# SIGTERM first, SIGKILL after this (SLURM's KillWait, shorter: this is a laptop).
KILL_WAIT_SECONDS = 10.0


def main(argv: list[str] | None = None) -> int:
    """Supervise one job from its grant to its final record."""
    state_dir_arg, job_id = argv if argv is not None else sys.argv[1:]
    state_dir = Path(state_dir_arg)
    with locked(state_dir):
        rec = read_record(state_dir, job_id)
        if rec is None or rec.supervisor != process_identity(os.getpid()):
            return 0  # the submitter died before recording the job: it was never submitted
        rec.booted = True
        write_record(state_dir, rec)
    if _wait_for_grant(state_dir, job_id):
        _run(state_dir, job_id)
    return 0


def _wait_for_grant(state_dir: Path, job_id: str) -> bool:
    """Block until the job leaves PENDING. False when there is nothing left to do."""
    next_stamp_poll = time.monotonic() + random.uniform(*STAMP_POLL_SECONDS)
    while True:
        rec = read_record(state_dir, job_id)
        if rec is None:
            return False
        if rec.state != PENDING:
            # Granted, or granted and cancelled at once: then `_run` still frees the slot.
            return rec.state == RUNNING or rec.active
        if time.monotonic() >= next_stamp_poll:
            _safety_check(state_dir)
            next_stamp_poll = time.monotonic() + random.uniform(*STAMP_POLL_SECONDS)
        time.sleep(POLL_PENDING_SECONDS)


def _safety_check(state_dir: Path) -> None:
    """Run a pass if one is due and needed: a dead supervisor, or a free slot left unfilled."""
    stamp = state_dir / "last_check"
    try:
        if time.time() - stamp.stat().st_mtime < SAFETY_CHECK_SECONDS:
            return
    except FileNotFoundError:
        pass
    stamp.touch()
    if needs_pass(load_records(state_dir)):
        schedule(state_dir)


def _run(state_dir: Path, job_id: str) -> None:
    with locked(state_dir):
        rec = read_record(state_dir, job_id)
        if rec is None:
            return
        if rec.state != RUNNING:  # cancelled between the grant and now
            if rec.active:
                _finish_locked(state_dir, rec, None, timed_out=False)
            return
        try:
            job = _launch(rec)
        except OSError as exc:
            rec.reason = f"launch failed: {exc}"
            _finish_locked(state_dir, rec, None, timed_out=False, failed=True)
            return
        # Recorded under the lock, so a concurrent cancel always finds the process to signal.
        rec.process = process_identity(job.pid) or [job.pid, -1]
        write_record(state_dir, rec)
        _open_gate(job)
    timed_out = _watch(state_dir, rec, job)
    with locked(state_dir):
        returncode = job.wait()  # reap only now: until here the group id could not be reused
        rec = read_record(state_dir, job_id) or rec
        _finish_locked(state_dir, rec, returncode, timed_out=timed_out)


# The job waits for one line on its stdin before it execs the script, so that it never runs
# unrecorded: a supervisor that dies first closes the pipe and the job exits untouched.
_GATE = 'read -r _ || exit 1; exec bash "$0" </dev/null'


def _launch(rec: Record) -> subprocess.Popen[bytes]:
    """Start `bash SCRIPT` (behind the gate) as the leader of a new process group."""
    stdout = Path(rec.stdout)
    stderr = Path(rec.stderr) if rec.stderr and rec.stderr != rec.stdout else None
    mode = "ab" if rec.open_mode == "append" else "wb"
    env = dict(os.environ, SLURM_JOB_ID=rec.job_id, SLURM_JOB_NAME=rec.name)
    with ExitStack() as files:
        stdout.parent.mkdir(parents=True, exist_ok=True)
        out = files.enter_context(open(stdout, mode))
        err: int | IO[bytes] = subprocess.STDOUT
        if stderr is not None:
            stderr.parent.mkdir(parents=True, exist_ok=True)
            err = files.enter_context(open(stderr, mode))
        return subprocess.Popen(
            ["bash", "-c", _GATE, rec.batch_script],
            cwd=rec.workdir,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _open_gate(job: subprocess.Popen[bytes]) -> None:
    assert job.stdin is not None
    try:
        job.stdin.write(b"go\n")
        job.stdin.close()
    except OSError:
        pass  # the job is gone already; `_watch` sees it exit


def _watch(state_dir: Path, rec: Record, job: subprocess.Popen[bytes]) -> bool:
    """Wait for the script to exit, enforcing cancellation and the time limit. True on timeout."""
    started = time.monotonic()
    term_sent_at: float | None = None
    kill_sent = False
    timed_out = False
    while not _exited(job):
        now = time.monotonic()
        if term_sent_at is None:
            current = read_record(state_dir, rec.job_id)
            if current is not None and current.state == CANCELLED:
                term_sent_at = now
            elif rec.time_limit is not None and now - started >= rec.time_limit:
                timed_out, term_sent_at = True, now
            if term_sent_at is not None:
                _signal_group(job, signal.SIGTERM)
        elif not kill_sent and now - term_sent_at >= KILL_WAIT_SECONDS:
            _signal_group(job, signal.SIGKILL)
            kill_sent = True
        time.sleep(POLL_RUNNING_SECONDS)
    # The script is done; like SLURM, end whatever it left running in its group.
    _signal_group(job, signal.SIGKILL)
    return timed_out


def _exited(job: subprocess.Popen[bytes]) -> bool:
    if hasattr(os, "waitid"):
        # WNOWAIT leaves the leader unreaped, which keeps its group id ours until we reap it.
        return os.waitid(os.P_PID, job.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return job.poll() is not None


def _signal_group(job: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(job.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _finish_locked(
    state_dir: Path, rec: Record, returncode: int | None, *, timed_out: bool, failed: bool = False
) -> None:
    """Write the final record (a cancel already written wins), free the slot, run a pass."""
    exit_code = None if returncode is None else (returncode if returncode >= 0 else 128 - returncode)
    if rec.state == RUNNING:
        if failed:
            rec.state = FAILED
        elif timed_out:
            rec.state = TIMEOUT
        else:
            rec.state = COMPLETED if returncode == 0 else FAILED
        rec.ended_at = time.time()
    if rec.exit_code is None:
        rec.exit_code = exit_code
    rec.active = False
    write_record(state_dir, rec)
    schedule_locked(state_dir)


if __name__ == "__main__":
    sys.exit(main())
