"""Pause Python's cyclic garbage collector while a pass builds its objects.

A pass over 100k units allocates millions of small objects that live until the pass ends and form
no cycles: every generation-2 collection rescans all of them, which made a 10k-unit pass ~40% slower.
Reference counting still frees everything as usual; cycles left behind are collected when the
collector resumes.
"""

from __future__ import annotations

import atexit
import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def gc_paused() -> Iterator[None]:
    if not gc.isenabled():
        yield  # nested, or paused by the caller: leave it as it is
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def without_gc(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with gc_paused():
            return fn(*args, **kwargs)
    return wrapper


def one_shot_command(own_process: bool) -> None:
    """For commands that read, print and exit (plan, status): no collector at all.

    Everything they build lives until the process ends, so collections only rescan it; and
    freezing at exit spares the interpreter's final collection over millions of objects. At 100k
    units this took `reconcile plan` from 12.7 s to 7.2 s. Not for a watch, which runs for days,
    and only when the process is the command's own (`own_process`, the CLI decides): a command
    invoked in-process (click's CliRunner, in tests) must not switch the collector off for its caller.
    """
    if not own_process:
        return
    gc.disable()
    atexit.register(gc.freeze)
