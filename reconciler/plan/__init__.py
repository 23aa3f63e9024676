"""The planner: observation in, plan out; pure (tests/unit/test_boundaries.py checks it loads nothing that does I/O)."""
