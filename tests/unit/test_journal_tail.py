"""Reading the journal again folds only what was appended since; the answer is always that of a
read from scratch, whatever happened to the file in between, and a view once returned never changes."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.journal import Journal, JournalView, _fold, _records

UNITS = ["finetune/r1", "eval/r1/t/epoch0", "eval/r1/t/epoch1"]


def from_scratch(path: Path) -> JournalView:
    view = JournalView()
    if not path.exists():
        return view
    for rec in _records(path.read_bytes().decode("utf-8", errors="replace").splitlines()):
        if isinstance(rec, dict):
            _fold(view, rec)
    return view


records = st.fixed_dictionaries({
    "event": st.sampled_from(["intent", "submitted", "adopted", "submit_failed", "job_state", "cancelled", "remedy"]),
    "unit": st.sampled_from(UNITS),
    "job_id": st.sampled_from(["11", "12", "13"]),
    "state": st.sampled_from(["COMPLETED", "FAILED", "RUNNING"]),
    "fingerprint": st.sampled_from(["a", "b", None]),
})
operations = st.one_of(
    st.tuples(st.just("append"), records),
    st.tuples(st.just("cut"), records),  # a record written without its newline (a crash mid-write)
    st.tuples(st.just("garbage"), st.binary(max_size=12)),
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=400)),
    st.tuples(st.just("rewrite"), st.lists(records, max_size=4)),  # a new file under the same name
    st.tuples(st.just("delete"), st.none()),
)


def line(rec: dict) -> bytes:
    return (json.dumps(rec, sort_keys=True) + "\n").encode()


def apply(path: Path, op: str, arg: object) -> None:
    if op == "append":
        with open(path, "ab") as fh:
            fh.write(line(arg))  # type: ignore[arg-type]
    elif op == "cut":
        with open(path, "ab") as fh:
            fh.write(line(arg)[:-1])  # type: ignore[arg-type]
    elif op == "garbage":
        with open(path, "ab") as fh:
            fh.write(arg)  # type: ignore[arg-type]
    elif op == "truncate" and path.exists():
        with open(path, "r+b") as fh:
            fh.truncate(min(int(arg), path.stat().st_size))  # type: ignore[call-overload]
    elif op == "rewrite":
        tmp = path.with_name("new.jsonl")
        tmp.write_bytes(b"".join(line(rec) for rec in arg))  # type: ignore[union-attr]
        os.replace(tmp, path)
    elif op == "delete":
        path.unlink(missing_ok=True)


@settings(max_examples=500, deadline=None)
@given(ops=st.lists(operations, min_size=1, max_size=25))
def test_every_read_equals_a_read_from_scratch_and_returned_views_never_change(ops: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        journal = Journal(state)
        returned: list[tuple[JournalView, JournalView]] = []
        for op, arg in ops:
            apply(journal.path, op, arg)
            view = journal.read()
            assert view == from_scratch(journal.path), (op, arg)
            returned.append((view, copy.deepcopy(view)))
            for earlier, as_it_was in returned:
                assert earlier == as_it_was


def test_appends_through_the_journal_are_seen_by_the_next_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("intent", unit="finetune/r1")
    first = journal.read()
    assert first.history("finetune/r1").open_intent
    journal.append("submitted", unit="finetune/r1", job_id="7", fingerprint="f")
    second = journal.read()
    assert second.history("finetune/r1").jobs == [("7", "f")] and not second.history("finetune/r1").open_intent
    assert first.history("finetune/r1").jobs == [] and first.history("finetune/r1").open_intent
    assert journal.read() is second  # nothing new: the same view, nothing parsed
