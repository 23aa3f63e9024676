"""The last plan, kept with the stat of every file its pass read; reused while each stats the same.

A plan is a pure function of the spec text, the files observed and the scheduler's answer. A pass
given a recording Reader (observe.reader) records every path it stats, lists or reads, before reading it. The
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
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from reconciler.jobs import Snapshot
from reconciler.fsutil import sweep_stale_temps
from reconciler.observe.reader import Stat, unchanged
from reconciler.observe.scheduler import Question
from reconciler.plan.planner import Plan, PlannedUnit
from reconciler.plan.remedies import Remedy, RemedyChoice

MEMO_NAME = "plan-memo"
FORMAT = 5  # 2: stats hold the ctime; 3: presumed plans, the backend asked; 4: evals sharing a job;
# 5: the remedy a retry carries
# Coarser than any filesystem's mtime granularity we know of (FAT: 2 s; ext4, XFS, NFS: 1 s or finer).
RACY_NS = 2_000_000_000

_UNIT_FIELDS = tuple(f.name for f in fields(PlannedUnit))
_REMEDY = _UNIT_FIELDS.index("remedy")


def _row(unit: PlannedUnit) -> tuple[object, ...]:
    """A planned unit as marshal stores it: its fields in order, the remedy it carries as a tuple."""
    row = [getattr(unit, name) for name in _UNIT_FIELDS]
    choice = unit.remedy
    row[_REMEDY] = None if choice is None else (*astuple(choice.remedy), choice.new)
    return tuple(row)


def _unit(row: list[object] | tuple[object, ...]) -> PlannedUnit:
    kept = row[_REMEDY]
    if kept is None:
        return PlannedUnit(*row)  # type: ignore[arg-type]
    *values, new = kept  # type: ignore[misc]
    return PlannedUnit(*row[:_REMEDY], RemedyChoice(Remedy(*values), new),  # type: ignore[arg-type]
                       *row[_REMEDY + 1:])


@dataclass(frozen=True)
class Memo:
    plan: Plan
    question: Question | None  # what the pass asked the scheduler (None: nothing)
    answer: str  # digest of what it answered


def code_signature() -> str:
    """The running reconciler's code: an edited module (an editable install) must not reuse a memo.

    Not cached: it costs 2 ms (a stat per module), and a `reconcile plan` asks for it once."""
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
        if not unchanged(doc["paths"], doc["stats"]):
            return None
        kept = doc["plan"]
        plan = Plan(experiment=kept[0], scheduler_known=kept[1], scheduler_note=kept[2], warnings=tuple(kept[3]),
                    units=tuple(_unit(row) for row in kept[4]), presumed_empty=kept[5], backend=kept[6])
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


def settled(record: dict[str, Stat], now_ns: int) -> bool:
    """No input changed within RACY_NS of `now_ns` (read from the file system's clock)."""
    newest = max((max(stat[0], stat[1]) for stat in record.values() if stat is not None), default=0)
    return newest < now_ns - RACY_NS


def remember(state_dir: Path, key: str, record: dict[str, Stat], plan: Plan,
             question: Question | None, answer: str) -> bool:
    """Write the memo; False when it was not (an input too recent to trust, or the write failed)."""
    rows = [_row(unit) for unit in plan.units]
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
