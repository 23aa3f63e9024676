"""The only place that runs SLURM commands: argument lists, timeouts, error classes, retries."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from reconciler.errors import BackendError, BackendUnavailable, SubmitDeferred

# stderr fragments that mean "the scheduler could not be asked right now". Matched
# case-insensitively, after PERMANENT (so `slurm_load_jobs error: Invalid job id` is permanent).
TRANSIENT = (
    "socket timed out",
    "unable to contact slurm controller",
    "connection refused",
    "connection timed out",
    "connection reset",
    "slurm_load_jobs error",
    "resource temporarily unavailable",
    "unexpected message received",
    "communication connection failure",
    "zero bytes were transmitted or received",
    "transport endpoint is not connected",
    "slurmctld is not responding",
    "problem talking to the database",
    "failed to open persistent connection",
    "try again",
)
# stderr fragments that mean "asking again will not help": the request itself is wrong.
PERMANENT = (
    "invalid job id",
    "invalid account",
    "invalid partition",
    "invalid qos",
    "invalid generic resource",
    "invalid feature",
    "invalid time limit",
    "invalid dependency",
    "job dependency problem",
    "requested node configuration is not available",
    "memory specification can not be satisfied",
    "more processors requested than permitted",
    "node count specification invalid",
    "job violates accounting/qos policy",
    "unable to open file",
    "job has already finished",
    "job is no longer pending",
    "bad job/step specified",
    "access/permission denied",
    "accounting storage is disabled",
    "unrecognized option",
    "invalid option",
)

# sbatch refusing a job *for now*. SLURM names the limit on a line of its own, then its generic
# message (QoS and association limits print alike):
#   sbatch: error: QOSMaxSubmitJobPerUserLimit
#   sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, ...)
# A cap on queued jobs (MaxSubmitJob*, GrpSubmitJobs) lifts as jobs leave the queue: the unit is
# deferred to a later pass. The same generic message covers limits no wait lifts
# (QOSMaxWallDurationPerJobLimit, QOSMinNode, ...): when SLURM names one of those, the error stays
# permanent (PERMANENT holds the generic message). The generic message alone, from sites or
# versions that do not name the limit, is most often the submit cap (the limit users hit), so it
# defers too: that loses nothing, and a limit that never lifts shows as a deferral on every pass.
POLICY_VIOLATION = "job violates accounting/qos policy"
_NAMED_LIMIT = re.compile(r"^\s*\w+: error: ((?:QOS|Assoc)[A-Za-z]+)\s*$", re.MULTILINE)


def deferral_limit(stderr: str) -> str | None:
    """The limit's name when this failure is a cap on queued jobs ("" if unnamed), else None."""
    if POLICY_VIOLATION not in stderr.lower():
        return None
    named = _NAMED_LIMIT.findall(stderr)
    if not named:
        return ""
    caps = [name for name in named if "submitjob" in name.lower()]
    return caps[0] if caps and len(caps) == len(named) else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry transient failures: exponential back-off with full jitter.

    Stops after `attempts` tries or `total_seconds`, whichever comes first. Tests use a
    policy with tiny waits.
    """

    attempts: int = 5
    total_seconds: float = 60.0
    initial_wait: float = 1.0
    max_wait: float = 15.0
    timeout: float = 60.0  # per command run; a command that takes longer is a transient failure


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandFailed(Exception):
    """One run of a command failed; `transient` says whether trying again may help."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, transient: bool) -> None:
        super().__init__(f"{argv[0]} failed (exit {returncode}): {stderr.strip()[-300:]}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.transient = transient

    def as_backend_error(self) -> BackendError | BackendUnavailable:
        if self.transient:
            return BackendUnavailable(str(self))
        limit = deferral_limit(self.stderr) if command_name(self.argv) == "sbatch" else None
        if limit is not None:
            return SubmitDeferred(command="sbatch", returncode=self.returncode, stderr=self.stderr, limit=limit)
        return BackendError(command=command_name(self.argv), returncode=self.returncode, stderr=self.stderr)


def command_name(argv: Sequence[str]) -> str:
    """`sbatch`, `squeue`, ...; scontrol with its verb (`scontrol update`), for messages."""
    name = os.path.basename(argv[0])
    return f"{name} {argv[1]}" if name == "scontrol" and len(argv) > 1 else name


def is_transient(stderr: str, *, unknown_is_transient: bool) -> bool:
    """Classify a failure by its message. Unrecognised messages follow `unknown_is_transient`."""
    text = stderr.lower()
    if any(fragment in text for fragment in PERMANENT):
        return False
    if any(fragment in text for fragment in TRANSIENT):
        return True
    return unknown_is_transient


def command_env() -> dict[str, str]:
    """The caller's environment, minus variables that change what squeue/sacct print.

    SQUEUE_*/SACCT_* (e.g. SQUEUE_STATES, SACCT_FORMAT) would change the selection or the
    columns; SLURM_TIME_FORMAT=standard gives ISO times whatever the site default.
    Site defaults for sbatch (SBATCH_ACCOUNT, ...) are kept on purpose.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQUEUE_", "SACCT_"))}
    env["SLURM_TIME_FORMAT"] = "standard"
    env["LC_ALL"] = "C"
    return env


def run_once(argv: Sequence[str], *, timeout: float, unknown_is_transient: bool = False,
             calls: Counter[str] | None = None) -> Completed:
    """Run one command (no shell). Raises CommandFailed, or BackendError when it is not installed.
    `calls` (a backend's) counts every command run, by program name, one per attempt."""
    if calls is not None:
        calls[os.path.basename(argv[0])] += 1
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=command_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BackendError(command=argv[0], returncode=None, stderr=f"{argv[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, None, f"timed out after {timeout:g}s", transient=True) from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise CommandFailed(
            argv, proc.returncode, detail, transient=is_transient(detail, unknown_is_transient=unknown_is_transient)
        )
    return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def retrying(policy: RetryPolicy) -> Retrying:
    """A tenacity loop that retries transient CommandFailed under `policy`, then re-raises it."""
    return Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.total_seconds),
        wait=wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
        retry=retry_if_exception(_is_transient_failure),
        reraise=True,
    )


def _is_transient_failure(exc: BaseException) -> bool:
    return isinstance(exc, CommandFailed) and exc.transient


def run(argv: Sequence[str], policy: RetryPolicy, *, unknown_is_transient: bool = False,
        calls: Counter[str] | None = None) -> Completed:
    """Run a command, retrying transient failures; then BackendUnavailable (transient) or BackendError."""
    try:
        for attempt in retrying(policy):
            with attempt:
                return run_once(argv, timeout=policy.timeout, unknown_is_transient=unknown_is_transient,
                                calls=calls)
    except CommandFailed as exc:
        raise exc.as_backend_error() from exc
    raise AssertionError("unreachable: tenacity either returns or raises")
