"""The backend interface: submit, query, cancel, release, and what a backend can do (Capabilities).

The job vocabulary both backends speak (states, Job, Snapshot) is reconciler.jobs."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reconciler.jobs import Snapshot


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """One job to submit. `tag` goes to SLURM's --comment (the same field locally)."""

    script: Path
    name: str
    tag: str
    workdir: Path
    depends_on: tuple[str, ...] = ()
    stdout: Path | None = None  # the --output pattern, may hold %j


@dataclass(frozen=True, slots=True)
class Capabilities:
    name: str
    min_poll_seconds: float
    default_poll_seconds: float
    # Seconds between fine-tune submissions (the shared HF cache races otherwise).
    finetune_stagger_seconds: float = 0.0
    # How far a watch stretches its interval while nothing changes, by default (x the floor): a
    # shared controller pays for every poll; a backend that asks no one is polled at the floor.
    max_poll_factor: float = 1.0
    # Live jobs of one experiment when --max-submit is not given (None: no cap).
    default_max_submit: int | None = None


class Backend(Protocol):
    capabilities: Capabilities

    def submit(self, request: SubmitRequest) -> str:
        """Submit one job, return its id. Raises BackendError (permanent) or BackendUnavailable."""
        ...

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        """One batched call: every live job whose tag starts with `tag_prefix`, plus the given ids.

        Raises BackendUnavailable when the scheduler cannot answer (never "no jobs").
        """
        ...

    def cancel(self, job_ids: Collection[str]) -> None: ...

    def release(self, job_id: str) -> None:
        """Drop the dependency of a pending job so it may start now."""
        ...
