"""`python -m tests.reliability.runner ARGS` is `reconcile ARGS` with a fast SLURM retry policy.

The product retries a transient scheduler failure for up to a minute (60 s per command, 5
tries, back-off from 1 s). Fault tests inject dozens of such failures; at the product's pace
they would take an hour. This runner changes nothing but the policy's numbers (set by
RELIABILITY_RETRY="attempts,timeout_seconds"), so the code under test is the real CLI, the
real backend and the real retry loop. It also lets `--watch` poll SLURM every second (the product's floor is 10 s,
to spare a shared controller; a single-node test cluster does not need sparing).
RELIABILITY_PLANT plants a named bug (PLANTS below), for the test that the table shows failures.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection

from reconciler.backends.slurm import backend as slurm_backend
from reconciler.backends.slurm.commands import RetryPolicy

# A test-only switch: RELIABILITY_PLANT=NAME runs the reconciler with a known bug planted, so that a
# test can check that the reliability table shows it (tests/reliability/test_report_shows_failures.py).
PLANT_ENV = "RELIABILITY_PLANT"


def fast_policy(spec: str) -> RetryPolicy:
    attempts, timeout = spec.split(",")
    return RetryPolicy(attempts=int(attempts), total_seconds=30.0, initial_wait=0.05, max_wait=0.2,
                       timeout=float(timeout))


def _query_ignores_tags() -> None:
    """The local backend's query answers only for the job ids asked, never by tag (as SLURM's would
    if it dropped its `--comment` filter): a job whose id the journal lost is not found again."""
    from reconciler.jobs import Snapshot
    from reconciler.backends.local.backend import LocalBackend

    real = LocalBackend.query

    def query(self: LocalBackend, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        snapshot = real(self, tag_prefix, job_ids)
        wanted = set(job_ids)
        return Snapshot(jobs={k: j for k, j in snapshot.jobs.items() if k in wanted}, missing=snapshot.missing)

    LocalBackend.query = query  # type: ignore[method-assign]


PLANTS: dict[str, Callable[[], None]] = {"query-ignores-tags": _query_ignores_tags}


def main() -> None:
    plant = os.environ.get(PLANT_ENV)
    if plant:
        PLANTS[plant]()
    spec = os.environ.get("RELIABILITY_RETRY")
    if spec:
        slurm_backend.SlurmBackend.__init__.__defaults__ = (fast_policy(spec),)
        slurm_backend.SlurmBackend.capabilities = dataclasses.replace(slurm_backend.CAPABILITIES,
                                                                      min_poll_seconds=0.5)
    from reconciler.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
