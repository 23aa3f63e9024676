"""SlurmBackend against fake SLURM commands: retries, error classes, fallbacks, the tag-based query.

No cluster needed: these run with the unit tests (the real cluster's are in tests/slurm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.jobs import COMPLETED, FAILED, RUNNING
from reconciler.backends.base import SubmitRequest
from reconciler.backends.slurm.backend import SlurmBackend, slurm_available
from reconciler.backends.slurm.commands import RetryPolicy
from reconciler.errors import BackendError, BackendUnavailable, SubmitDeferred

from tests.fake_slurm import FAST_RETRY, calls, fake, squeue_line

TIMED_OUT = "slurm_load_jobs error: Socket timed out on send/recv operation"


def request(tmp_path: Path, tag: str = "exp/finetune/a") -> SubmitRequest:
    return SubmitRequest(script=tmp_path / "job.sh", name="a", tag=tag, workdir=tmp_path)


@pytest.fixture
def backend() -> SlurmBackend:
    return SlurmBackend(FAST_RETRY)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory first on PATH; tests drop fake commands into it."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


# -- query ------------------------------------------------------------------------------


def test_transient_squeue_error_retried_then_unavailable(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "squeue", f'echo "{TIMED_OUT}" >&2\nexit 1')
    with pytest.raises(BackendUnavailable, match="Socket timed out"):
        backend.query("exp/", ["1"])
    assert calls(fake_bin, "squeue") == FAST_RETRY.attempts


def test_transient_squeue_error_then_success(backend: SlurmBackend, fake_bin: Path) -> None:
    count = fake_bin / "count"
    fake(
        fake_bin,
        "squeue",
        f'n=$(( $(< "{count}") + 1 )) 2>/dev/null || n=1\necho $n > "{count}"\n'
        f'if (( n < 3 )); then echo "{TIMED_OUT}" >&2; exit 1; fi\n' + squeue_line("7", "RUNNING", "exp/a"),
    )
    count.write_text("0")
    snap = backend.query("exp/", [])
    assert snap.jobs["7"].state == RUNNING
    assert calls(fake_bin, "squeue") == 3


def test_squeue_timeout_is_unavailable(fake_bin: Path) -> None:
    fake(fake_bin, "squeue", "sleep 5")
    backend = SlurmBackend(RetryPolicy(attempts=2, total_seconds=5, initial_wait=0.01, max_wait=0.01, timeout=0.3))
    with pytest.raises(BackendUnavailable, match="timed out"):
        backend.query("exp/", [])
    assert calls(fake_bin, "squeue") == 2


def test_unknown_squeue_failure_is_unavailable_not_no_jobs(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "squeue", 'echo "squeue: something nobody has seen" >&2\nexit 2')
    with pytest.raises(BackendUnavailable):
        backend.query("exp/", [])


def test_accounting_disabled_falls_back_to_scontrol_without_retrying_sacct(
    backend: SlurmBackend, fake_bin: Path
) -> None:
    fake(fake_bin, "squeue", "true")
    fake(fake_bin, "sacct", 'echo "sacct: error: Slurm accounting storage is disabled" >&2\nexit 1')
    fake(
        fake_bin,
        "scontrol",
        "echo 'JobId=5 JobName=a b UserId=0(0) JobState=COMPLETED Reason=None Dependency=(null) "
        "ExitCode=0:0 SubmitTime=2026-11-22T08:00:00 StartTime=2026-11-22T08:00:01 "
        "EndTime=2026-11-22T08:00:02 Comment=exp/a  StdErr=/x'\n"
        "echo 'JobId=6 JobName=c UserId=0(0) JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0'",
    )
    snap = backend.query("exp/", ["5", "6", "8"])
    assert snap.jobs["5"].state == COMPLETED and snap.jobs["5"].tag == "exp/a"
    assert snap.jobs["6"].state == FAILED and snap.jobs["6"].exit_code == 2
    assert snap.missing == {"8"}
    assert calls(fake_bin, "sacct") == 1
    assert calls(fake_bin, "scontrol") == 1  # several ids: one listing of all jobs
    assert backend.last_query_sources == ("squeue", "sacct", "scontrol")


def test_single_id_unknown_to_scontrol_is_missing(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "squeue", "true")
    fake(fake_bin, "sacct", "true")  # accounting answers, but does not know the id
    fake(fake_bin, "scontrol", 'echo "slurm_load_jobs error: Invalid job id specified" >&2\nexit 1')
    snap = backend.query("exp/", ["9"])
    assert snap.missing == {"9"} and not snap.jobs
    assert (fake_bin / "scontrol.calls").read_text().split() == ["show", "job", "--oneliner", "9"]


def test_stale_accounting_defers_to_the_controller(backend: SlurmBackend, fake_bin: Path) -> None:
    """sacct still says RUNNING (slurmdbd behind) for a job squeue no longer lists."""
    fake(fake_bin, "squeue", "true")
    fields = ["5", "RUNNING", "0:0", "2026-11-22T08:00:00", "2026-11-22T08:00:01", "Unknown", "None", "exp/a", "a"]
    fake(fake_bin, "sacct", "printf '%s\\n' '" + "\x1f".join(fields) + "'")
    fake(fake_bin, "scontrol", "echo 'JobId=5 JobName=a JobState=COMPLETED ExitCode=0:0 Comment=exp/a'")
    assert backend.query("exp/", ["5"]).jobs["5"].state == COMPLETED


def test_scontrol_unavailable_after_sacct_fails_is_unavailable(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "squeue", "true")
    fake(fake_bin, "sacct", 'echo "sacct: error: Problem talking to the database: Connection refused" >&2\nexit 1')
    fake(fake_bin, "scontrol", f'echo "{TIMED_OUT}" >&2\nexit 1')
    with pytest.raises(BackendUnavailable):
        backend.query("exp/", ["5"])


def test_query_filters_by_tag_prefix_and_ids(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(
        fake_bin,
        "squeue",
        "\n".join(
            [
                squeue_line("1", "RUNNING", "exp/a"),
                squeue_line("2", "PENDING", "other/b"),
                squeue_line("3", "PENDING", "(null)"),
                squeue_line("4", "PENDING", "other/asked"),
            ]
        ),
    )
    snap = backend.query("exp/", ["4"])
    assert set(snap.jobs) == {"1", "4"}
    assert calls(fake_bin, "sacct") == 0  # every asked id was live


# -- submit -----------------------------------------------------------------------------


def test_permanent_sbatch_error_is_not_retried(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(
        fake_bin,
        "sbatch",
        'echo "sbatch: error: Batch job submission failed: Invalid account or account/partition '
        'combination specified" >&2\nexit 1',
    )
    fake(fake_bin, "squeue", "true")
    with pytest.raises(BackendError, match="Invalid account"):
        backend.submit(request(tmp_path))
    assert calls(fake_bin, "sbatch") == 1
    assert calls(fake_bin, "squeue") == 0


def test_transient_sbatch_error_searches_before_each_retry(
    backend: SlurmBackend, fake_bin: Path, tmp_path: Path
) -> None:
    fake(fake_bin, "sbatch", 'echo "sbatch: error: Batch job submission failed: Socket timed out" >&2\nexit 1')
    fake(fake_bin, "squeue", squeue_line("3", "RUNNING", "exp/finetune/other"))
    with pytest.raises(BackendUnavailable):
        backend.submit(request(tmp_path))
    assert calls(fake_bin, "sbatch") == FAST_RETRY.attempts
    assert calls(fake_bin, "squeue") == FAST_RETRY.attempts - 1


def test_transient_sbatch_error_adopts_a_live_job_with_the_tag(
    backend: SlurmBackend, fake_bin: Path, tmp_path: Path
) -> None:
    fake(fake_bin, "sbatch", 'echo "sbatch: error: Batch job submission failed: Socket timed out" >&2\nexit 1')
    fake(
        fake_bin,
        "squeue",
        "\n".join([squeue_line("40", "PENDING", "exp/finetune/a"), squeue_line("41", "PENDING", "exp/finetune/a")]),
    )
    assert backend.submit(request(tmp_path)) == "41"  # the newest live job with the tag
    assert calls(fake_bin, "sbatch") == 1


def test_unanswerable_search_never_resubmits(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(fake_bin, "sbatch", 'echo "sbatch: error: Batch job submission failed: Socket timed out" >&2\nexit 1')
    fake(fake_bin, "squeue", f'echo "{TIMED_OUT}" >&2\nexit 1')
    with pytest.raises(BackendUnavailable):
        backend.submit(request(tmp_path))
    assert calls(fake_bin, "sbatch") == 1


def test_sbatch_wrapper_output(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(fake_bin, "sbatch", 'echo "Welcome to Example HPC"\necho "Charged to lab-1"\necho "812;cluster1"')
    assert backend.submit(request(tmp_path)) == "812"


def test_sbatch_without_id_adopts_by_tag(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(fake_bin, "sbatch", 'echo "Thanks! Your job is queued."')
    fake(fake_bin, "squeue", squeue_line("77", "PENDING", "exp/finetune/a"))
    assert backend.submit(request(tmp_path)) == "77"


def test_sbatch_without_id_and_no_job_is_an_error(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(fake_bin, "sbatch", 'echo "Thanks! Your job is queued."')
    fake(fake_bin, "squeue", "true")
    with pytest.raises(BackendError, match="no job id"):
        backend.submit(request(tmp_path))


def test_submit_creates_the_output_directory(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(fake_bin, "sbatch", "echo 5")
    req = SubmitRequest(
        script=tmp_path / "j.sh", name="a", tag="exp/a", workdir=tmp_path, stdout=Path("logs/deep/%j.out")
    )
    backend.submit(req)
    assert (tmp_path / "logs" / "deep").is_dir()  # relative --output is under --chdir


# -- cancel, release, availability, counting ---------------------------------------------


def test_cancel_and_release_argv(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "scancel", "true")
    fake(fake_bin, "scontrol", "true")
    backend.cancel([])  # nothing to cancel: no command at all
    backend.cancel(["12", "3", "12"])
    backend.release("4")
    assert (fake_bin / "scancel.calls").read_text() == "3 12\n"
    assert (fake_bin / "scontrol.calls").read_text() == "update JobId=4 Dependency=\n"


def test_release_of_finished_job_is_permanent(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "scontrol", 'echo "Job has already finished for job 4" >&2\nexit 1')
    with pytest.raises(BackendError):
        backend.release("4")
    assert calls(fake_bin, "scontrol") == 1


def test_slurm_available(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin))
    assert slurm_available() is False  # no sbatch at all
    fake(fake_bin, "sbatch", "exit 0")
    fake(fake_bin, "scontrol", 'echo "Slurmctld(primary) at vm is DOWN"\nexit 1')
    assert slurm_available() is False
    fake(fake_bin, "scontrol", 'echo "Slurmctld(primary) at vm is UP"')
    assert slurm_available() is True


def test_missing_command_is_a_backend_error(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_bin))
    with pytest.raises(BackendError, match="not found"):
        SlurmBackend(FAST_RETRY).query("exp/", [])


def test_calls_are_counted(backend: SlurmBackend, fake_bin: Path) -> None:
    fake(fake_bin, "squeue", "true")
    before = backend.calls["squeue"]
    backend.query("exp/", [])
    assert backend.calls["squeue"] == before + 1


# -- QoS caps on queued jobs: a deferral, not an error --------------------------------------

POLICY = "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, " \
    "user's size and/or time limits)"


@pytest.mark.parametrize(
    ("named", "limit"),
    [("QOSMaxSubmitJobPerUserLimit", "QOSMaxSubmitJobPerUserLimit"), ("AssocGrpSubmitJobsLimit", "AssocGrpSubmitJobsLimit"),
     (None, "")],
)
def test_submit_cap_is_deferred_not_retried(
    backend: SlurmBackend, fake_bin: Path, tmp_path: Path, named: str | None, limit: str
) -> None:
    first = f'echo "sbatch: error: {named}" >&2\n' if named else ""
    fake(fake_bin, "sbatch", f'{first}echo "{POLICY}" >&2\nexit 1')
    fake(fake_bin, "squeue", "true")
    with pytest.raises(SubmitDeferred) as caught:
        backend.submit(request(tmp_path))
    assert caught.value.limit == limit
    assert calls(fake_bin, "sbatch") == 1  # asking again at once would be refused again
    assert calls(fake_bin, "squeue") == 0


def test_policy_limit_no_wait_lifts_stays_permanent(backend: SlurmBackend, fake_bin: Path, tmp_path: Path) -> None:
    fake(fake_bin, "sbatch", f'echo "sbatch: error: QOSMaxWallDurationPerJobLimit" >&2\necho "{POLICY}" >&2\nexit 1')
    with pytest.raises(BackendError, match="accounting/QOS policy") as caught:
        backend.submit(request(tmp_path))
    assert not isinstance(caught.value, SubmitDeferred)
    assert calls(fake_bin, "sbatch") == 1


def test_apply_defers_units_refused_by_a_submit_cap(fake_bin: Path, tmp_path: Path) -> None:
    """A pass that hits the cap: the refused unit stays missing, the rest of the pass makes no
    further sbatch calls, nothing is an error or counts against a budget; a later pass submits."""
    from reconciler.apply.apply import ApplyOptions
    from reconciler.journal import Journal
    from reconciler.engine.loop import load_desired, run_pass
    from reconciler.apply.prepare import prepare_unit
    from reconciler.plan.planner import Policy
    from reconciler.spec.units import tag_for
    from tests.integration.demo_env import copy_demo

    exp = copy_demo(tmp_path / "demo")
    desired = load_desired(exp)
    accept = fake_bin / "accept"  # sbatch accepts one job, then refuses until this file is "all"
    accept.write_text("one")
    count = fake_bin / "count"
    count.write_text("100")
    fake(
        fake_bin,
        "sbatch",
        f'n=$(( $(< "{count}") + 1 )); mode=$(< "{accept}")\n'
        f'if [[ $mode == one && $n -gt 101 ]]; then echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; '
        f'echo "{POLICY}" >&2; exit 1; fi\necho $n > "{count}"\necho $n',
    )
    first_unit = next(u.key for u in desired.units if u.kind == "finetune")
    tag = tag_for(desired.experiment, first_unit)
    fake(fake_bin, "squeue", f'if [[ -s "{count}" && $(< "{count}") -ge 101 ]]; then '
                             + squeue_line("101", "RUNNING", tag) + "; fi")
    options = ApplyOptions()

    one = run_pass(desired, SlurmBackend(FAST_RETRY), Policy(), act=True, options=options, prepare=prepare_unit)
    assert one.applied is not None and one.applied.errors == []
    kinds = [(e.kind, e.unit) for e in one.events]
    assert kinds[0] == ("submitted", first_unit)
    deferred = [e for e in one.events if e.kind == "deferred"]
    assert len(deferred) == len(desired.units) - 1
    assert all("QOS limit" in e.detail for e in deferred)
    assert "QOSMaxSubmitJobPerUserLimit" in deferred[0].detail
    assert calls(fake_bin, "sbatch") == 2  # the accepted job and the first refusal, nothing after
    assert not one.converged
    journal = [line for line in (exp / ".reconciler" / "journal.jsonl").read_text().splitlines()]
    assert sum('"submit_deferred"' in line for line in journal) == 1
    assert not any('"submit_failed"' in line for line in journal)
    view = Journal(exp / ".reconciler").read()
    assert not any(h.open_intent for h in view.units.values())

    accept.write_text("all")  # the queue drained
    two = run_pass(desired, SlurmBackend(FAST_RETRY), Policy(), act=True, options=options, prepare=prepare_unit)
    assert two.applied is not None and two.applied.errors == []
    submitted = [e.unit for e in two.events if e.kind == "submitted"]
    assert len(submitted) == len(desired.units) - 1 and first_unit not in submitted
    assert calls(fake_bin, "sbatch") == 1 + len(desired.units)
    # In the second pass the refused unit was plainly missing: no attempt used, no lost submission.
    refused = next(p for p in two.plan.units if p.key == deferred[0].unit)
    assert (refused.state, refused.action, refused.attempts) == ("missing", "submit", 0)
    assert refused.reason.startswith("missing: nothing submitted yet")


def test_a_live_job_found_by_its_tag_is_not_submitted_again_after_the_journal_is_lost(
    fake_bin: Path, tmp_path: Path
) -> None:
    """No journal (deleted, or a crash before the job id was written): squeue's tag says whose job it is."""
    from reconciler.engine.loop import load_desired, run_pass
    from reconciler.apply.prepare import prepare_unit
    from reconciler.plan.planner import Policy
    from reconciler.spec.units import tag_for
    from tests.integration.demo_env import copy_demo

    desired = load_desired(copy_demo(tmp_path / "demo"))
    finetune = next(u.key for u in desired.units if u.kind == "finetune")
    fake(fake_bin, "squeue", squeue_line("500", "RUNNING", tag_for(desired.experiment, finetune)))
    count = fake_bin / "count"
    count.write_text("600")
    fake(fake_bin, "sbatch", f'n=$(( $(< "{count}") + 1 )); echo $n > "{count}"; echo $n')
    result = run_pass(desired, SlurmBackend(FAST_RETRY), Policy(), act=True, prepare=prepare_unit)
    planned = {p.key: p for p in result.plan.units}
    assert (planned[finetune].state, planned[finetune].action, planned[finetune].job_id) == ("running", "none", "500")
    assert [e.job_id for e in result.events if e.kind == "adopted"] == ["500"]
    submitted = [e.unit for e in result.events if e.kind == "submitted"]
    assert finetune not in submitted and len(submitted) == len(desired.units) - 1
    assert calls(fake_bin, "sbatch") == len(desired.units) - 1
