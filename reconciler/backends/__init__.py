"""Backend registry: pick a scheduler by name (`local`, `slurm`, `auto`)."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.backends.base import Backend
from reconciler.errors import UsageError

BACKEND_NAMES = ("auto", "local", "slurm")

def make_backend(name: str, state_dir: Path) -> tuple[Backend, str]:
    """The backend and a one-line note saying which was picked (and why, for `auto`)."""
    if name == "local":
        return _local(state_dir), "backend: local"
    if name == "slurm":
        from reconciler.backends.slurm.backend import SlurmBackend

        return SlurmBackend(), "backend: slurm"
    if name == "auto":
        from reconciler.backends.slurm.backend import slurm_available

        if slurm_available():
            from reconciler.backends.slurm.backend import SlurmBackend

            return SlurmBackend(), "backend: slurm (auto: sbatch found and the controller answers)"
        return _local(state_dir), "backend: local (auto: no reachable SLURM controller)"
    raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


# How many jobs the local backend runs at once (default: one per CPU). Benchmarks with sleeping jobs
# set more slots than cores, as a cluster has more GPUs than a controller has cores.
SLOTS_ENV = "RECONCILER_LOCAL_SLOTS"


def _local(state_dir: Path) -> Backend:
    from reconciler.backends.local.backend import LocalBackend

    return LocalBackend(state_dir / "local", max_concurrent=_slots())


def _slots() -> int | None:
    raw = os.environ.get(SLOTS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{SLOTS_ENV}={raw!r}: expected a whole number of job slots >= 1")
    return int(raw)
