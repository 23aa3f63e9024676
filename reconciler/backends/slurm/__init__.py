"""The SLURM backend: sbatch/squeue/sacct/scontrol/scancel behind the Backend protocol."""

from reconciler.backends.slurm.backend import CAPABILITIES, SlurmBackend, slurm_available
from reconciler.backends.slurm.commands import RetryPolicy

__all__ = ["CAPABILITIES", "RetryPolicy", "SlurmBackend", "slurm_available"]
