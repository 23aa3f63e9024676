"""`reconcile plan`: the remembered plan (engine.memo) while its inputs stat the same, else a pass.

Sits above the loop: it runs `run_pass` only when the memo cannot answer, and imports the loop (and
with it the spec machinery) only then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.backends.base import Backend
from reconciler.jobs import Snapshot
from reconciler.engine.memo import answer_digest, memo_key, recall, remember
from reconciler.observe.reader import Reader
from reconciler.observe.scheduler import ask
from reconciler.plan.planner import Plan, Policy
from reconciler.spec.location import spec_path, spec_text

if TYPE_CHECKING:
    from reconciler.spec.units import Desired


def plan_pass(target: Path, options: tuple[object, ...], policy_for: Callable[[Desired], Policy],
              backend_for: Callable[[Path], Backend] | None) -> tuple[Plan, Desired | None]:
    """`reconcile plan`: the remembered plan while every input stats as it did, else a pass, remembered.

    `options` are the command's own (they are part of the key); `backend_for` is None offline.
    The Desired is None when the plan was recalled: the spec was not even parsed.
    """
    path = spec_path(target)
    spec_file = os.path.abspath(path)
    state_dir = Path(os.path.dirname(spec_file), ".reconciler")
    text = spec_text(path)
    # The backend recorded at the last apply is what `auto` asks: a new record is another question.
    from reconciler.engine.backend_record import recorded_backend

    key = None if text is None else memo_key(spec_file, text, (options, backend_for is None,
                                                                recorded_backend(state_dir)))
    answered = None
    backend: Backend | None = None
    memo = None if key is None else recall(state_dir, key)
    if memo is not None:
        if backend_for is None:
            snapshot, note = ask(None, None)
        elif memo.question is None:
            snapshot, note = Snapshot(), ""  # the pass did not ask: no backend to start
        else:
            backend = backend_for(state_dir)
            snapshot, note = ask(backend, memo.question)
        if answer_digest(snapshot, note) == memo.answer:
            return memo.plan, None
        answered = (memo.question, snapshot, note)
    from reconciler.engine.loop import load_desired, run_pass  # the spec machinery: only to plan afresh

    desired = load_desired(target)
    policy = policy_for(desired)
    if backend is None and backend_for is not None:
        backend = backend_for(desired.layout.state_dir)
    # Offline, the plan presumes an empty scheduler (what a pull request's CI wants to see).
    presume = backend_for is None
    if key is None or desired.layout.state_dir != state_dir or not state_dir.is_dir():
        return run_pass(desired, backend, policy, act=False, answered=answered, presume_empty=presume).plan, desired
    reader = Reader({})  # records every file the pass reads: the memo's inputs
    result = run_pass(desired, backend, policy, act=False, answered=answered, presume_empty=presume, reader=reader)
    assert reader.record is not None
    remember(state_dir, key, reader.record, result.plan, result.question,
             answer_digest(result.snapshot, result.plan.scheduler_note))
    return result.plan, desired
