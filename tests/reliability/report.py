"""The reliability table: `python -m tests.reliability.report [PYTEST ARGS]`.

Runs the reliability suite (pytest tests/reliability, plus any arguments given, for example
`-m "not slurm"`), then prints one Markdown row per fault class and backend: faults injected,
reconciler runs, units, duplicate jobs, lost units, wrong states. `--cases` adds one row per
case. `--from FILE` prints the table of an earlier run's records (the JSON lines a run writes
to $RELIABILITY_RESULTS) without running anything.

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

COLUMNS = ("fault class", "backend", "cases", "faults injected", "runs", "units", "duplicates", "lost units",
           "wrong states")
ORDER = ("crash point", "scheduler fault", "filesystem fault", "concurrency", "bad input", "security")


def _get(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def aggregate(records: Iterable[Any]) -> list[tuple[Any, ...]]:
    rows: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
    for r in sorted(records, key=lambda r: (_rank(_get(r, "fault_class")), _get(r, "backend"))):
        key = (_get(r, "fault_class"), _get(r, "backend"))
        row = rows.setdefault(key, [0, 0, 0, 0, 0, 0, 0])
        for i, name in enumerate(("faults", "runs", "units", "duplicates", "lost", "wrong_states")):
            row[i + 1] += int(_get(r, name))
        row[0] += 1
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


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_cases(records: Iterable[Any]) -> str:
    """One row per case (what the table above adds up), with its wall time."""
    lines = ["| fault class | backend | case | faults | runs | units | duplicates | lost | wrong | seconds |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (_rank(_get(r, "fault_class")), _get(r, "backend"), _get(r, "case"))):
        cells = [_get(r, n) for n in ("fault_class", "backend", "case", "faults", "runs", "units", "duplicates",
                                      "lost", "wrong_states")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + f" | {_get(r, 'seconds'):.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cases = "--cases" in argv
    argv = [a for a in argv if a != "--cases"]
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
        code = pytest.main([here, "-q", "-p", "no:cacheprovider", *argv])
        records = read_records(results) if results.exists() else []
    print()
    print(format_table(records))
    if cases:
        print()
        print(format_cases(records))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
