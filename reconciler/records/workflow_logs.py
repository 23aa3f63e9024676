"""Logs in the workflows' format: `{experiment}/logs/run-{experiment,torchtune,inspect}.log`, appended each
pass, and `summarize-experiment.log`. Here the writers per log file; what a pass logs is built in
records/pass_entries.py (with unit_entries.py and log_format.py), and appended by records/log_append.py."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.records.log_append import append_entries
from reconciler.records.log_format import Entry, block
from reconciler.records.pass_entries import pass_entries
from reconciler.records.state_file import (
    StateFile,
    fmt_ts,
    read_state,
    update_legacy_summary,
    write_state,
)
from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.write import check_inside
from reconciler.spec.units import Desired

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult
    from reconciler.records.summary_model import Summary

LOG_FILES: dict[str, str] = {
    "experiment": "run-experiment.log",
    "finetune": "run-torchtune.log",
    "eval": "run-inspect.log",
}
SUMMARIZE_LOG = "summarize-experiment.log"
ALL_COMPLETE_LINE = re.compile(r"^\[[\d :-]+\] ALL_COMPLETE\b")


@dataclass
class PassRecord:
    """What record_pass left behind."""

    state: StateFile | None
    entries: list[Entry] = field(default_factory=list)
    legacy_updated: bool = False
    warnings: list[str] = field(default_factory=list)


def record_pass(desired: Desired, result: PassResult, now: float | None = None) -> PassRecord:
    """Everything a pass leaves for people: logs, then state.json, then the legacy table.

    Logs first: they compare with the previous state.json, which this call then replaces. A disk
    problem here is reported as a warning, never allowed to stop the reconciler.
    """
    now = time.time() if now is None else now
    record = PassRecord(state=None)
    previous = read_state(desired.layout.state_dir)
    try:
        record.entries = write_pass_logs(desired, result, now, previous=previous)
    except (OSError, ScaffoldError) as exc:
        record.warnings.append(f"cannot write logs in {desired.layout.logs_dir}: {exc}")
    try:
        record.state = write_state(desired, result, now, previous=previous)
        record.legacy_updated = update_legacy_summary(desired.layout.experiment_dir, record.state)
    except OSError as exc:
        record.warnings.append(f"cannot write {desired.layout.state_dir / 'state.json'}: {exc}")
    return record


def write_pass_logs(desired: Desired, result: PassResult, now: float | None = None,
                    previous: StateFile | None = None) -> list[Entry]:
    """Append this pass's entries (compared with `previous`, read from state.json when not given)."""
    now = time.time() if now is None else now
    if previous is None:
        previous = read_state(desired.layout.state_dir)
    entries = pass_entries(desired, result, previous, now)
    if previous is None:
        # No state.json (deleted, or the first pass): a log that already says ALL_COMPLETE keeps its one.
        entries = [e for e in entries if not (e.action == "ALL_COMPLETE" and
                                               _says_all_complete(desired.layout.logs_dir / LOG_FILES[e.log]))]
    # A logs directory that is a symlink out of the experiment is not ours to write in.
    check_inside(desired.layout.logs_dir, (desired.layout.experiment_dir,))
    for log, filename in LOG_FILES.items():
        texts = [e.text for e in entries if e.log == log]
        if texts:
            append_entries(desired.layout.logs_dir / filename, texts)
    return entries


def _says_all_complete(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(ALL_COMPLETE_LINE.match(line) for line in fh)
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------ summarize-experiment.log


def summary_entries(summary: Summary, path: Path, now: float) -> list[str]:
    """EXTRACT_LOSS for each fine-tune whose training stdout (or its loss lines) is missing, then WRITE_SUMMARY."""
    ts = fmt_ts(now) or ""
    out = []
    for training in summary.training:
        if training.final_loss is not None:
            continue
        why = training.note or "no loss lines"
        where = f" in {training.stdout}" if training.stdout else ""
        out.append(block(ts, "EXTRACT_LOSS", training.run, ("Details", f"{why}{where}"),
                         ("Result", "N/A recorded for the final loss")))
    out.append(block(ts, "WRITE_SUMMARY", summary.experiment, ("Details", str(path)),
                     ("Result", f"{summary.units_done}/{summary.units_total} units done"
                                + ("" if summary.complete else "; partial results"))))
    return out


def record_summary(desired: Desired, summary: Summary, path: Path, now: float | None = None) -> None:
    """Append the summary's entries to logs/summarize-experiment.log (a disk problem is the caller's warning)."""
    check_inside(desired.layout.logs_dir, (desired.layout.experiment_dir,))
    append_entries(desired.layout.logs_dir / SUMMARIZE_LOG, summary_entries(summary, path, time.time() if now is None
                                                                            else now))
