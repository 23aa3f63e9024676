"""The last plan, kept with the stat of every file its pass read; reused while each stats the same.

A plan is a pure function of the spec text, the files observed and the scheduler's answer. A pass
run under `inputs.recording()` notes every path it stats, lists or reads, before reading it. The
next `reconcile plan` stats those paths again: if each gives the same (mtime, ctime, size, inode), the
spec text and options are the same, and the scheduler gives the same answer to the same question,
the pass would plan the same, so the remembered plan is returned without expanding the spec,
reading the journal or any header. Anything else runs the pass, which is remembered in turn.

As git does for its index, a memo is not written while an input's mtime or ctime is within
RACY_NS of the memo's own: a file changed again within the same clock tick would keep both.

This module imports nothing of the spec machinery (pydantic, PyYAML, the expansion) until a plan
has to be made: a recalled plan costs a new process 30 ms of imports instead of 150.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.backends import Question, ask
from reconciler.backends.base import Backend, Snapshot
from reconciler.fsutil import sweep_stale_temps
from reconciler.observe import inputs
from reconciler.plan.planner import Plan, PlannedUnit, Policy
from reconciler.spec.location import spec_path, spec_text

if TYPE_CHECKING:
    from reconciler.spec.units import Desired

MEMO_NAME = "plan-memo"
FORMAT = 3  # 2: stats hold the ctime; 3: presumed plans, the backend asked
# Coarser than any filesystem's mtime granularity we know of (FAT: 2 s; ext4, XFS, NFS: 1 s or finer).
RACY_NS = 2_000_000_000

_UNIT_FIELDS = tuple(f.name for f in fields(PlannedUnit))


@dataclass(frozen=True)
class Memo:
    plan: Plan
    question: Question | None  # what the pass asked the scheduler (None: nothing)
    answer: str  # digest of what it answered


@cache
def code_signature() -> str:
    """The running reconciler's code: an edited module (an editable install) must not reuse a memo."""
    root = Path(__file__).parent.parent  # the whole package, not engine/ alone
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        digest.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def memo_key(spec_file: str, text: str, options: tuple[object, ...]) -> str:
    digest = hashlib.sha256(code_signature().encode())
    digest.update(f"\0{spec_file}\0{options!r}\0".encode())
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def answer_digest(snapshot: Snapshot | None, note: str) -> str:
    """The scheduler's answer in a stable form (job order and dict order do not matter)."""
    jobs = None if snapshot is None else (sorted(map(repr, snapshot.jobs.values())), sorted(snapshot.missing))
    return hashlib.sha256(repr((jobs, note)).encode()).hexdigest()


def recall(state_dir: Path, key: str) -> Memo | None:
    """The remembered plan if its key matches and every input it read stats the same; else None."""
    try:
        raw = (state_dir / MEMO_NAME).read_bytes()
    except OSError:
        return None
    # A torn or foreign file is a miss, never an error: this is only a cache.
    if len(raw) < 4 or zlib.crc32(memoryview(raw)[4:]) != int.from_bytes(raw[:4], "big"):
        return None
    try:
        doc = marshal.loads(raw[4:])
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
            return None
        if not inputs.unchanged(doc["paths"], doc["stats"]):
            return None
        kept = doc["plan"]
        plan = Plan(experiment=kept[0], scheduler_known=kept[1], scheduler_note=kept[2], warnings=tuple(kept[3]),
                    units=tuple(PlannedUnit(*row) for row in kept[4]), presumed_empty=kept[5], backend=kept[6])
        question = doc["question"]
        return Memo(plan=plan, question=None if question is None else (question[0], tuple(question[1])),
                    answer=doc["answer"])
    except (ValueError, EOFError, TypeError, KeyError, IndexError):
        return None


def fs_clock_ns(directory: Path) -> int | None:
    """The file system's clock (the one that stamps the inputs' mtimes): a new file's mtime."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{MEMO_NAME}.", suffix=".tmp", dir=directory)
    except OSError:
        return None
    try:
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
        os.unlink(tmp)


def settled(record: dict[str, inputs.Stat], now_ns: int) -> bool:
    """No input changed within RACY_NS of `now_ns` (read from the file system's clock)."""
    newest = max((max(stat[0], stat[1]) for stat in record.values() if stat is not None), default=0)
    return newest < now_ns - RACY_NS


def remember(state_dir: Path, key: str, record: dict[str, inputs.Stat], plan: Plan,
             question: Question | None, answer: str) -> bool:
    """Write the memo; False when it was not (an input too recent to trust, or the write failed)."""
    rows = [tuple(getattr(unit, name) for name in _UNIT_FIELDS) for unit in plan.units]
    doc = {
        "format": FORMAT, "key": key, "paths": list(record), "stats": list(record.values()),
        "question": question, "answer": answer,
        "plan": (plan.experiment, plan.scheduler_known, plan.scheduler_note, list(plan.warnings), rows,
                 plan.presumed_empty, plan.backend),
    }
    body = marshal.dumps(doc)
    target = state_dir / MEMO_NAME
    sweep_stale_temps(target)  # what a writer killed before its rename left
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{MEMO_NAME}.", suffix=".tmp", dir=state_dir)
    except OSError:
        return False
    try:
        os.chmod(tmp, 0o644)  # as the journal and the header cache (mkstemp makes it 0600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(zlib.crc32(body).to_bytes(4, "big"))
            fh.write(body)  # not concatenated first: at 100k units the body is 40 MB
            fh.flush()
            written = os.fstat(fh.fileno()).st_mtime_ns  # the file system's clock, as the inputs' mtimes
        if not settled(record, written):
            os.unlink(tmp)
            return False
        os.replace(tmp, target)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


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
    from reconciler.app import recorded_backend

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
    with inputs.recording() as record:
        result = run_pass(desired, backend, policy, act=False, answered=answered, presume_empty=presume)
    remember(state_dir, key, record, result.plan, result.question,
             answer_digest(result.snapshot, result.plan.scheduler_note))
    return result.plan, desired
