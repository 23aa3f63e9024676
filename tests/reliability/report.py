"""The reliability table: `python -m tests.reliability.report [PYTEST ARGS]`.

Runs the reliability suite (pytest tests/reliability, plus any arguments given, for example
`-m "not slurm"`), then prints one Markdown row per fault class and backend. Every number is
counted by the cases themselves from independent evidence (tests/reliability/harness.py), pass or
fail: cases, cases that did not run (skipped, or their fault never happened), faults injected,
reconciler runs, units, duplicate jobs, lost units, wrong states, runs that printed a traceback,
and cases whose own checks failed. Everything right of "units" is 0 when all is well. `--cases`
adds one row per case; `--save FILE` keeps the records. `--from FILE` prints the table of an earlier run's records (the JSON lines a
run writes to $RELIABILITY_RESULTS) without running anything.

A plain `pytest tests/reliability` prints the same table at the end of its output.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

COLUMNS = ("fault class", "backend", "cases", "not run", "faults injected", "runs", "units", "duplicates",
           "lost units", "wrong states", "tracebacks", "failed checks")
# Record fields summed into the columns after "cases" (older records lack the newer ones: 0).
FIELDS = ("ran", "faults", "runs", "units", "duplicates", "lost", "wrong_states", "tracebacks", "failed")
ORDER = ("crash point", "scheduler fault", "filesystem fault", "concurrency", "bad input", "security")


def _get(record: Any, name: str) -> Any:
    if isinstance(record, dict):
        return record.get(name, 1 if name == "ran" else 0)
    return getattr(record, name)


def aggregate(records: Iterable[Any]) -> list[tuple[Any, ...]]:
    rows: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
    for r in sorted(records, key=lambda r: (_rank(_get(r, "fault_class")), _get(r, "backend"))):
        key = (_get(r, "fault_class"), _get(r, "backend"))
        row = rows.setdefault(key, [0] * (len(FIELDS) + 1))
        row[0] += 1
        row[1] += 0 if int(_get(r, "ran")) else 1
        for i, name in enumerate(FIELDS[1:]):
            row[i + 2] += int(_get(r, name))
    return [(*key, *values) for key, values in rows.items()]


def _rank(fault_class: str) -> int:
    return ORDER.index(fault_class) if fault_class in ORDER else len(ORDER)


def format_table(records: Iterable[Any]) -> str:
    rows = aggregate(records)
    total = ["**total**", "", *(sum(r[i] for r in rows) for i in range(2, len(COLUMNS)))]
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"
    lines = ["| " + " | ".join(COLUMNS) + " |", rule]
    for row in [*rows, total]:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def column(table: str, fault_class: str, backend: str, name: str) -> int:
    """One number of a printed table (for tests of the table itself)."""
    lines = table.splitlines()
    heads = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [fault_class, backend]:
            return int(cells[heads.index(name)])
    raise KeyError((fault_class, backend))


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_cases(records: Iterable[Any]) -> str:
    """One row per case (what the table above adds up), with its wall time and, when it went wrong, why."""
    names = ("fault_class", "backend", "case", "ran", "faults", "runs", "units", "duplicates", "lost", "wrong_states",
             "tracebacks", "failed")
    lines = ["| fault class | backend | case | ran | faults | runs | units | duplicates | lost | wrong | tracebacks "
             "| failed | seconds | detail |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(records, key=lambda r: (_rank(_get(r, "fault_class")), _get(r, "backend"), _get(r, "case"))):
        cells = [_get(r, n) for n in names]
        detail = str(_get(r, "detail") or "")[:300] if any(int(_get(r, n)) for n in names[7:]) else ""
        cells += [f"{float(_get(r, 'seconds')):.0f}", detail.replace("\n", " ")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cases = "--cases" in argv
    argv = [a for a in argv if a != "--cases"]
    save = None
    if "--save" in argv:  # keep the records (JSON lines) for `--from` later
        i = argv.index("--save")
        save = Path(argv[i + 1])
        del argv[i:i + 2]
    if argv[:1] == ["--from"]:
        records = read_records(Path(argv[1]))
        print(format_table(records))
        if cases:
            print()
            print(format_cases(records))
        return 0
    import pytest

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        os.environ["RELIABILITY_RESULTS"] = str(results)
        os.environ["RELIABILITY_QUIET"] = "1"
        here = str(Path(__file__).resolve().parent)
        paths = [a for a in argv if not a.startswith("-") and Path(a.split("::")[0]).exists()]
        code = pytest.main([*([] if paths else [here]), "-q", "-p", "no:cacheprovider", *argv])
        records = read_records(results) if results.exists() else []
        if save is not None:
            save.write_text(results.read_text() if results.exists() else "")
    print()
    print(format_table(records))
    if cases:
        print()
        print(format_cases(records))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
