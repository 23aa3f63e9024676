"""Render a Summary as summary.md (the workflows' sections), JSON or CSV. Renderers write to a given stream."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import TextIO

from reconciler.records.state_file import LEGACY_STATUS, fmt_duration
from reconciler.records.summary_model import BestRun, EvalResult, Summary

SATURATED = 0.95
RUN_TYPE_LABEL = {"fine-tuned": "Fine-tuned", "control": "Control", "eval-only": "Eval-only"}
CSV_COLUMNS = (
    "experiment", "run", "run_type", "task", "epoch", "state", "metric", "value", "balanced_accuracy", "f1",
    "precision_1", "recall_1", "recall_0", "samples", "total_samples", "partial", "final_loss", "total_steps",
    "train_duration_seconds", "log",
)


def num(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """`digits` significant digits, as the workflows print losses and accuracies: 0.8, 0.8333, 10.48, 0.0.

    Text and Markdown only: `--format json` and `csv` keep full precision.
    """
    if value is None:
        return "-"
    text = f"{value:{'+' if sign else ''}.{digits}g}"
    bare = text.lstrip("+-")
    return text + ".0" if bare.isdigit() and len(bare) < digits else text  # 1.0, not 1: a measure, not a count


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _path(path: str | None, root: str) -> str:
    """Paths under the experiment dir are shown relative to it."""
    if not path:
        return "-"
    rel = os.path.relpath(path, root)
    return f"`{rel if not rel.startswith('..') else path}`"


def _table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "|".join("-" * (len(h) + 2) for h in header) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(_cell(c) for c in row) + " |\n")
    out.write("\n")


def _epoch(e: EvalResult) -> str:
    return "-" if e.epoch is None else str(e.epoch)


def _cell_name(run: str, epoch: int | None) -> str:
    return f"`{run}`" + (f" (epoch {epoch})" if epoch is not None else "")


def best_text(b: BestRun, most: int = 8) -> str:
    """The best cell against the control; a tie names every cell that shares the score."""
    label = "balanced accuracy" if b.metric == "balanced_accuracy" else b.metric
    if b.ties:
        names = [_cell_name(b.run, b.epoch)] + [_cell_name(c.run, c.epoch) for c in b.ties]
        shown = names[:most] + ([f"{len(names) - most} more"] if len(names) > most else [])
        text = f"a tie at {label} {num(b.value)} between " + ", ".join(shown[:-1]) + " and " + shown[-1]
    else:
        text = f"{_cell_name(b.run, b.epoch)} with {label} {num(b.value)}"
    if b.baseline_value is None:
        return text
    if math.isclose(b.value, b.baseline_value, rel_tol=1e-9, abs_tol=1e-12):
        return text + f"; the control `{b.baseline_run}` scores the same ({num(b.baseline_value)})"
    return (text + f", {num(b.value - b.baseline_value, sign=True)} against the control `{b.baseline_run}` "
            f"({num(b.baseline_value)})")


def write_markdown(summary: Summary, out: TextIO) -> None:
    root = summary.experiment_dir
    partial = "" if summary.complete else " (partial results)"
    out.write("# Experiment Summary\n\n")
    out.write(f"**Experiment:** `{summary.experiment}` | **Generated:** {summary.generated} | "
              f"**Status:** {summary.units_done}/{summary.units_total} units done{partial}\n\n")
    if not summary.complete:
        out.write(f"> Partial results: {summary.units_total - summary.units_done} unit(s) are not done "
                  "(see Incomplete Runs). The numbers below are from what has finished.\n\n")

    out.write("## Run Status\n\n")
    _table(out, ["Run", "Type", "Fine-tuning", "Evaluation"],
           [[r.run, RUN_TYPE_LABEL.get(r.type, r.type), r.finetune, r.evaluation]
            for r in summary.runs])

    out.write("## Training Results\n\n")
    if summary.training:
        rows = []
        for t in summary.training:
            loss = "N/A" if t.final_loss is None else num(t.final_loss) + (" (so far)" if t.partial else "")
            by_epoch = ", ".join(f"epoch_{n}: {num(v)}" for n, v in sorted(t.loss_by_epoch.items())) or "-"
            rows.append([t.run, loss, "-" if t.total_steps is None else str(t.total_steps),
                         "-" if t.epochs is None else str(t.epochs), fmt_duration(t.duration_seconds), by_epoch,
                         t.note or ""])
        _table(out, ["Run", "Final Loss", "Total Steps", "Epochs", "Duration", "Loss by checkpoint", "Notes"], rows)
        out.write("**Notes:**\n"
                  "- Final loss is the last `epoch|step|Loss: x` line of the fine-tune's SLURM stdout; "
                  "its step is the total optimizer step count.\n"
                  "- The stdout counts epochs from 1, checkpoints are numbered from 0: the stdout's epoch 2 "
                  "is `epoch_1`.\n"
                  "- Duration is from the scheduler's start and end times.\n\n")
    else:
        out.write("No fine-tuned runs.\n\n")

    out.write("## Evaluation Results\n\n")
    rows = []
    for e in summary.evaluations:
        value = num(e.value) + (f" ({e.metric})" if e.value is not None and e.metric not in (None, "accuracy") else "")
        sat = "✓" if e.value is not None and e.value >= SATURATED else ""
        samples = "-" if e.samples is None else (f"{e.samples}/{e.total_samples}" if e.partial else str(e.samples))
        status = "PARTIAL" if e.partial else LEGACY_STATUS.get(e.state, e.state.upper())
        run = e.run + (" (control)" if e.run in summary.controls else "")
        rows.append([run, e.task, _epoch(e), value, num(e.balanced_accuracy), num(e.f1), sat, samples, status])
    _table(out, ["Run", "Task", "Epoch", "Accuracy", "Bal. Acc", "F1", "Sat.", "Samples", "Status"], rows)
    out.write(f"**Sat.** = saturated, accuracy ≥ {SATURATED}. **Bal. Acc** and **F1** are computed from the "
              "samples for tasks whose targets are all 0/1; an answer that is neither counts as wrong.\n\n")
    for b in summary.best:
        out.write(f"**Best performing on {b.task}:** {best_text(b)}\n\n")
    if summary.controls:
        base = [e for e in summary.evaluations if e.run in summary.controls]
        text = "; ".join(f"`{e.run}` on {e.task}: {num(e.value)}" for e in base) or "no evaluations"
        out.write(f"**Baseline (control):** {text}\n\n")
    else:
        out.write("**Baseline (control):** none in this experiment.\n\n")
    if summary.plot:
        out.write(f"![Accuracy by epoch for each run, against the control]({summary.plot})\n\n")
    elif summary.plot_note:
        out.write(f"*No plot: {summary.plot_note}*\n\n")

    if summary.remedies:
        out.write("## Remedies Applied\n\n")
        _table(out, ["Unit", "When", "What"], [[r.unit, r.when or "-", r.detail] for r in summary.remedies])

    out.write("## Incomplete Runs\n\n")
    if summary.incomplete:
        _table(out, ["Run", "Stage", "Status", "Notes", "Read"],
               [[i.run, i.stage, LEGACY_STATUS.get(i.state, i.state.upper()), i.reason, _path(i.read, root)]
                for i in summary.incomplete])
    else:
        out.write("None: every unit is done.\n\n")

    out.write("## Next Steps\n\n")
    for n, step in enumerate(summary.next_steps, start=1):
        out.write(f"{n}. {step}\n")
    out.write("\n---\n*Generated by `reconcile summarize`*\n")


def markdown_text(summary: Summary) -> str:
    buf = io.StringIO()
    write_markdown(summary, buf)
    return buf.getvalue()


def write_json(summary: Summary, out: TextIO) -> None:
    out.write(summary.model_dump_json(indent=2) + "\n")


def write_csv(summary: Summary, out: TextIO) -> None:
    """One row per evaluation cell, with its run's training numbers: the shape analysis scripts want."""
    training = {t.run: t for t in summary.training}
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in summary.evaluations:
        t = training.get(e.run)
        writer.writerow([
            summary.experiment, e.run, e.run_type, e.task, "" if e.epoch is None else e.epoch, e.state,
            e.metric or "", _raw(e.value), _raw(e.balanced_accuracy), _raw(e.f1), _raw(e.precision_1),
            _raw(e.recall_1), _raw(e.recall_0), _raw(e.samples), _raw(e.total_samples), str(e.partial).lower(),
            _raw(t.final_loss if t else None), _raw(t.total_steps if t else None),
            _raw(t.duration_seconds if t else None), e.log or "",
        ])


def _raw(value: object) -> str:
    return "" if value is None else str(value)
