"""SlurmBackend against the real single-node cluster started by scripts/slurm-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.backends.base import (
    CANCELLED,
    COMPLETED,
    DEPENDENCY_NEVER_SATISFIED,
    FAILED,
    PENDING,
    RUNNING,
    Job,
    Snapshot,
    SubmitRequest,
)
from reconciler.backends.slurm.backend import SlurmBackend
from reconciler.backends.slurm.commands import CALLS
from reconciler.errors import BackendUnavailable

from .conftest import SCRIPTS, CommandLog, job_script, wait_until, write_executable

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def submit(backend: SlurmBackend, tmp_path: Path, tag: str, body: str, depends_on: tuple[str, ...] = ()) -> str:
    name = tag.rsplit("/", 1)[-1]
    script = job_script(tmp_path, f"{name}.sh", body)
    request = SubmitRequest(
        script=script, name=name, tag=tag, workdir=tmp_path, depends_on=depends_on, stdout=tmp_path / "logs" / "%j.out"
    )
    return backend.submit(request)


def state_of(backend: SlurmBackend, prefix: str, job_id: str) -> Job | None:
    return backend.query(prefix, [job_id]).jobs.get(job_id)


def wait_state(backend: SlurmBackend, prefix: str, job_id: str, state: str, timeout: float = 60.0) -> Job:
    def probe() -> Job | None:
        job = state_of(backend, prefix, job_id)
        return job if job is not None and job.state == state else None

    return wait_until(f"job {job_id} to be {state}", probe, timeout)


def test_submit_runs_to_completed_with_tag(backend: SlurmBackend, tmp_path: Path, tag_prefix: str) -> None:
    tag = tag_prefix + "finetune/r8"
    job_id = submit(backend, tmp_path, tag, "echo hello from $SLURM_JOB_ID")
    assert job_id.isdigit()
    live = backend.query(tag_prefix, []).jobs.get(job_id)
    assert live is None or (live.name == "r8" and live.tag == tag)  # None: already ended

    job = wait_state(backend, tag_prefix, job_id, COMPLETED)
    # Not the name: sacct calls a just-ended short job `allocation` for a few seconds.
    assert job.tag == tag
    assert job.exit_code == 0
    assert job.ended_at is not None and job.started_at is not None
    # The --output directory did not exist: submit created it, or the job would have failed.
    assert (tmp_path / "logs" / f"{job_id}.out").read_text().strip() == f"hello from {job_id}"


def test_failed_job_has_exit_code(backend: SlurmBackend, tmp_path: Path, tag_prefix: str) -> None:
    job_id = submit(backend, tmp_path, tag_prefix + "finetune/bad", "exit 3")
    job = wait_state(backend, tag_prefix, job_id, FAILED)
    assert job.exit_code == 3
    assert job.failure_class == "other"


def test_afterok_chain(backend: SlurmBackend, tmp_path: Path, tag_prefix: str, cleanup_jobs: list[str]) -> None:
    first = submit(backend, tmp_path, tag_prefix + "finetune/a", "sleep 2")
    second = submit(backend, tmp_path, tag_prefix + "eval/a", "true", depends_on=(first,))
    third = submit(backend, tmp_path, tag_prefix + "eval/b", "true", depends_on=(first, second))
    cleanup_jobs += [first, second, third]

    waiting = backend.query(tag_prefix, [])  # by tag alone: all three are live
    assert {first, second, third} <= set(waiting.jobs)
    assert waiting.jobs[second].state == PENDING
    assert waiting.jobs[second].depends_on == (first,)
    assert waiting.jobs[third].depends_on == (first, second)

    done = wait_state(backend, tag_prefix, third, COMPLETED, timeout=90)
    final = backend.query(tag_prefix, [first, second, third])
    assert all(final.jobs[j].state == COMPLETED for j in (first, second, third))
    ends = {j: final.jobs[j].ended_at for j in (first, second)}
    assert final.jobs[second].started_at is not None and ends[first] is not None
    assert final.jobs[second].started_at >= ends[first]
    assert done.started_at is not None and ends[second] is not None and done.started_at >= ends[second]


def test_failed_dependency_never_satisfied_then_release_and_cancel(
    backend: SlurmBackend, tmp_path: Path, tag_prefix: str, cleanup_jobs: list[str]
) -> None:
    failing = submit(backend, tmp_path, tag_prefix + "finetune/bad", "exit 1")
    released = submit(backend, tmp_path, tag_prefix + "eval/released", "echo ran", depends_on=(failing,))
    cancelled = submit(backend, tmp_path, tag_prefix + "eval/cancelled", "echo ran", depends_on=(failing,))
    cleanup_jobs += [failing, released, cancelled]

    def blocked() -> Snapshot | None:
        snap = backend.query(tag_prefix, [failing, released, cancelled])
        both = [snap.jobs.get(released), snap.jobs.get(cancelled)]
        return snap if all(j is not None and j.reason == DEPENDENCY_NEVER_SATISFIED for j in both) else None

    snap = wait_until("DependencyNeverSatisfied", blocked)
    assert snap.jobs[failing].state == FAILED
    assert snap.jobs[released].state == PENDING  # SLURM leaves it pending forever
    assert snap.jobs[released].live

    backend.release(released)
    job = wait_state(backend, tag_prefix, released, COMPLETED)
    assert job.exit_code == 0

    backend.cancel([cancelled])
    assert wait_state(backend, tag_prefix, cancelled, CANCELLED).live is False


def test_cancel_is_idempotent(backend: SlurmBackend, tmp_path: Path, tag_prefix: str, cleanup_jobs: list[str]) -> None:
    job_id = submit(backend, tmp_path, tag_prefix + "finetune/long", "sleep 300")
    cleanup_jobs.append(job_id)
    wait_until("job to start or queue", lambda: state_of(backend, tag_prefix, job_id))
    backend.cancel([job_id])
    job = wait_state(backend, tag_prefix, job_id, CANCELLED)
    assert job.failure_class == "cancelled"
    backend.cancel([job_id])  # already ended: no error
    before = CALLS["scancel"]
    backend.cancel([])
    assert CALLS["scancel"] == before  # nothing to cancel: no command


def test_query_makes_one_squeue_call(
    backend: SlurmBackend, tmp_path: Path, tag_prefix: str, logging_path: CommandLog, cleanup_jobs: list[str]
) -> None:
    finished = [submit(backend, tmp_path, f"{tag_prefix}eval/{i}", "true") for i in range(3)]
    live = [submit(backend, tmp_path, f"{tag_prefix}finetune/{i}", "sleep 120") for i in range(3)]
    cleanup_jobs += live
    for job_id in finished:
        wait_state(backend, tag_prefix, job_id, COMPLETED)

    logging_path.clear()
    snap = backend.query(tag_prefix, [*finished, *live, "99999999"])
    assert logging_path.count("squeue") == 1
    assert logging_path.count("sacct") == 1  # one batched call for every id squeue lacks
    assert set(snap.jobs) == {*finished, *live}
    assert all(snap.jobs[j].state == COMPLETED for j in finished)
    assert all(snap.jobs[j].state in (PENDING, RUNNING) for j in live)
    assert snap.missing == {"99999999"}

    logging_path.clear()
    snap = backend.query(tag_prefix, live)  # all live: squeue alone answers
    assert set(snap.jobs) == set(live)
    assert [line.split()[0] for line in logging_path.lines()] == ["squeue"]


def test_query_transient_squeue_error_is_unavailable(
    backend: SlurmBackend, tmp_path: Path, tag_prefix: str, logging_path: CommandLog, cleanup_jobs: list[str]
) -> None:
    """squeue failing is "cannot tell", never "no jobs": no sacct answer stands in for it."""
    job_id = submit(backend, tmp_path, tag_prefix + "finetune/a", "sleep 60")
    cleanup_jobs.append(job_id)
    real_squeue = logging_path.path.parent / "logging-bin" / "squeue"
    saved = real_squeue.read_text()
    write_executable(
        real_squeue,
        f'#!/bin/bash\necho "squeue $*" >> "{logging_path.path}"\n'
        'echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2\nexit 1\n',
    )
    logging_path.clear()
    with pytest.raises(BackendUnavailable, match="Socket timed out"):
        backend.query(tag_prefix, [job_id])
    assert logging_path.count("squeue") == backend.policy.attempts
    assert logging_path.count("sacct") == 0

    write_executable(real_squeue, saved)
    assert backend.query(tag_prefix, [job_id]).jobs[job_id].live


def test_sbatch_answer_lost_adopts_the_submitted_job(
    backend: SlurmBackend, tmp_path: Path, tag_prefix: str, logging_path: CommandLog, cleanup_jobs: list[str]
) -> None:
    """sbatch reaches the controller but its answer is lost: the retry finds the job by tag."""
    real = _real("sbatch")
    write_executable(
        logging_path.path.parent / "logging-bin" / "sbatch",
        f'#!/bin/bash\necho "sbatch $*" >> "{logging_path.path}"\n"{real}" "$@" >/dev/null\n'
        'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2\nexit 1\n',
    )
    tag = tag_prefix + "finetune/lost"
    job_id = submit(backend, tmp_path, tag, "sleep 60")
    cleanup_jobs.append(job_id)
    assert logging_path.count("sbatch") == 1  # not resubmitted
    assert [job.job_id for job in backend.query(tag_prefix, []).by_tag(tag)] == [job_id]


def test_sbatch_answer_lost_after_the_job_already_ended_adopts_it(
    backend: SlurmBackend, tmp_path: Path, tag_prefix: str, logging_path: CommandLog
) -> None:
    """A job shorter than sbatch's lost answer: it has left the queue when the retry looks, and is adopted anyway."""
    real = _real("sbatch")
    write_executable(
        logging_path.path.parent / "logging-bin" / "sbatch",
        f'#!/bin/bash\necho "sbatch $*" >> "{logging_path.path}"\nid=$("{real}" "$@")\n'
        'while squeue --noheader --format=%i --jobs="${id%%;*}" 2>/dev/null | grep -q .; do sleep 0.2; done\n'
        'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2\nexit 1\n',
    )
    tag = tag_prefix + "eval/short"
    job_id = submit(backend, tmp_path, tag, "true")
    assert logging_path.count("sbatch") == 1  # not resubmitted
    assert wait_state(backend, tag_prefix, job_id, COMPLETED).tag == tag


