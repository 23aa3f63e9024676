"""Named crash points: a test hook that SIGKILLs the reconciler at one chosen step of a pass.

Why this is in the product: the promise "kill it at any moment and nothing is lost or run
twice" can only be proven by killing it at every step that matters, one at a time, and
checking that a fresh pass converges (tests/reliability/test_crashpoints.py). A SIGKILL at a
random moment rarely lands between two writes; a named point always does.

Cost when unset: one dictionary lookup per call, at a handful of places per submission. No
behaviour changes unless `RECONCILER_CRASH_AT` names the point. `NAME@N` kills at the N-th
time the point is reached in this process (1-based), `NAME` at the first.

Points (where the call sits):
    intent-journaled   apply.py: the intent is in the journal, the scheduler not asked yet
    submit-returned    apply.py: the scheduler gave a job id, the journal does not have it yet
    job-id-journaled   apply.py: the job id is in the journal
    state-write        report/state_file.py: state.json's temporary file is written, not renamed
    log-write          records/log_append.py: half of a log append is on disk
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

ENV = "RECONCILER_CRASH_AT"
POINTS = ("intent-journaled", "submit-returned", "job-id-journaled", "state-write", "log-write")

# How often this process reached each point. Process-wide by nature, and so kept at module level:
# `NAME@N` means the N-th time in this process (the process is what the crash kills, and what
# RECONCILER_CRASH_AT, read from its environment, is set for); the hook sits in writers deep below
# any object a pass could hand it, and it does nothing unless the variable is set.
_hits: Counter[str] = Counter()


def crash_point(name: str, partial: Callable[[], object] | None = None) -> None:
    """SIGKILL this process here when RECONCILER_CRASH_AT names this point (see the module doc).

    `partial`, when given, runs just before the kill: it leaves the half-done write a real
    crash would leave (for example the first half of a log append).
    """
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] != (int(nth) if nth.isdigit() else 1):
        return
    if partial is not None:
        partial()
    os.kill(os.getpid(), signal.SIGKILL)
