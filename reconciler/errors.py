"""Error types: each carries its context as fields and decides whether it is retried."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


class ReconcilerError(Exception):
    """Base class. `exit_code` is what the CLI exits with when this reaches it."""

    exit_code = 1


@dataclass
class SpecError(ReconcilerError):
    """Invalid user input, located in a file: exit 2, nothing written."""

    path: Path | str
    line: int | None
    column: int | None
    field: str
    message: str

    exit_code = 2

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


@dataclass
class SpecProblems(SpecError):
    """Several problems in one file. As a SpecError it reads as the first, with how many more there are;
    `problems` holds every one, in file order (`reconcile validate` lists them all)."""

    problems: tuple[SpecError, ...] = ()

    @classmethod
    def of(cls, problems: list[SpecError]) -> SpecError:
        """The one problem itself, or all of them behind the first."""
        if len(problems) == 1:
            return problems[0]
        first, more = problems[0], len(problems) - 1
        message = (f"{first.message} ({more} more problem{'s' if more > 1 else ''}: "
                   f"`reconcile validate {shlex.quote(str(first.path))}` lists them all)")
        return cls(first.path, first.line, first.column, first.field, message, tuple(problems))


def every_problem(exc: SpecError) -> tuple[SpecError, ...]:
    return exc.problems if isinstance(exc, SpecProblems) else (exc,)


class UsageError(ReconcilerError):
    """Bad command-line input that is not located in a file: exit 2."""

    exit_code = 2


@dataclass
class PreflightFailed(UsageError):
    """What the jobs will need is missing or wrong, found before any of them runs: each problem is listed
    (one located line each), then this error's own line; exit 2, nothing submitted."""

    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{len(self.problems)} problem(s) above must be fixed before any job runs; nothing was submitted"


class Interrupted(ReconcilerError):
    """Ctrl-C during a pass or a watch. Not a mistake: the message says what keeps running and how to
    resume or stop it, and the command exits 130 (as a shell reports SIGINT)."""

    exit_code = 130


@dataclass
class BackendError(ReconcilerError):
    """A scheduler command failed for good (never retried in a loop)."""

    command: str
    returncode: int | None
    stderr: str

    def __str__(self) -> str:
        detail = self.stderr.strip().splitlines()[-1] if self.stderr.strip() else "no output"
        return f"{self.command} failed (exit {self.returncode}): {detail}"


@dataclass
class SubmitDeferred(BackendError):
    """The scheduler refused a submission *for now*: a cap on queued jobs (a QoS or association
    MaxSubmitJobs) is reached. Not the unit's fault and not permanent: apply leaves the unit
    missing and a later pass submits it, once jobs have left the queue. `limit` is the name
    SLURM gave (e.g. QOSMaxSubmitJobPerUserLimit), or "" when it printed only its generic line.
    A subclass of BackendError so that a caller which does not know it still treats it as an error.
    """

    limit: str = ""


class BackendUnavailable(ReconcilerError):
    """Transient: the scheduler could not be asked. Evidence becomes unknown; the next pass retries."""


def os_error_line(exc: OSError) -> str:
    """A file system in trouble (read-only, full, deleted under us), said in one line."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}; nothing further was done"


class LockHeld(ReconcilerError):
    """Another reconciler is acting on this experiment."""

    exit_code = 1
