"""A plan as Markdown, made to be posted as a pull-request comment."""

from __future__ import annotations

from typing import TextIO

from reconciler.plan import ACTIONS, Plan

COLLAPSE_AFTER = 10


def write_markdown(plan: Plan, out: TextIO) -> None:
    out.write(f"### reconcile plan: `{plan.experiment}`\n\n**{plan.summary_line()}**\n\n")
    if not plan.scheduler_known:
        out.write(f"> Scheduler state unknown ({plan.scheduler_note}): nothing is submitted on unknown.\n\n")
    for action in ACTIONS:
        rows = [p for p in plan.units if p.action == action]
        if not rows:
            continue
        table = ["| unit | state | reason |", "|---|---|---|"]
        table += [f"| `{p.key}` | {p.state} | {p.reason.replace('|', '/')} |" for p in rows]
        body = "\n".join(table) + "\n"
        title = f"{action} ({len(rows)})"
        if len(rows) > COLLAPSE_AFTER:
            out.write(f"<details><summary>{title}</summary>\n\n{body}\n</details>\n\n")
        else:
            out.write(f"#### {title}\n\n{body}\n")
