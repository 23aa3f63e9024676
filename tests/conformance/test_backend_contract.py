"""The backend contract: what the planner and apply rely on, the same for the local backend and SLURM.

Behaviour only one backend has stays with that backend's tests (tests/integration/test_local_backend.py,
tests/slurm/test_slurm_backend.py).
"""

from __future__ import annotations

import pytest

from reconciler.jobs import (
    CANCELLED,
    COMPLETED,
    DEPENDENCY_NEVER_SATISFIED,
    FAILED,
    NODE_FAIL,
    PENDING,
    RUNNING,
    TIMEOUT,
    Job,
    Snapshot,
)
from reconciler.errors import BackendError, BackendUnavailable

from .conftest import FOREVER, Contract

ENDED = (COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL)


def gate(contract: Contract, name: str) -> tuple[str, str]:
    """A shell line that waits until the test opens the gate, and the command that opens it.

    Holding a job running this way lets a test look at its dependents before it ends, without racing a sleep."""
    path = contract.workdir / f"gate-{name}"
    return f"while [ ! -e {path} ]; do sleep 0.1; done", f"touch {path}"


def open_gate(contract: Contract, name: str) -> None:
    (contract.workdir / f"gate-{name}").touch()


def test_submit_runs_to_completed_with_tag_and_stdout(contract: Contract) -> None:
    job_id = contract.submit("finetune/r8", 'echo "hello $SLURM_JOB_ID"; echo oops >&2')
    job = contract.wait_state(job_id, *ENDED)
    assert (job.state, job.exit_code, job.tag) == (COMPLETED, 0, contract.tag_prefix + "finetune/r8")
    assert job.failure_class is None and not job.live
    assert job.submitted_at is not None and job.started_at is not None and job.ended_at is not None
    assert job.submitted_at <= job.started_at <= job.ended_at
    # The --output directory did not exist: submit made it. stderr joins stdout, as in sbatch.
    assert contract.stdout(job_id) == f"hello {job_id}\noops\n"


def test_nonzero_exit_is_failed_with_its_exit_code(contract: Contract) -> None:
    job_id = contract.submit("finetune/bad", "exit 3")
    job = contract.wait_state(job_id, *ENDED)
    assert (job.state, job.exit_code, job.failure_class, job.live) == (FAILED, 3, "other", False)


def test_afterok_chain_waits_then_runs_in_order(contract: Contract) -> None:
    trace = contract.workdir / "trace"
    wait_line, _ = gate(contract, "a")
    first = contract.submit("finetune/a", f"echo start-a >> {trace}; {wait_line}; echo end-a >> {trace}")
    second = contract.submit("eval/b", f"echo b >> {trace}", depends_on=(first,))
    third = contract.submit("eval/c", f"echo c >> {trace}", depends_on=(first, second))

    waiting = contract.backend.query(contract.tag_prefix, [])  # by tag alone: all three are live
    assert {first, second, third} <= set(waiting.jobs)
    for job_id, deps in ((second, (first,)), (third, (first, second))):
        job = waiting.jobs[job_id]
        assert (job.state, job.reason, job.depends_on, job.live) == (PENDING, "Dependency", deps, True)

    open_gate(contract, "a")
    contract.wait_state(third, *ENDED)
    final = contract.backend.query(contract.tag_prefix, [first, second, third]).jobs
    assert [final[j].state for j in (first, second, third)] == [COMPLETED] * 3
    assert trace.read_text().split() == ["start-a", "end-a", "b", "c"]
    for before, after in ((first, second), (second, third)):
        ended, started = final[before].ended_at, final[after].started_at
        assert ended is not None and started is not None and ended <= started


def test_afterok_on_an_already_completed_job_runs(contract: Contract) -> None:
    first = contract.submit("finetune/done", "true")
    contract.wait_state(first, *ENDED)
    second = contract.submit("eval/after", "echo ran", depends_on=(first,))
    assert contract.wait_state(second, *ENDED).state == COMPLETED
    assert contract.stdout(second) == "ran\n"


def test_dependency_on_an_unknown_job_never_pends_forever(contract: Contract) -> None:
    """The backends differ here, and both are safe: the local backend refuses the submission for good;
    SLURM 22.05 (run, not read) drops a dependency on a job it does not know and runs the job."""
    try:
        job_id = contract.submit("eval/orphan", "echo ran", depends_on=("99999999",))
    except BackendError as refused:  # permanent (BackendUnavailable, "try again", would fail the test)
        assert "dependency" in str(refused).lower()
        assert contract.backend.query(contract.tag_prefix, []).jobs == {}
        return
    assert contract.wait_state(job_id, *ENDED).state == COMPLETED
    assert contract.stdout(job_id) == "ran\n"


