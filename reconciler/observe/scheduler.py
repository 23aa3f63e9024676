"""Asking the scheduler one batched question (tag prefix, in-flight ids) and what an answer or its absence means."""

from __future__ import annotations

from reconciler.backends.base import Backend
from reconciler.errors import BackendUnavailable
from reconciler.jobs import Snapshot

# What one batched query asks: (tag prefix, in-flight job ids).
Question = tuple[str, tuple[str, ...]]


def ask(backend: Backend | None, question: Question | None) -> tuple[Snapshot | None, str]:
    """The scheduler's answer, or None with the reason it is unknown (`backend` None: --offline;
    `question` None: nothing in flight and nothing left to do, so nothing to ask)."""
    if backend is None:
        return None, "offline: the scheduler was not asked"
    if question is None:
        return Snapshot(), ""
    try:
        return backend.query(question[0], list(question[1])), ""
    except BackendUnavailable as exc:
        return None, f"scheduler unavailable: {exc}"
