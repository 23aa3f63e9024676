"""The journal: an append-only record of intents and job ids (a cache of the scheduler), plus the lock."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from reconciler.jobs import TERMINAL_STATES
from reconciler.errors import LockHeld, ReconcilerError

JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = "lock"


@dataclass
class UnitHistory:
    """What the journal says about one unit."""

    # (job_id, fingerprint) of each submission, oldest first.
    jobs: list[tuple[str, str | None]] = field(default_factory=list)
    # An intent written with no job id after it: a crash between intent and sbatch's answer.
    open_intent: bool = False
    last_remedy: dict[str, Any] | None = None
    # (fingerprint, error) of each submission the scheduler (or rendering) refused for good.
    submit_failures: list[tuple[str | None, str]] = field(default_factory=list)


@dataclass
class JournalView:
    units: dict[str, UnitHistory] = field(default_factory=dict)
    # Terminal states seen before, by job id: no need to ask accounting again.
    terminal: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    # Every `remedy` event, in journal order (the summary lists them; a unit's history keeps its last).
    remedies: list[dict[str, Any]] = field(default_factory=list)

    def history(self, key: str) -> UnitHistory:
        return self.units.get(key) or UnitHistory()

    def job_ids(self) -> set[str]:
        return {job for h in self.units.values() for job, _ in h.jobs}

    def unit_of(self) -> dict[str, str]:
        return {job: key for key, h in self.units.items() for job, _ in h.jobs}

    def in_flight_ids(self) -> set[str]:
        return {job for job in self.job_ids() if job not in self.terminal}


class Journal:
    """Append-only JSON lines in `.reconciler/journal.jsonl`; every append is fsynced."""

    def __init__(self, state_dir: Path, folded: dict[str, Folded] | None = None):
        """`folded`: how far earlier reads folded the file, shared by whoever reads it again (a watch
        keeps it from pass to pass, engine.loop.PassMemory); None: this object's reads alone share it."""
        self.state_dir = state_dir
        self.path = state_dir / JOURNAL_NAME
        self.folded: dict[str, Folded] = {} if folded is None else folded

    def read(self, open_bytes: Callable[[Path], BinaryIO] | None = None) -> JournalView:
        """The journal folded into one view. Views are never changed once returned: a later read
        that finds new lines returns a new view. A pass opens it with its Reader's `open`
        (observe.reader), which records the file for the memo."""
        key = str(self.path)
        try:
            with (open_bytes or _open_bytes)(self.path) as fh:
                ident = _identity(os.fstat(fh.fileno()))
                data = fh.read()
        except FileNotFoundError:
            self.folded.pop(key, None)
            return JournalView()
        whole = data.rfind(b"\n") + 1  # past the last whole line; the rest may be a write in progress
        known = self.folded.get(key)
        if known is not None and known.ident == ident and whole >= known.length \
                and hashlib.sha1(memoryview(data)[:known.length]).digest() == known.digest:
            view, start, fresh = known.view, known.length, False  # only appended to since: fold the new lines
        else:
            view, start, fresh = JournalView(), 0, True
        if whole > start:
            view = _folded(view, data[start:whole], fresh=fresh)
            digest = hashlib.sha1(memoryview(data)[:whole]).digest()
            self.folded[key] = Folded(ident=ident, length=whole, digest=digest, view=view)
        elif fresh:
            self.folded[key] = Folded(ident=ident, length=0, digest=hashlib.sha1(b"").digest(), view=view)
        if whole < len(data):
            view = _folded(view, data[whole:], fresh=False)  # a last line without its newline counts too
        return view

    def append(self, event: str, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a journal.jsonl planted as a symlink must not make us append to its target.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise ReconcilerError(f"cannot open the journal {self.path}: {exc.strerror or exc}; "
                                  "nothing further was submitted") from exc
        try:
            # A previous write cut short leaves a line without newline; start a fresh one.
            if os.fstat(fd).st_size and _last_byte(self.path) != b"\n":
                line = "\n" + line
            data = line.encode()
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write to the journal")
            os.fsync(fd)
        except OSError as exc:
            raise ReconcilerError(f"cannot write the journal {self.path}: {exc.strerror or exc}; "
                                  "nothing further was submitted") from exc
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Folded:
    """How far this process has folded one journal file, and into what."""

    ident: tuple[int, int]  # st_dev, st_ino: a journal deleted and started again is read afresh
    length: int  # bytes folded (whole lines)
    digest: bytes  # of those bytes: anything but an append (an edit, a truncation) is read afresh
    view: JournalView


# A watch reads the journal up to three times a pass, and every pass: 27,000 lines at 10k units,
# 50 ms each time. Appends are all that happen to it between reads; only they are parsed again
# (Journal.folded, kept by the watch).


def _open_bytes(path: Path) -> BinaryIO:
    return open(path, "rb")


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _folded(base: JournalView, data: bytes, fresh: bool) -> JournalView:
    """`base` with the records in `data` folded in. Unless `fresh`, `base` is left as it was:
    the histories the new records touch are copied first, and the view's tables."""
    records = [rec for rec in _records(data.decode("utf-8", errors="replace").splitlines()) if isinstance(rec, dict)]
    if fresh:
        view = base
    else:
        view = JournalView(units=dict(base.units), terminal=dict(base.terminal), exit_codes=dict(base.exit_codes),
                           cancelled=set(base.cancelled), remedies=list(base.remedies))
        for key in {rec.get("unit") for rec in records if isinstance(rec.get("unit"), str)}:
            h = view.units.get(key)
            if h is not None:
                view.units[key] = UnitHistory(jobs=list(h.jobs), open_intent=h.open_intent, last_remedy=h.last_remedy,
                                              submit_failures=list(h.submit_failures))
    for rec in records:
        _fold(view, rec)
    return view


def _records(lines: list[str]) -> list[Any]:
    """Every line that parses. One parse of the whole file when all of them do (twice as fast at 100k lines)."""
    lines = list(filter(str.strip, lines))
    try:
        records = json.loads("[" + ",".join(lines) + "]")
        # A line cut short cannot merge with the next into one valid element without changing the count.
        if isinstance(records, list) and len(records) == len(lines):
            return records
    except ValueError:
        pass
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash or a full disk: the rest still counts
    return out


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def _fold(view: JournalView, rec: dict[str, Any]) -> None:
    # Called once per journal line (tens of thousands a pass): the most frequent events come first, and
    # a unit's history is made once (not setdefault(key, UnitHistory()), which builds one every line).
    event = rec.get("event")
    if event == "submitted" or event == "adopted":
        key = rec.get("unit")
        job_id = rec.get("job_id")
        if isinstance(key, str) and job_id:
            h = view.units.get(key) or _new_history(view, key)
            job = str(job_id)
            # A scan, not a set: a unit has one or two jobs, and a set per line cost more than the scan.
            for known, _ in h.jobs:
                if known == job:
                    break
            else:
                h.jobs.append((job, rec.get("fingerprint")))
            h.open_intent = False
    elif event == "job_state":
        job_id = rec.get("job_id")
        if job_id and rec.get("state") in TERMINAL_STATES:
            job = str(job_id)
            view.terminal[job] = rec["state"]
            view.exit_codes[job] = rec.get("exit_code")
    elif event == "intent":
        key = rec.get("unit")
        if isinstance(key, str):
            h = view.units.get(key) or _new_history(view, key)
            h.open_intent = True
    elif event == "submit_failed" or event == "submit_deferred":  # sbatch said no: no job
        key = rec.get("unit")
        if isinstance(key, str):
            h = view.units.get(key) or _new_history(view, key)
            h.open_intent = False
            if event == "submit_failed":
                h.submit_failures.append((rec.get("fingerprint"), str(rec.get("error") or "")))
    elif event == "cancelled":
        if rec.get("job_id"):
            view.cancelled.add(str(rec["job_id"]))
    elif event == "remedy":
        view.remedies.append(rec)
        key = rec.get("unit")
        if isinstance(key, str):
            h = view.units.get(key) or _new_history(view, key)
            h.last_remedy = rec


def _new_history(view: JournalView, key: str) -> UnitHistory:
    h = view.units[key] = UnitHistory()
    return h


@contextmanager
def experiment_lock(state_dir: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """One reconciler acts on an experiment at a time. The lock dies with its process (flock)."""
    path = state_dir / LOCK_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: the lock file is truncated and written; never through a planted symlink.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ReconcilerError(f"cannot create the lock {path}: {exc.strerror or exc}; nothing was done") from exc
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise LockHeld(f"another reconciler{holder} is acting on this experiment "
                                   f"({state_dir.parent}); wait for it to finish, or use --wait SECONDS") from None
                time.sleep(0.2)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        except OSError:
            pass  # who holds the lock is only for the message of the next one (a full disk must not stop us)
        yield
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f" (pid {info['pid']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
