"""The journal is parsed in one go when every line is whole; a line cut anywhere reads as line by line."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.journal import Journal, JournalView, _fold


def per_line(text: str) -> JournalView:
    """The reference: each line parsed on its own, unparsable ones skipped."""
    view = JournalView()
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            _fold(view, rec)
    return view


def test_a_line_cut_at_any_point_reads_as_line_by_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("intent", unit="finetune/a", fingerprint="f", tag="t")
    journal.append("submitted", unit="finetune/a", job_id="7", fingerprint="f")
    head = journal.path.read_text()
    cut = json.dumps({"ts": 1.5, "event": "submitted", "unit": "eval/a/t, x/epoch0", "job_id": "8",
                      "fingerprint": "g", "after": ["7"]}, separators=(",", ":"), sort_keys=True)
    tail = json.dumps({"ts": 2.0, "event": "job_state", "unit": "finetune/a", "job_id": "7",
                       "state": "COMPLETED", "exit_code": 0}, separators=(",", ":"), sort_keys=True) + "\n"
    for k in range(len(cut) + 1):
        text = head + cut[:k] + "\n" + tail
        journal.path.write_text(text)
        got, want = journal.read(), per_line(text)
        assert (got.units, got.terminal, got.exit_codes, got.cancelled) == \
            (want.units, want.terminal, want.exit_codes, want.cancelled), f"cut after {k} characters"


def test_blank_lines_and_non_objects_are_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.path.write_text('\n[1, 2]\n{"event":"submitted","unit":"finetune/a","job_id":"3"}\n\n7\n')
    assert journal.read().history("finetune/a").jobs == [("3", None)]
