"""The local backend: jobs run as detached processes, with SLURM's states and dependencies."""