def _real(name: str) -> str:
    for directory in ("/usr/bin", "/usr/local/bin", "/usr/sbin"):
        if os.access(f"{directory}/{name}", os.X_OK):
            return f"{directory}/{name}"
    pytest.skip(f"no real {name} binary found")


@pytest.mark.skipif(os.geteuid() != 0, reason="stopping slurmdbd needs root (scripts/slurm-down)")
def test_accounting_down_falls_back_to_scontrol(backend: SlurmBackend, tmp_path: Path, tag_prefix: str) -> None:
    ok = submit(backend, tmp_path, tag_prefix + "eval/ok", "true")
    bad = submit(backend, tmp_path, tag_prefix + "eval/bad", "exit 4")
    wait_state(backend, tag_prefix, ok, COMPLETED)
    wait_state(backend, tag_prefix, bad, FAILED)

    subprocess.run([str(SCRIPTS / "slurm-down"), "--only", "slurmdbd"], check=True, capture_output=True)
    try:
        snap = backend.query(tag_prefix, [ok, bad, "99999999"])
        assert backend.last_query_sources == ("squeue", "sacct", "scontrol")
        assert snap.jobs[ok].state == COMPLETED and snap.jobs[ok].exit_code == 0
        assert snap.jobs[ok].tag == tag_prefix + "eval/ok"
        assert snap.jobs[bad].state == FAILED and snap.jobs[bad].exit_code == 4
        assert snap.missing == {"99999999"}
        one = backend.query(tag_prefix, [bad])  # a single id: scontrol is asked for it alone
        assert one.jobs[bad].state == FAILED
    finally:
        subprocess.run([str(SCRIPTS / "slurm-up")], check=True, capture_output=True)
