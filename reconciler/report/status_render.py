"""`reconcile status`: one row per unit and counts per stage x state, readable at a glance."""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

from rich.console import Console
from rich.table import Table

from reconciler.loop import PassResult
from reconciler.plan import STATES
from reconciler.report.progress import STATE_STYLE


def write_status(result: PassResult, out: TextIO) -> None:
    console = Console(file=out, highlight=False, soft_wrap=False, width=None if out.isatty() else 200)
    plan = result.plan
    table = Table(title=f"{plan.experiment}", show_lines=False, title_justify="left")
    for col in ("run", "stage", "task", "epoch", "state", "job", "attempts", "reason"):
        table.add_column(col, no_wrap=col != "reason")
    for p in plan.units:
        epoch = "-" if p.kind == "finetune" else ("base" if p.epoch is None else str(p.epoch))
        table.add_row(p.run, p.kind, p.task or "-", epoch, f"[{STATE_STYLE.get(p.state, '')}]{p.state}[/]",
                      p.job_id or "-", str(p.attempts), p.reason)
    console.print(table)
    counts: dict[str, Counter[str]] = {"finetune": Counter(), "eval": Counter()}
    for p in plan.units:
        counts[p.kind][p.state] += 1
    summary = Table(show_header=True, title="counts", title_justify="left")
    summary.add_column("stage")
    used = [s for s in STATES if counts["finetune"][s] or counts["eval"][s]]
    for s in used:
        summary.add_column(s, justify="right")
    for stage in ("finetune", "eval"):
        summary.add_row(stage, *[str(counts[stage][s]) for s in used])
    console.print(summary)
    read = ", ".join(f"{src} {time.strftime('%H:%M:%S', time.localtime(ts))}"
                     for src, ts in sorted(result.observation.read_at.items()))
    console.print(f"sources read: {read}")
    if not plan.scheduler_known:
        console.print(f"[yellow]scheduler unknown:[/] {plan.scheduler_note}")
    console.print(plan.summary_line())
