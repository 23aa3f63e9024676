"""Fake SLURM commands for tests that need no cluster: scripts that log their calls and print canned answers."""

from __future__ import annotations

from pathlib import Path

from reconciler.backends.slurm.commands import RetryPolicy

# Retries that finish in well under a second, so failure tests stay fast.
FAST_RETRY = RetryPolicy(attempts=3, total_seconds=5.0, initial_wait=0.02, max_wait=0.1, timeout=30.0)


def write_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake(bin_dir: Path, name: str, body: str) -> Path:
    """A fake command that logs each call to `{name}.calls` beside it, then runs `body` (bash)."""
    calls_file = bin_dir / f"{name}.calls"
    return write_executable(bin_dir / name, f'#!/bin/bash\necho "$*" >> "{calls_file}"\n{body}\n')


def calls(bin_dir: Path, name: str) -> int:
    """How many times the fake `name` ran."""
    path = bin_dir / f"{name}.calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def squeue_line(job_id: str, state: str, tag: str, name: str = "job") -> str:
    """A printf command producing one squeue line in the backend's format."""
    fields = [job_id, state, "None", "(null)", "2026-11-22T08:00:00", "N/A", tag, name]
    return "printf '%s\\n' " + "'" + "\x1f".join(fields) + "'"
