"""The planner and the remedy a retry takes: pure (tests/unit/test_boundaries.py checks they load nothing
that does I/O)."""
