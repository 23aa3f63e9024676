"""Pure parsers for what squeue, sacct, scontrol and sbatch print (no I/O, no subprocesses)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime

from reconciler.jobs import PENDING, TERMINAL_STATES, Job, normalise_state

log = logging.getLogger(__name__)

# Field separator for squeue and sacct: ASCII "unit separator". Job names may hold spaces,
# '|' or ',' (sacct -P's own '|' breaks on them), and fixed-width columns truncate or run
# together; no one puts a control character in a job name. The one free-text field we do
# not control, the job name, is printed last and split off with maxsplit, so even a name
# containing the separator parses. The comment is our tag (no control characters, enforced
# at submit).
SEP = "\x1f"

# squeue -o fields: %i id (array tasks as 123_4), %T full state name, %r reason, %E remaining
# dependencies, %V submit time, %S start time (expected start while pending), %k comment
# (our tag), %j name (last, see SEP). No field widths: squeue then prints each field whole.
SQUEUE_FIELDS = ("%i", "%T", "%r", "%E", "%V", "%S", "%k", "%j")
SQUEUE_FORMAT = SEP.join(SQUEUE_FIELDS)

# sacct --format fields, JobName last for the same reason. Comment is only filled when the
# cluster stores it (AccountingStoreFlags=job_comment), and only from the end of a job on;
# squeue is the source of tags for live jobs. Seen on 22.05: for a few seconds after a short
# job ends, sacct may name it `allocation`; names are for people, the tag is the identity.
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Submit", "Start", "End", "Reason", "Comment", "JobName")
SACCT_FORMAT = ",".join(SACCT_FIELDS)

# Words SLURM prints for "no value".
_NULLS = frozenset({"", "(null)", "None", "N/A", "Unknown", "n/a"})

_JOB_ID = re.compile(r"^\d+(?:_(?:\d+|\[[^\]]*\]))?(?:\+\d+)?$")
# One dependency item, e.g. `afterok:12(unfulfilled)`, `afterok:5_*(failed)`, `afterany:7+60`.
_DEP_ID = re.compile(r":(\d+(?:_(?:\d+|\*))?)")
# sbatch --parsable prints `id` or `id;cluster`; without --parsable, `Submitted batch job id`.
_PARSABLE = re.compile(r"^\s*(\d+)(?:;[\w.\-]+)?\s*$")
_SUBMITTED = re.compile(r"Submitted batch job (\d+)")
# scontrol -o prints `Key=value` pairs separated by spaces; values (JobName, Comment, Command)
# may hold spaces, so split only where a space is followed by something shaped like a key.
_SCONTROL_KEY = re.compile(r" +(?=[A-Za-z][A-Za-z0-9_:/]*=)")


class ParseError(ValueError):
    """Scheduler output that does not have the expected shape."""


def is_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def null(text: str) -> str | None:
    value = text.strip()
    return None if value in _NULLS else value


def parse_time(text: str) -> float | None:
    """`2026-11-22T07:48:24` (SLURM_TIME_FORMAT=standard, local time) -> epoch seconds."""
    value = null(text)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def parse_exit_code(text: str) -> int | None:
    """sacct/scontrol `code:signal` -> one number: the code, or 128+signal when a signal ended it."""
    value = null(text)
    if value is None:
        return None
    code, _, signal = value.partition(":")
    if not code.isdigit() or (signal and not signal.isdigit()):
        return None
    if int(code) == 0 and signal and int(signal) != 0:
        return 128 + int(signal)
    return int(code)


def parse_dependency(text: str) -> tuple[str, ...]:
    """squeue %E / scontrol Dependency= -> the job ids still depended on, in order, no repeats."""
    value = null(text)
    if value is None:
        return ()
    ids: list[str] = []
    for found in _DEP_ID.findall(value):
        if found not in ids:
            ids.append(found)
    return tuple(ids)


def _times(state: str, submit: str, start: str, end: str) -> tuple[float | None, float | None, float | None]:
    # A pending job's start is an estimate and a live job's end is its time limit: drop both.
    started = None if state == PENDING else parse_time(start)
    ended = parse_time(end) if state in TERMINAL_STATES else None
    return parse_time(submit), started, ended


def parse_squeue(text: str) -> list[Job]:
    """Lines printed by `squeue --noheader --format=SQUEUE_FORMAT` -> jobs.

    Lines without the separators (banners from site wrappers, the tail of a job name that
    held a newline) are skipped: they cannot describe a job.
    """
    jobs: list[Job] = []
    width = len(SQUEUE_FIELDS)
    for line in text.splitlines():
        parts = line.split(SEP, width - 1)
        if len(parts) != width or not is_job_id(parts[0].strip()):
            if line.strip():
                log.warning("squeue: skipped a line that is not a job: %.200r", line)
            continue
        job_id, state, reason, dependency, submit, start, comment, name = parts
        state = normalise_state(state)
        submitted, started, ended = _times(state, submit, start, "")
        jobs.append(
            Job(
                job_id=job_id.strip(),
                state=state,
                name=name,
                tag=null(comment),
                reason=null(reason),
                submitted_at=submitted,
                started_at=started,
                ended_at=ended,
                depends_on=parse_dependency(dependency),
            )
        )
    return jobs


def parse_sacct(text: str) -> list[Job]:
    """Lines printed by `sacct -X -n -P --delimiter=SEP --format=SACCT_FORMAT` -> jobs.

    A requeued job may appear more than once; the last line wins (sacct lists oldest first).
    """
    by_id: dict[str, Job] = {}
    width = len(SACCT_FIELDS)
    for line in text.splitlines():
        parts = line.split(SEP, width - 1)
        if len(parts) != width or not is_job_id(parts[0].strip()):
            if line.strip():
                log.warning("sacct: skipped a line that is not a job: %.200r", line)
            continue
        job_id, state, exit_code, submit, start, end, reason, comment, name = parts
        state = normalise_state(state)
        submitted, started, ended = _times(state, submit, start, end)
        by_id[job_id.strip()] = Job(
            job_id=job_id.strip(),
            state=state,
            name=name,
            tag=null(comment),
            # sacct's Reason is the last *pending* reason, stale once the job has started.
            reason=null(reason) if state == PENDING else None,
            exit_code=parse_exit_code(exit_code) if state in TERMINAL_STATES else None,
            submitted_at=submitted,
            started_at=started,
            ended_at=ended,
        )
    return list(by_id.values())


def scontrol_fields(line: str) -> dict[str, str]:
    """One `scontrol show job -o` line -> {key: value}, values stripped."""
    fields: dict[str, str] = {}
    for item in _SCONTROL_KEY.split(line.strip()):
        key, eq, value = item.partition("=")
        if eq and key not in fields:  # the first occurrence is the real key
            fields[key] = value.strip()
    return fields


def parse_scontrol_jobs(text: str) -> list[Job]:
    """`scontrol show job -o [ID]` output (one job per line) -> jobs."""
    jobs: list[Job] = []
    for line in text.splitlines():
        if not line.startswith("JobId="):
            if line.strip() and line.strip() != "No jobs in the system":
                log.warning("scontrol: skipped a line that is not a job: %.200r", line)
            continue
        f = scontrol_fields(line)
        job_id = f.get("JobId", "")
        # An array task is its own job internally; users (and squeue/sacct) name it 123_4.
        if null(f.get("ArrayJobId", "")) and null(f.get("ArrayTaskId", "")):
            job_id = f"{f['ArrayJobId']}_{f['ArrayTaskId']}"
        if not is_job_id(job_id):
            continue
        state = normalise_state(f.get("JobState", ""))
        submitted, started, ended = _times(state, f.get("SubmitTime", ""), f.get("StartTime", ""), f.get("EndTime", ""))
        jobs.append(
            Job(
                job_id=job_id,
                state=state,
                name=f.get("JobName", ""),
                tag=null(f.get("Comment", "")),
                reason=null(f.get("Reason", "")),
                exit_code=parse_exit_code(f.get("ExitCode", "")) if state in TERMINAL_STATES else None,
                submitted_at=submitted,
                started_at=started,
                ended_at=ended,
                depends_on=parse_dependency(f.get("Dependency", "")),
            )
        )
    return jobs


def parse_sbatch_id(stdout: str) -> str:
    """The job id from `sbatch --parsable` output.

    Site wrappers print extra lines (banners, warnings) around the answer, so the last line
    that is exactly `id` or `id;cluster` wins; `Submitted batch job id` is accepted from
    wrappers that drop --parsable. Anything else raises ParseError.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _PARSABLE.match(line)
        if match:
            return match.group(1)
    for line in reversed(lines):
        match = _SUBMITTED.search(line)
        if match:
            return match.group(1)
    raise ParseError(f"no job id in sbatch output: {stdout.strip()[:200]!r}")


def pick(jobs: Iterable[Job], ids: Iterable[str]) -> dict[str, Job]:
    """The jobs whose id is in `ids`, by id."""
    wanted = set(ids)
    return {job.job_id: job for job in jobs if job.job_id in wanted}
