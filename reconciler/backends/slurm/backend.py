"""SlurmBackend: the Backend protocol over sbatch, squeue, sacct, scontrol and scancel."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime, timedelta

from reconciler.backends.base import Capabilities, SubmitRequest
from reconciler.jobs import Job, Snapshot, job_order
from reconciler.backends.slurm.commands import CommandFailed, RetryPolicy, retrying, run, run_once
from reconciler.backends.slurm.parse import (
    SACCT_FORMAT,
    SEP,
    SQUEUE_FORMAT,
    ParseError,
    is_job_id,
    parse_sacct,
    parse_sbatch_id,
    parse_scontrol_jobs,
    parse_squeue,
    pick,
)
from reconciler.errors import BackendError

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    name="slurm",
    # Polling faster than this only loads the controller (peers: 40-180 s is the norm).
    min_poll_seconds=10.0,
    default_poll_seconds=60.0,
    finetune_stagger_seconds=5.0,
    max_poll_factor=5.0,  # up to 5 min between polls while every job waits behind long fine-tunes
    default_max_submit=25,  # like a QoS MaxSubmitJobs: a sweep does not flood a shared queue
)

# A retried sbatch adopts a job of its tag submitted since its first try began, less this margin
# for the controller's clock (an earlier attempt of the unit was submitted passes before).
SUBMIT_CLOCK_SKEW_SECONDS = 5.0
# sacct's default window is "since midnight": always pass an explicit start. A year: the jobs asked
# about by id include those that wrote the logs of an experiment adopted months after it ran.
SACCT_WINDOW_DAYS = 365
# Thousands of ids in one request hit RPC limits (submitit#1759); chunk past this.
SACCT_CHUNK = 1000


class SlurmBackend:
    """Talks to the SLURM controller of this machine's cluster as the current user."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sacct_window_days: int = SACCT_WINDOW_DAYS,
        sacct_chunk: int = SACCT_CHUNK,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sacct_window_days = sacct_window_days
        self.sacct_chunk = sacct_chunk
        # What the last query asked and how long it took, for `status` and debugging.
        self.last_query_sources: tuple[str, ...] = ()
        self.last_query_seconds: float | None = None
        # Every command this backend ran, by program name, one count per attempt (retries included):
        # read by tests and benchmarks.
        self.calls: Counter[str] = Counter()

    # -- submit -------------------------------------------------------------------------

    def submit(self, request: SubmitRequest) -> str:
        argv = sbatch_argv(request)
        _make_output_dir(request)
        since = time.time() - SUBMIT_CLOCK_SKEW_SECONDS
        try:
            for attempt in retrying(self.policy):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        # The failed try may have reached the controller after all: adopt
                        # that job rather than submit a duplicate, even if it has already
                        # ended (a short job can outlive sbatch's timeout). If squeue cannot
                        # answer, this raises BackendUnavailable and we do not resubmit blindly.
                        adopted = self._job_with_tag_since(request.tag, since)
                        if adopted is not None:
                            log.info("sbatch retry: adopted job %s with tag %s", adopted, request.tag)
                            return adopted
                    return self._sbatch_once(argv, request.tag)
        except CommandFailed as exc:
            raise exc.as_backend_error() from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _sbatch_once(self, argv: Sequence[str], tag: str) -> str:
        done = run_once(argv, timeout=self.policy.timeout, calls=self.calls)
        try:
            return parse_sbatch_id(done.stdout)
        except ParseError as exc:
            # sbatch said yes but printed no id we recognise: find the job by its tag.
            adopted = self._live_job_with_tag(tag)
            if adopted is not None:
                return adopted
            raise BackendError(command="sbatch", returncode=0, stderr=str(exc)) from exc

    def _job_with_tag_since(self, tag: str, since: float) -> str | None:
        """A job with this tag submitted since `since`, live or ended (the controller keeps ended
        jobs for MinJobAge, 300 s by default, and `squeue --states=all` lists them)."""
        argv = ["squeue", "--me", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}"]
        jobs = parse_squeue(run(argv, self.policy, unknown_is_transient=True, calls=self.calls).stdout)
        mine = [job for job in jobs if job.tag == tag and (job.live or (job.submitted_at or 0) >= since)]
        return max(mine, key=lambda job: job_order(job.job_id)).job_id if mine else None

    def _live_job_with_tag(self, tag: str) -> str | None:
        live = [job for job in self._squeue() if job.tag == tag and job.live]
        return max(live, key=lambda job: job_order(job.job_id)).job_id if live else None

    # -- query --------------------------------------------------------------------------

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        """One squeue for all live jobs; sacct, then scontrol, only for asked ids squeue lacks."""
        started = time.monotonic()
        sources = ["squeue"]
        wanted = {str(job_id) for job_id in job_ids}
        jobs = {
            job.job_id: job
            for job in self._squeue()
            if job.job_id in wanted or (job.tag is not None and job.tag.startswith(tag_prefix))
        }
        rest = sorted(wanted - jobs.keys(), key=job_order)
        if rest:
            sources.append("sacct")
            accounted = self._sacct(rest)
            # Ask the controller about ids accounting does not know, and about ids accounting
            # calls live although squeue no longer lists them (slurmdbd lagging behind).
            unsettled = [
                job_id for job_id in rest if accounted is None or job_id not in accounted or accounted[job_id].live
            ]
            if accounted is not None:
                jobs.update({job_id: job for job_id, job in accounted.items() if not job.live})
            if unsettled:
                sources.append("scontrol")
                controller = self._scontrol(unsettled)
                for job_id in unsettled:
                    job = controller.get(job_id) or (accounted or {}).get(job_id)
                    if job is not None:
                        jobs[job_id] = job
        self.last_query_sources = tuple(sources)
        self.last_query_seconds = time.monotonic() - started
        return Snapshot(jobs=jobs, missing=frozenset(wanted - jobs.keys()))

    def _squeue(self) -> list[Job]:
        # Default states only (pending, running, completing, ...): finished jobs come from
        # sacct with their exit codes. Unknown failures are transient: squeue only reads.
        argv = ["squeue", "--me", "--noheader", f"--format={SQUEUE_FORMAT}"]
        return parse_squeue(run(argv, self.policy, unknown_is_transient=True, calls=self.calls).stdout)

    def _sacct(self, job_ids: Sequence[str]) -> dict[str, Job] | None:
        """Accounting's answer for these ids, or None when accounting cannot answer.

        One try, no retries: when slurmdbd is down or accounting is off, the controller
        (scontrol) is asked instead, so waiting on sacct would only slow the pass down.
        """
        start = (datetime.now() - timedelta(days=self.sacct_window_days)).strftime("%Y-%m-%dT%H:%M:%S")
        found: dict[str, Job] = {}
        for chunk in _chunks(job_ids, self.sacct_chunk):
            argv = [
                "sacct",
                "--noheader",
                "--parsable2",
                f"--delimiter={SEP}",
                "--allocations",
                f"--starttime={start}",
                "--endtime=now",
                f"--format={SACCT_FORMAT}",
                f"--jobs={','.join(chunk)}",
            ]
            try:
                done = run_once(argv, timeout=self.policy.timeout, calls=self.calls)
            except CommandFailed as exc:
                log.warning("sacct cannot answer, asking the controller instead: %s", exc)
                return None
            found.update(pick(parse_sacct(done.stdout), chunk))
        return found

    def _scontrol(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The controller's memory (jobs ended less than MinJobAge ago, and live ones).

        scontrol takes one id or none: one id is asked directly, several at once with a
        single listing of every job the controller holds.
        """
        argv = ["scontrol", "show", "job", "--oneliner"]
        if len(job_ids) == 1:
            argv.append(job_ids[0])
        try:
            done = run(argv, self.policy, unknown_is_transient=True, calls=self.calls)
        except BackendError as exc:
            if "invalid job id" in exc.stderr.lower():
                return {}  # the controller has forgotten it: not an error, just unknown here
            raise
        return pick(parse_scontrol_jobs(done.stdout), job_ids)

    # -- cancel, release ------------------------------------------------------------------

    def cancel(self, job_ids: Collection[str]) -> None:
        ids = sorted({str(job_id) for job_id in job_ids}, key=job_order)
        if not ids:
            return
        _check_ids(ids)
        # scancel exits 0 for jobs already ended or unknown: cancelling is idempotent.
        run(["scancel", *ids], self.policy, calls=self.calls)

    def release(self, job_id: str) -> None:
        _check_ids([job_id])
        run(["scontrol", "update", f"JobId={job_id}", "Dependency="], self.policy, calls=self.calls)


def sbatch_argv(request: SubmitRequest) -> list[str]:
    """The sbatch command for a request. `--opt=value` keeps values from reading as options."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in request.tag + request.name):
        # Tags and names travel through squeue/sacct lines: control characters would break them.
        detail = f"tag or name has control characters: {request.tag!r}, {request.name!r}"
        raise BackendError(command="sbatch", returncode=None, stderr=detail)
    _check_ids(request.depends_on)
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={request.name}",
        f"--comment={request.tag}",
        f"--chdir={request.workdir}",
    ]
    if request.stdout is not None:
        argv.append(f"--output={request.stdout}")
    if request.depends_on:
        argv.append("--dependency=afterok:" + ":".join(request.depends_on))
    argv.append(str(request.script))
    return argv


def slurm_available(timeout: float = 5.0) -> bool:
    """sbatch is on PATH and the controller answers `scontrol ping` (for `--backend auto`)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        done = run_once(["scontrol", "ping"], timeout=timeout)
    except (CommandFailed, BackendError):
        return False
    return " is UP" in done.stdout


def _make_output_dir(request: SubmitRequest) -> None:
    """SLURM does not create the --output directory; a job without one fails at launch."""
    if request.stdout is None:
        return
    path = request.stdout if request.stdout.is_absolute() else request.workdir / request.stdout
    if "%" not in str(path.parent):
        os.makedirs(path.parent, exist_ok=True)


def _check_ids(job_ids: Collection[str]) -> None:
    bad = [job_id for job_id in job_ids if not is_job_id(str(job_id))]
    if bad:
        raise BackendError(command="slurm", returncode=None, stderr=f"not SLURM job ids: {bad!r}")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), max(size, 1)):
        yield items[start : start + size]
