"""SlurmBackend against the real single-node cluster started by scripts/slurm-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.jobs import COMPLETED, FAILED, PENDING, RUNNING, Job
from reconciler.backends.base import SubmitRequest
from reconciler.backends.slurm.backend import SlurmBackend
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
