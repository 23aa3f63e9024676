"""The local backend as a user sees it: real detached processes running tiny bash scripts."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.jobs import CANCELLED, COMPLETED, FAILED, NODE_FAIL, PENDING, RUNNING, Job
from reconciler.backends.base import SubmitRequest
from reconciler.backends.local.backend import LocalBackend, read_directives, stdout_path
from reconciler.backends.local.store import load_records, record_path
from reconciler.timefmt import format_time_limit, parse_time_limit
from reconciler.errors import BackendError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose leftover jobs are cancelled after the test, so no process outlives it."""
    state = tmp_path / "state"
    yield state
    backend = LocalBackend(state)
    live = [job_id for job_id, rec in load_records(state).items() if rec.state in (PENDING, RUNNING)]
    backend.cancel(live)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(r.active for r in load_records(state).values()):
        time.sleep(0.05)
    # Every supervisor frees its slot by itself, without a query to repair it.
    assert not [r.job_id for r in load_records(state).values() if r.active]


@pytest.fixture
def backend(state_dir: Path) -> LocalBackend:
    return LocalBackend(state_dir, max_concurrent=4)


def script(tmp_path: Path, name: str, body: str, directives: tuple[str, ...] = ()) -> Path:
    """A job script (written 0644: not executable, which must not matter)."""
    path = tmp_path / "scripts" / f"{name}.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "set -e", body, ""]
    path.write_text("\n".join(lines))
    return path


def submit(backend: LocalBackend, path: Path, tmp_path: Path, tag: str = "t/", **kw: object) -> str:
    request = SubmitRequest(script=path, name=path.stem, tag=tag, workdir=tmp_path / "work", **kw)  # type: ignore[arg-type]
    return backend.submit(request)


def wait_for(backend: LocalBackend, job_id: str, states: set[str], timeout: float = 10.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = backend.query("", [job_id]).jobs[job_id]
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} ({job.reason}) after {timeout}s, wanted {states}")
        time.sleep(0.05)


def wait_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never written")
        time.sleep(0.02)
    return path.read_text().strip()