def test_dependency_never_satisfied_pends_until_released_or_cancelled(contract: Contract) -> None:
    marker = contract.workdir / "cancelled-ran"
    failing = contract.submit("finetune/bad", "exit 1")
    released = contract.submit("eval/released", "echo ran", depends_on=(failing,))
    cancelled = contract.submit("eval/cancelled", f"touch {marker}", depends_on=(failing,))
    ids = [failing, released, cancelled]

    def blocked() -> Snapshot | None:
        snap = contract.backend.query(contract.tag_prefix, ids)
        both = [snap.jobs.get(released), snap.jobs.get(cancelled)]
        return snap if all(j is not None and j.reason == DEPENDENCY_NEVER_SATISFIED for j in both) else None

    snap = contract.wait("DependencyNeverSatisfied", blocked)
    assert snap.jobs[failing].state == FAILED
    for _ in range(3):  # it stays that way: nothing resolves it but a release or a cancel
        job = contract.backend.query(contract.tag_prefix, ids).jobs[released]
        assert (job.state, job.reason, job.live) == (PENDING, DEPENDENCY_NEVER_SATISFIED, True)

    contract.backend.release(released)
    job = contract.wait_state(released, *ENDED)
    assert (job.state, job.exit_code) == (COMPLETED, 0)
    assert contract.stdout(released) == "ran\n"

    contract.backend.cancel([cancelled])
    job = contract.wait_state(cancelled, *ENDED)
    assert (job.state, job.failure_class, job.live, job.started_at) == (CANCELLED, "cancelled", False, None)
    assert job.ended_at is not None
    assert not marker.exists()


def test_release_starts_a_dependent_before_its_dependency_ends(contract: Contract) -> None:
    slow = contract.submit("finetune/slow", FOREVER)
    quick = contract.submit("eval/quick", "true", depends_on=(slow,))
    contract.wait_state(slow, RUNNING)
    assert contract.job(quick).reason == "Dependency"  # type: ignore[union-attr]
    contract.backend.release(quick)
    job = contract.wait_state(quick, *ENDED)
    assert (job.state, job.depends_on) == (COMPLETED, ())
    assert contract.job(slow).state == RUNNING  # type: ignore[union-attr]


def test_cancel_ends_a_running_job_and_is_idempotent(contract: Contract) -> None:
    began, finished = contract.workdir / "began", contract.workdir / "finished"
    job_id = contract.submit("finetune/long", f"touch {began}; sleep 300; touch {finished}")
    contract.wait("the job to begin", lambda: True if began.exists() else None)
    contract.backend.cancel([job_id])
    job = contract.wait_state(job_id, *ENDED)
    assert (job.state, job.failure_class, job.live) == (CANCELLED, "cancelled", False)
    assert job.started_at is not None and job.ended_at is not None and job.started_at <= job.ended_at
    contract.backend.cancel([job_id])  # already ended: no error, nothing changes
    contract.backend.cancel([])  # nothing to cancel: no error
    assert contract.job(job_id).state == CANCELLED  # type: ignore[union-attr]
    assert not finished.exists()


def test_query_by_tag_prefix_plus_asked_ids(contract: Contract) -> None:
    # Submitted first and waited for: on a busy cluster it would queue behind the live jobs below.
    ended = contract.submit("exp2/eval/done", "true")
    contract.wait_state(ended, *ENDED)
    finetune = contract.submit("exp1/finetune/r8", FOREVER)
    evaluation = contract.submit("exp1/eval/r8/task/epoch0", FOREVER)
    other = contract.submit("exp2/finetune/r8", FOREVER)
    prefix = contract.tag_prefix

    assert set(contract.backend.query(prefix + "exp1/", []).jobs) == {finetune, evaluation}
    snap = contract.backend.query(prefix + "exp1/eval/", [other, ended, "99999999"])
    assert set(snap.jobs) == {evaluation, other, ended}
    assert snap.missing == frozenset({"99999999"})
    assert all(snap.jobs[j].live for j in (evaluation, other))
    assert (snap.jobs[ended].state, snap.jobs[ended].tag) == (COMPLETED, prefix + "exp2/eval/done")
    assert [j.job_id for j in snap.by_tag(prefix + "exp2/finetune/r8")] == [other]


def test_time_limit_ends_a_job_with_timeout(contract: Contract) -> None:
    began, finished = contract.workdir / "began", contract.workdir / "finished"
    # SLURM counts in minutes: "0:01" is one second here, rounded up to its one-minute minimum there.
    job_id = contract.submit("finetune/long", f"touch {began}; sleep 300; touch {finished}", directives=("--time=0:01",))
    job = contract.wait_state(job_id, *ENDED, timeout=240)
    assert (job.state, job.failure_class, job.live) == (TIMEOUT, "timeout", False)
    # It ran, and was stopped before its end (an order, not a duration).
    assert began.exists() and not finished.exists()
    assert job.started_at is not None and job.ended_at is not None and job.started_at <= job.ended_at


def test_held_job_is_live_and_pending_until_cancelled(contract: Contract) -> None:
    if contract.hold is None:
        pytest.skip(f"the {contract.name} backend has no way to hold a job")
    marker = contract.workdir / "held-ran"
    blocker = contract.submit("finetune/blocker", FOREVER)
    held = contract.submit("eval/held", f"touch {marker}", depends_on=(blocker,))
    contract.hold(held)
    contract.backend.release(held)  # drops the dependency; the hold stays
    job = contract.job(held)
    assert job is not None and (job.state, job.live) == (PENDING, True)
    assert held in contract.backend.query(contract.tag_prefix, []).jobs  # counted as live: never resubmitted
    contract.backend.cancel([held])
    assert contract.wait_state(held, *ENDED).state == CANCELLED
    assert not marker.exists()


def test_scheduler_that_cannot_answer_is_unavailable_never_empty(contract: Contract) -> None:
    job_id = contract.submit("finetune/live", FOREVER)
    assert contract.job(job_id) is not None
    with contract.unavailable(), pytest.raises(BackendUnavailable):
        contract.backend.query(contract.tag_prefix, [job_id])
    job: Job | None = contract.job(job_id)  # the scheduler answers again: the job was there all along
    assert job is not None and job.live
