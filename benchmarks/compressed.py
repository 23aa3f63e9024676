"""`python -m benchmarks.compressed ARGS` is `reconcile ARGS` with SLURM's polling floor lowered (issue 18's
scheduler-call benchmark, time-compressed).

The product never polls SLURM more often than every 10 s. To watch "an hour" of jobs in a minute,
the benchmark compresses time 60x: the floor becomes BENCH_SLURM_FLOOR seconds (1 s standing for
60 s), and nothing else changes: the real CLI, backend, polling policy and cluster.
"""

from __future__ import annotations

import dataclasses
import os

from reconciler.backends.slurm import backend as slurm_backend


def main() -> None:
    floor = float(os.environ.get("BENCH_SLURM_FLOOR", "1"))
    slurm_backend.SlurmBackend.capabilities = dataclasses.replace(slurm_backend.CAPABILITIES, min_poll_seconds=floor)
    from reconciler.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