def wait_file_count(directory: Path, pattern: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(directory.glob(pattern))) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} {pattern} in {directory}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Running (a zombie left for an init that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def gone_soon(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_submit_runs_to_completed_with_stdout_at_job_id_path(backend: LocalBackend, tmp_path: Path) -> None:
    path = script(tmp_path, "hello", 'echo "hello $SLURM_JOB_ID"; echo oops >&2', ("--output=logs/out-%x-%j.txt",))
    job_id = submit(backend, path, tmp_path)
    job = wait_for(backend, job_id, {COMPLETED, FAILED})
    assert (job.state, job.exit_code, job.name) == (COMPLETED, 0, "hello")
    out = tmp_path / "work" / "logs" / f"out-hello-{job_id}.txt"
    assert stdout_path(backend.state_dir, job_id) == backend.stdout_path(job_id) == out
    assert out.read_text() == f"hello {job_id}\noops\n"  # stderr joins stdout, as in sbatch
    assert job.submitted_at is not None and job.started_at is not None and job.ended_at is not None
    assert job.submitted_at <= job.started_at <= job.ended_at


def test_request_stdout_overrides_script_and_missing_script_is_an_error(backend: LocalBackend, tmp_path: Path) -> None:
    path = script(tmp_path, "over", "echo hi", ("--output=ignored-%j.out", "--job-name=from-script"))
    job_id = submit(backend, path, tmp_path, stdout=tmp_path / "mine" / "job-%j.log")
    assert wait_for(backend, job_id, {COMPLETED}).name == "over"
    assert (tmp_path / "mine" / f"job-{job_id}.log").read_text() == "hi\n"
    assert not (tmp_path / "work" / f"ignored-{job_id}.out").exists()
    with pytest.raises(BackendError, match="script not found"):
        submit(backend, tmp_path / "nope.sh", tmp_path)
    with pytest.raises(BackendError, match="dependency"):
        submit(backend, path, tmp_path, depends_on=("424242",))






def test_cancel_kills_a_running_job_with_its_children(backend: LocalBackend, tmp_path: Path) -> None:
    child_pid, main_pid = tmp_path / "child.pid", tmp_path / "main.pid"
    body = f"sleep 30 & echo $! > {child_pid}; echo $$ > {main_pid}; wait"
    job_id = submit(backend, script(tmp_path, "tree", body), tmp_path)
    child, main = int(wait_file(child_pid)), int(wait_file(main_pid))
    assert alive(child) and alive(main)
    backend.cancel([job_id])
    assert wait_for(backend, job_id, {CANCELLED}).state == CANCELLED
    assert gone_soon(child) and gone_soon(main)
    backend.cancel([job_id])  # cancelling a finished job changes nothing
    assert backend.query("", [job_id]).jobs[job_id].state == CANCELLED


def test_cancel_pending_job_and_pending_reasons(state_dir: Path, tmp_path: Path) -> None:
    backend = LocalBackend(state_dir, max_concurrent=1)
    blocker = submit(backend, script(tmp_path, "blocker", "sleep 30"), tmp_path)
    marker = tmp_path / "ran"
    waiting = [submit(backend, script(tmp_path, f"w{i}", f"touch {marker}"), tmp_path) for i in range(2)]
    wait_for(backend, blocker, {RUNNING})
    jobs = backend.query("", waiting).jobs
    assert [(jobs[i].state, jobs[i].reason) for i in waiting] == [(PENDING, "Resources"), (PENDING, "Priority")]
    backend.cancel(waiting)
    backend.cancel([blocker])
    for job_id in waiting:
        assert wait_for(backend, job_id, {CANCELLED}).started_at is None
    wait_for(backend, blocker, {CANCELLED})
    time.sleep(0.3)
    assert not marker.exists()
    # Cancelled at once after the grant: the slot is freed all the same.
    quick = submit(backend, script(tmp_path, "quick", "true"), tmp_path)
    backend.cancel([quick])
    after = submit(backend, script(tmp_path, "after", "true"), tmp_path)
    assert wait_for(backend, after, {COMPLETED}).state == COMPLETED



def test_concurrency_limit_one_never_overlaps_and_starts_fifo(state_dir: Path, tmp_path: Path) -> None:
    backend = LocalBackend(state_dir, max_concurrent=1)
    spans = tmp_path / "spans"
    body = f"s=$(date +%s.%N); sleep 0.2; echo $SLURM_JOB_ID $s $(date +%s.%N) >> {spans}"
    ids = [submit(backend, script(tmp_path, f"j{i}", body), tmp_path) for i in range(3)]
    for job_id in ids:
        wait_for(backend, job_id, {COMPLETED})
    rows = [line.split() for line in spans.read_text().splitlines()]
    assert [row[0] for row in rows] == ids  # FIFO by job id
    for (_, _, end), (_, start, _) in itertools.pairwise(rows):
        assert float(end) <= float(start)


def test_jobs_survive_sigkill_of_the_submitting_process(state_dir: Path, tmp_path: Path) -> None:
    done = tmp_path / "done"
    path = script(tmp_path, "survivor", f"sleep 0.8; echo yes > {done}")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from reconciler.backends.base import SubmitRequest\n"
        "from reconciler.backends.local.backend import LocalBackend\n"
        f"b = LocalBackend(Path({str(state_dir)!r}))\n"
        f"print(b.submit(SubmitRequest(script=Path({str(path)!r}), name='s', tag='t/s', workdir=Path({str(tmp_path)!r}))), flush=True)\n"
        "time.sleep(60)\n"
    )
    submitter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert submitter.stdout is not None
    job_id = submitter.stdout.readline().strip()
    submitter.send_signal(signal.SIGKILL)
    submitter.wait()
    # A fresh backend on the same state dir, as after a reconciler restart.
    job = wait_for(LocalBackend(state_dir), job_id, {COMPLETED, FAILED, NODE_FAIL})
    assert job.state == COMPLETED and done.read_text() == "yes\n"


def test_job_whose_supervisor_is_killed_is_node_fail(backend: LocalBackend, tmp_path: Path) -> None:
    main_pid = tmp_path / "main.pid"
    job_id = submit(backend, script(tmp_path, "orphan", f"echo $$ > {main_pid}; sleep 30"), tmp_path)
    main = int(wait_file(main_pid))
    supervisor = json.loads(record_path(backend.state_dir, job_id).read_text())["supervisor"][0]
    os.kill(supervisor, signal.SIGKILL)
    job = wait_for(backend, job_id, {NODE_FAIL, COMPLETED, FAILED, CANCELLED})
    assert (job.state, job.failure_class) == (NODE_FAIL, "node_failure")
    assert gone_soon(main)  # no orphan left to race a resubmission


def test_new_instance_sees_old_jobs_and_ids_keep_increasing(backend: LocalBackend, tmp_path: Path) -> None:
    first = submit(backend, script(tmp_path, "one", "true"), tmp_path, tag="exp/one")
    before = wait_for(backend, first, {COMPLETED})
    again = LocalBackend(backend.state_dir)
    assert again.query("exp/", []).jobs == {first: before}
    # afterok on a job that already completed: runs at once.
    second = submit(again, script(tmp_path, "two", "true"), tmp_path, depends_on=(first,))
    assert int(second) > int(first)
    assert wait_for(again, second, {COMPLETED}).state == COMPLETED


def test_concurrent_submitters_get_distinct_ids(state_dir: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    path = script(tmp_path, "noop", "true")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from reconciler.backends.base import SubmitRequest\n"
        "from reconciler.backends.local.backend import LocalBackend\n"
        f"b = LocalBackend(Path({str(state_dir)!r}))\n"
        f"Path({str(tmp_path)!r}, 'ready-' + sys.argv[1]).touch()\n"
        f"while not Path({str(go)!r}).exists(): time.sleep(0.01)\n"
        f"req = SubmitRequest(script=Path({str(path)!r}), name='n', tag='t/' + sys.argv[1], workdir=Path({str(tmp_path)!r}))\n"
        "print(' '.join(b.submit(req) for _ in range(4)))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        for i in range(2)
    ]
    wait_file_count(tmp_path, "ready-*", 2)  # a barrier: both interpreters up and waiting
    go.touch()
    ids = [job_id for proc in procs for job_id in proc.communicate(timeout=20)[0].split()]
    assert len(ids) == 8 and len(set(ids)) == 8
    backend = LocalBackend(state_dir)
    assert {j.job_id for j in backend.query("t/", []).jobs.values()} == set(ids)
    for job_id in ids:
        wait_for(backend, job_id, {COMPLETED})



@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("1:30", 90),
        ("01:02:03", 3723),
        ("2-3", 51 * 3600),
        ("1-00:30", 86400 + 1800),
        ("1-02:03:04", 93784),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_slurm_time_formats(text: str, seconds: int | None) -> None:
    assert parse_time_limit(text) == seconds
    if seconds is not None:
        assert parse_time_limit(format_time_limit(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "1:2:3:4", "a", "1-", "-5", "1:x"])
def test_bad_time_limits_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_limit(text)


def test_sbatch_directives_are_read_before_the_first_command() -> None:
    text = "#!/bin/bash\n#SBATCH -J name\n#SBATCH --time 5 # a comment\n\n#SBATCH -ologs/%j.out\necho hi\n#SBATCH --error=late\n"
    directives = read_directives(text)
    assert (directives.job_name, directives.time, directives.output, directives.error) == (
        "name",
        "5",
        "logs/%j.out",
        None,
    )
