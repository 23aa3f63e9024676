"""Render a spec diff as JSON (format_version 1), text and Markdown, all three from the same record."""

from __future__ import annotations

import json
from typing import Any, TextIO

from reconciler.spec.diff import SpecDiff

FORMAT_VERSION = 1
COLLAPSE_AFTER = 10
VALUE_WIDTH = 80


def diff_record(diff: SpecDiff) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "old": diff.old_label,
        "new": diff.new_label,
        "experiment": diff.experiment,
        "differs": diff.differs,
        "summary": {"added": len(diff.added), "removed": len(diff.removed), "changed": len(diff.changed),
                    "unchanged": diff.unchanged},
        "summary_line": diff.summary_line(),
        "fields": [
            {"path": f.path, "change": f.change, "old": _jsonable(f.old), "new": _jsonable(f.new),
             "units": list(f.units), "described": f.described}
            for f in diff.fields
        ],
        "added": list(diff.added),
        "removed": list(diff.removed),
        "changed": [
            {"key": c.key, "old_fingerprint": c.old_fingerprint, "new_fingerprint": c.new_fingerprint,
             "fields": list(c.fields)}
            for c in diff.changed
        ],
        "notes": list(diff.notes),
    }


def _jsonable(value: Any) -> Any:
    # Spec values are YAML data; anything else (a date YAML parsed) is shown as text.
    return json.loads(json.dumps(value, default=str))


def write_json(diff: SpecDiff, out: TextIO) -> None:
    json.dump(diff_record(diff), out, indent=2)
    out.write("\n")


def show(value: Any) -> str:
    """One value on one line: JSON (strings quoted, so `"1e-5"` and `1e-05` differ), cut when long."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."


def field_line(field: dict[str, Any]) -> str:
    """`runs[rank8].parameters.lr: 1e-05 -> 5e-05 changes finetune/rank8 and its 2 evals`."""
    if field["change"] == "added":
        what = f"set to {show(field['new'])}"
    elif field["change"] == "removed":
        what = f"unset (was {show(field['old'])})"
    elif field["path"] == "(inputs)":
        what = "differ"
    else:
        what = f"{show(field['old'])} -> {show(field['new'])}"
    return f"{field['path']}: {what} changes {field['described']}"


def write_text(diff: SpecDiff, out: TextIO) -> None:
    record = diff_record(diff)
    out.write(f"Comparing {record['old']} -> {record['new']}\n")
    if record["fields"]:
        out.write("\nChanged fields:\n")
        for field in record["fields"]:
            out.write(f"  {field_line(field)}\n")
    for title, mark, keys in (("Units added", "+", record["added"]), ("Units removed", "-", record["removed"])):
        if keys:
            out.write(f"\n{title} ({len(keys)}):\n")
            for key in keys:
                out.write(f"  {mark} {key}\n")
    for note in record["notes"]:
        out.write(f"\nNote: {note}\n")
    out.write(f"\n{record['summary_line']}\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"<code>{text}</code>"


def write_markdown(diff: SpecDiff, out: TextIO) -> None:
    record = diff_record(diff)
    out.write(f"### reconcile diff: {_code(record['old'])} → {_code(record['new'])}\n\n")
    out.write(f"**{record['summary_line']}**\n\n")
    if record["fields"]:
        rows = ["| field | old | new | changes |", "|---|---|---|---|"]
        for f in record["fields"]:
            old = "" if f["change"] == "added" else _code(show(f["old"]))
            new = "" if f["change"] == "removed" else _code(show(f["new"]))
            rows.append(f"| {_code(f['path'])} | {_cell(old)} | {_cell(new)} | {_cell(f['described'])} |")
        _section(out, f"Changed fields ({len(record['fields'])})", "\n".join(rows) + "\n",
                 len(record["fields"]))
    for title, keys in (("Units added", record["added"]), ("Units removed", record["removed"])):
        if keys:
            body = "".join(f"- {_code(k)}\n" for k in keys)
            _section(out, f"{title} ({len(keys)})", body, len(keys))
    for note in record["notes"]:
        out.write(f"> **Note:** {_cell(note)}\n\n")


def _section(out: TextIO, title: str, body: str, count: int) -> None:
    if count > COLLAPSE_AFTER:
        out.write(f"<details><summary>{title}</summary>\n\n{body}\n</details>\n\n")
    else:
        out.write(f"#### {title}\n\n{body}\n")
