"""Parsers for squeue/sacct/scontrol/sbatch output, on captured and hand-written fixtures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from reconciler.jobs import CANCELLED, COMPLETED, DEPENDENCY_NEVER_SATISFIED, FAILED, PENDING, RUNNING
from reconciler.backends.base import SubmitRequest
from reconciler.backends.slurm.backend import sbatch_argv
from reconciler.backends.slurm.commands import is_transient
from reconciler.backends.slurm.parse import (
    SEP,
    SQUEUE_FIELDS,
    ParseError,
    parse_dependency,
    parse_exit_code,
    parse_sacct,
    parse_sbatch_id,
    parse_scontrol_jobs,
    parse_squeue,
    scontrol_fields,
)
from reconciler.errors import BackendError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "slurm"


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def by_id(jobs):  # type: ignore[no-untyped-def]
    return {job.job_id: job for job in jobs}


# -- squeue -----------------------------------------------------------------------------


def test_squeue_captured_running_and_waiting() -> None:
    jobs = by_id(parse_squeue(read("squeue.txt")))
    assert set(jobs) == {"17", "18", "19", "20", "21", "22", "24_[1-3]", "25", "26"}
    assert jobs["17"].state == RUNNING
    assert jobs["17"].name == "finetune r8 lr1e-4"
    assert jobs["17"].tag == "demo/finetune/r8_lr1e-4"
    assert jobs["17"].started_at == datetime(2026, 11, 22, 7, 52, 33).timestamp()
    assert jobs["18"].name == "finetune r16|lr=2e-4"
    assert jobs["19"].reason == "Resources"
    assert jobs["19"].started_at is None  # N/A while pending
    assert jobs["20"].depends_on == ("17",)
    assert jobs["21"].depends_on == ("17", "18")
    assert jobs["21"].reason == "Dependency"
    assert jobs["26"].tag is None  # (null): no comment
    assert all(job.live for job in jobs.values())
    assert all(job.exit_code is None and job.ended_at is None for job in jobs.values())


def test_squeue_captured_dependency_never_satisfied() -> None:
    [job] = parse_squeue(read("squeue-blocked.txt"))
    assert job.job_id == "25"
    assert job.state == PENDING
    assert job.reason == DEPENDENCY_NEVER_SATISFIED
    assert job.depends_on == ("22",)
    assert job.tag == "demo/eval/bad/cap/epoch0"


def test_squeue_tricky_lines() -> None:
    jobs = by_id(parse_squeue(read("squeue-tricky.txt")))
    # The banner, the newline fragment and the blank line are skipped, nothing else.
    assert list(jobs) == ["1001", "1002", "1003_7", "1003_[8-10%2]", "1004", "1005", "1006", "1007", "1008", "1009"]
    assert jobs["1001"].name == "name with  two  spaces"
    assert jobs["1002"].state == RUNNING and jobs["1002"].reason == "Prolog"
    assert jobs["1004"].depends_on == ("1001", "1003_*")
    assert jobs["1004"].started_at is None  # an expected start, not a start
    assert jobs["1005"].reason == DEPENDENCY_NEVER_SATISFIED
    assert jobs["1006"].state == "COMPLETING" and jobs["1006"].live
    assert jobs["1007"].tag is None
    assert jobs["1008"].name == f"name{SEP}with separator"  # the name is last: split with maxsplit
    assert jobs["1008"].tag == "exp/odd"
    assert jobs["1009"].name == "first line"


def test_squeue_empty_answer_is_no_jobs() -> None:
    assert parse_squeue("") == []


def test_squeue_fifty_thousand_lines() -> None:
    fields = ["{id}", "PENDING", "Priority", "(null)", "2026-11-22T08:00:00", "N/A", "exp/unit/{id}", "job {id}"]
    line = SEP.join(fields)
    text = "\n".join(line.format(id=i) for i in range(1, 50_001)) + "\n"
    jobs = parse_squeue(text)
    assert len(jobs) == 50_000
    assert jobs[-1].job_id == "50000"
    assert jobs[-1].tag == "exp/unit/50000"
    assert jobs[12_344].name == "job 12345"
    assert len(SQUEUE_FIELDS) == len(line.split(SEP))


# -- sacct ------------------------------------------------------------------------------


def test_sacct_captured() -> None:
    jobs = by_id(parse_sacct(read("sacct.txt")))
    assert "999" not in jobs  # sacct says nothing about unknown ids
    assert jobs["17"].state == COMPLETED and jobs["17"].exit_code == 0
    assert jobs["17"].tag == "demo/finetune/r8_lr1e-4"
    assert jobs["18"].name == "finetune r16|lr=2e-4"
    assert jobs["20"].reason is None  # stale pending reason dropped once the job ran
    assert jobs["22"].state == FAILED and jobs["22"].exit_code == 3
    assert jobs["23"].state == CANCELLED  # `CANCELLED by 0`
    assert {"24_1", "24_2", "24_3"} <= set(jobs)
    assert jobs["25"].state == PENDING and jobs["25"].tag is None  # comment stored at the end only
    assert jobs["25"].reason == "Dependency" and jobs["25"].started_at is None
    assert jobs["26"].tag is None
    assert jobs["17"].ended_at is not None and jobs["17"].started_at is not None


def test_sacct_tricky() -> None:
    jobs = by_id(parse_sacct(read("sacct-tricky.txt")))
    assert jobs["2001"].state == CANCELLED
    assert jobs["2002"].state == CANCELLED and jobs["2002"].started_at is None
    assert jobs["2003"].state == RUNNING and jobs["2003"].exit_code is None and jobs["2003"].ended_at is None
    assert jobs["2004"].state == "OUT_OF_MEMORY" and jobs["2004"].failure_class == "out_of_memory"
    assert jobs["2005"].failure_class == "timeout"
    assert jobs["2006"].state == "NODE_FAIL" and jobs["2006"].exit_code == 1
    assert jobs["2007"].exit_code == 128 + 9
    assert jobs["2008_3"].state == COMPLETED
    assert jobs["2008_[4-9%2]"].state == PENDING and jobs["2008_[4-9%2]"].tag is None
    assert jobs["2009"].state == COMPLETED  # requeued: the last record wins
    assert jobs["2010"].name == f"name|with|pipes{SEP}and separator"


# -- scontrol ---------------------------------------------------------------------------


def test_scontrol_captured_all() -> None:
    jobs = by_id(parse_scontrol_jobs(read("scontrol-show-job-all.txt")))
    assert jobs["1"].name == "a very long job name with spaces and | pipes that goes on and on and on"
    assert jobs["1"].tag == "exp1/finetune/run a|b"  # two spaces follow the comment: stripped
    assert jobs["1"].state == FAILED and jobs["1"].reason == "JobLaunchFailure"
    assert jobs["22"].state == FAILED and jobs["22"].exit_code == 3
    assert jobs["23"].state == CANCELLED
    assert jobs["25"].state == PENDING and jobs["25"].reason == DEPENDENCY_NEVER_SATISFIED
    assert jobs["25"].depends_on == ("22",)
    assert jobs["26"].tag is None
    assert {"24_1", "24_2", "24_3"} <= set(jobs)  # array tasks under their user-facing ids
    assert "27" not in jobs
    assert jobs["17"].state == COMPLETED and jobs["17"].exit_code == 0 and jobs["17"].ended_at is not None


def test_scontrol_captured_pending() -> None:
    [job] = parse_scontrol_jobs(read("scontrol-show-job-pending.txt"))
    assert (job.job_id, job.state, job.reason, job.depends_on) == ("20", PENDING, "Dependency", ("17",))
    assert job.started_at is None and job.ended_at is None and job.exit_code is None
    assert job.tag == "demo/eval/r8_lr1e-4/cap/epoch0"


def test_scontrol_fields_split_only_at_keys() -> None:
    fields = scontrol_fields("JobId=5 JobName=a b  c UserId=0(0) Comment=x y  StdErr=/o")
    assert fields["JobName"] == "a b  c"
    assert fields["Comment"] == "x y"
    assert fields["StdErr"] == "/o"


def test_scontrol_no_jobs() -> None:
    assert parse_scontrol_jobs("No jobs in the system\n") == []


# -- small fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(null)", ()),
        ("", ()),
        ("afterok:12(unfulfilled)", ("12",)),
        ("afterok:12(unfulfilled),afterok:13(failed)", ("12", "13")),
        ("afterok:12:13", ("12", "13")),
        ("afterany:7+60(unfulfilled)?afterok:8(unfulfilled)", ("7", "8")),
        ("afterok:5_*(failed)", ("5_*",)),
        ("afterok:5_3(unfulfilled),afterok:5_3(unfulfilled)", ("5_3",)),
        ("singleton(unfulfilled)", ()),
    ],
)
def test_parse_dependency(text: str, expected: tuple[str, ...]) -> None:
    assert parse_dependency(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("0:0", 0), ("3:0", 3), ("0:9", 137), ("1:9", 1), ("", None), ("junk", None)]
)
def test_parse_exit_code(text: str, expected: int | None) -> None:
    assert parse_exit_code(text) == expected


# -- sbatch -----------------------------------------------------------------------------


def test_sbatch_captured() -> None:
    assert parse_sbatch_id(read("sbatch-parsable.txt")) == "29"


def test_sbatch_wrapper_lines_and_cluster_suffix() -> None:
    assert parse_sbatch_id(read("sbatch-wrapper.txt")) == "4242"


def test_sbatch_without_parsable() -> None:
    assert parse_sbatch_id(read("sbatch-submitted-line.txt")) == "777"


@pytest.mark.parametrize("text", ["", "\n\n", "sbatch: warning: x\n", "12abc\n", "-5\n"])
def test_sbatch_without_id(text: str) -> None:
    with pytest.raises(ParseError):
        parse_sbatch_id(text)


def test_sbatch_no_id_fixture() -> None:
    with pytest.raises(ParseError):
        parse_sbatch_id(read("sbatch-no-id.txt"))


def test_sbatch_argv(tmp_path: Path) -> None:
    request = SubmitRequest(
        script=tmp_path / "job.sh",
        name="-looks like an option",
        tag="exp/eval/r1/cap/epoch0",
        workdir=tmp_path,
        depends_on=("12", "13"),
        stdout=tmp_path / "logs" / "%j.out",
    )
    assert sbatch_argv(request) == [
        "sbatch",
        "--parsable",
        "--job-name=-looks like an option",
        "--comment=exp/eval/r1/cap/epoch0",
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/logs/%j.out",
        "--dependency=afterok:12:13",
        str(tmp_path / "job.sh"),
    ]


@pytest.mark.parametrize(("tag", "deps"), [("bad\ntag", ()), ("ok", ("12; rm -rf /",)), ("ok", ("--user=x",))])
def test_sbatch_argv_rejects_unsafe_values(tmp_path: Path, tag: str, deps: tuple[str, ...]) -> None:
    request = SubmitRequest(script=tmp_path / "j.sh", name="n", tag=tag, workdir=tmp_path, depends_on=deps)
    with pytest.raises(BackendError):
        sbatch_argv(request)


# -- error classes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "transient"),
    [
        ("sacct-slurmdbd-down.stderr", True),
        ("squeue-controller-down.stderr", True),
        ("sbatch-controller-down.stderr", True),
        ("scontrol-controller-down.stderr", True),
        ("scontrol-invalid-id.stderr", False),  # `slurm_load_jobs error: Invalid job id`: permanent wins
        ("sbatch-invalid-account.stderr", False),
        ("sbatch-invalid-partition.stderr", False),
        ("sbatch-bad-memory.stderr", False),
    ],
)
def test_captured_errors_classified(fixture: str, transient: bool) -> None:
    assert is_transient(read(fixture), unknown_is_transient=False) is transient


@pytest.mark.parametrize(
    "message",
    [
        "slurm_load_jobs error: Socket timed out on send/recv operation",
        "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
        "sbatch: error: Batch job submission failed: Unexpected message received",
    ],
)
def test_transient_messages(message: str) -> None:
    assert is_transient(message, unknown_is_transient=False)


def test_unknown_messages_follow_the_callers_choice() -> None:
    assert is_transient("something new", unknown_is_transient=True)
    assert not is_transient("something new", unknown_is_transient=False)
