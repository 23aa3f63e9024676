"""`python -m tests.slurm.cluster_cli ARGS` is `reconcile ARGS`, paced for the single-node test cluster.

The product polls SLURM at most every 10 s and waits 5 s between fine-tune submissions, to spare
a shared controller and a shared HuggingFace cache. The test cluster is neither shared nor
cached, and at the product's pace the end-to-end tests would take ten minutes; so this runner
lowers the floor of `--interval` to 0.5 s and the stagger to E2E_STAGGER_SECONDS (default 0.5 s,
still exercised). When E2E_RETRY_SECONDS is set it also bounds how long one command's transient
failures are retried (the product: 60 s), so that a pass during a controller outage ends, reported
unknown, within seconds. Everything else is the real CLI, backend and retry loop.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any


def main() -> None:
    from reconciler.backends.slurm import backend as slurm_backend
    from reconciler.backends.slurm.commands import RetryPolicy

    slurm_backend.SlurmBackend.capabilities = dataclasses.replace(
        slurm_backend.CAPABILITIES,
        min_poll_seconds=0.5,
        finetune_stagger_seconds=float(os.environ.get("E2E_STAGGER_SECONDS", "0.5")),
    )
    retry = os.environ.get("E2E_RETRY_SECONDS")
    if retry:
        policy = RetryPolicy(attempts=5, total_seconds=float(retry), initial_wait=0.2, max_wait=1.0, timeout=30.0)
        original = slurm_backend.SlurmBackend.__init__

        def init(self: Any, given: RetryPolicy | None = None, **kwargs: Any) -> None:
            original(self, given or policy, **kwargs)

        slurm_backend.SlurmBackend.__init__ = init  # type: ignore[method-assign]

    from reconciler.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
