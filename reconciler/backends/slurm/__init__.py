"""The SLURM backend: sbatch/squeue/sacct/scontrol/scancel behind the Backend protocol."""

from reconciler.backends.slurm.backend import CAPABILITIES, SlurmBackend, slurm_available
from reconciler.backends.slurm.commands import CALLS, RetryPolicy

__all__ = ["CALLS", "CAPABILITIES", "RetryPolicy", "SlurmBackend", "slurm_available"]
