"""Scale and makespan benchmarks for issue 9: `python -m benchmarks` (see benchmarks/README.md)."""
