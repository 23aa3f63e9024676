"""`reconcile diff`: two specs compared, each from a path or `git:REV:path` (read with `git show`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.spec.diff import SpecDiff, diff_specs
from reconciler.spec.load import SPEC_FILENAME, LoadedSpec, load_spec

GIT_PREFIX = "git:"
GIT_TIMEOUT = 30


def diff_sources(old: str, new: str) -> SpecDiff:
    """The two specs as desired states, compared unit by unit."""
    return diff_specs(load_source(old), load_source(new), old_label=old, new_label=new)


def load_source(source: str) -> LoadedSpec:
    """A path (experiment dir or file), or `git:REV:path` read with `git show REV:path` (path from the repo root)."""
    if not source.startswith(GIT_PREFIX):
        return load_spec(Path(source))
    rev, sep, path = source[len(GIT_PREFIX):].partition(":")
    if not sep or not rev or not path:
        raise ReconcilerError(f"{source!r}: expected git:REV:path, e.g. git:origin/main:exp/experiment_summary.yaml")
    if _git(["cat-file", "-t", f"{rev}:{path}"], source).strip() == "tree":
        path = f"{path.rstrip('/')}/{SPEC_FILENAME}"
    text = _git(["show", f"{rev}:{path}"], source)
    # Relative paths in the old spec resolve where the file sits in the working tree.
    return load_spec(Path(path), text=text)


def _git(args: list[str], source: str) -> str:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise ReconcilerError(f"{source}: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise ReconcilerError(f"{source}: git {args[0]} timed out after {GIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise ReconcilerError(f"{source}: git {args[0]} failed: {detail}")
    return proc.stdout
