"""Job scripts and trainer/eval configs rendered from the spec: part of desired state."""

from __future__ import annotations

from reconciler.errors import ReconcilerError


class ScaffoldError(ReconcilerError):
    """A value cannot be rendered safely (a path outside the experiment, a bad override): exit 2."""

    exit_code = 2
