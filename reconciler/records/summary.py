"""summary.md: the experiment's results (loss, accuracy, best run, what is missing), built from a pass.

The units' states and reasons are the pass's plan, never planned again; the remedies are the pass's
journal view. What the plan does not hold is read here: training stdout, eval samples, state.json.
The Markdown, JSON and CSV texts are rendered by reconciler.report.summary_render.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ReconcilerError
from reconciler.fsutil import atomic_write_text
from reconciler.jobs import shows_oom
from reconciler.observe.observation import Observation, UnitEvidence
from reconciler.plan.planner import PlannedUnit
from reconciler.records.state_file import LEGACY_STATUS, StateFile, fmt_ts, read_state
from reconciler.records.summary_model import (
    BestRun,
    Cell,
    EvalResult,
    Incomplete,
    Remedy,
    RunStatus,
    Summary,
    TrainingResult,
)
from reconciler.records.summary_plot import plot_accuracy
from reconciler.records.summary_sources import (
    binary_metrics,
    binary_targets,
    parse_losses,
    read_text,
    stdout_for,
)
from reconciler.records.workflow_logs import record_summary
from reconciler.report import hints
from reconciler.report.summary_render import markdown_text
from reconciler.spec.units import Desired, Unit

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult

__all__ = ["Summary", "build_summary", "write_summary", "SUMMARY_NAME", "PLOT_NAME"]

SUMMARY_NAME = "summary.md"
PLOT_NAME = "summary_accuracy.png"


def build_summary(desired: Desired, result: PassResult, *, state: StateFile | None = None,
                  now: float | None = None, read_samples: bool = True, backend: str | None = None) -> Summary:
    """The results of the pass `result` (a `reconcile summarize` pass, or a watch's last one).

    Units keep the state and reason the pass planned (a unit a --stage/--target watch did not select
    is reported incomplete, "not selected: ..."). Reads stdout files and, for binary tasks, eval samples.
    `state` (the last state.json, read when not given) supplies job times the scheduler no longer has.
    `backend`: the scheduler the experiment's jobs run on, named in the suggested commands.
    """
    now = time.time() if now is None else now
    if state is None:
        state = read_state(desired.layout.state_dir)
    spec = desired.loaded.spec
    observation = result.observation
    planned = {p.key: p for p in result.plan.units}
    run_types = {r.name: r.type for r in spec.runs}
    units = desired.by_key()

    training = [_training(u, planned[u.key], observation.get(u.key), state) for u in desired.units
                if u.kind == "finetune"]
    binary_tasks: dict[str, bool] = {}  # decided by the first readable log of each task
    evaluations = [_evaluation(u, planned[u.key], observation.get(u.key), run_types[u.run], read_samples,
                               binary_tasks)
                   for u in desired.units if u.kind == "eval"]
    controls = [r.name for r in spec.runs if r.type == "control"]
    done = sum(1 for p in planned.values() if p.state == "done")
    incomplete = [_incomplete(units[k], p, observation, units) for k, p in planned.items() if p.state != "done"]
    return Summary(
        experiment=desired.experiment,
        experiment_dir=str(desired.layout.experiment_dir),
        generated=fmt_ts(now) or "",
        units_done=done,
        units_total=len(planned),
        complete=done == len(planned),
        runs=[_run_status(r.name, r.type, planned) for r in spec.runs],
        training=training,
        evaluations=evaluations,
        controls=controls,
        best=_best(evaluations, controls),
        incomplete=incomplete,
        remedies=_remedies(result.journal.remedies if result.journal is not None else []),
        next_steps=_next_steps(desired, planned, backend),
        plot=None,
        plot_note="",
    )


def write_summary(desired: Desired, result: PassResult, *, now: float | None = None,
                  plot: bool = True, backend: str | None = None) -> tuple[Summary, Path]:
    """Build the summary of the pass, draw the plot, write summary.md (re-running overwrites) and
    note it in the workflows' log."""
    summary = build_summary(desired, result, now=now, backend=backend)
    exp_dir = desired.layout.experiment_dir
    if plot:
        image, note = plot_accuracy(summary, exp_dir / PLOT_NAME)
        summary = summary.model_copy(update={"plot": image.name if image else None, "plot_note": note})
    path = exp_dir / SUMMARY_NAME
    try:
        atomic_write_text(path, markdown_text(summary))
    except OSError as exc:
        same = hints.reconcile("summarize", desired.loaded.path, backend, "--format", "json")
        raise ReconcilerError(f"cannot write {path}: {exc.strerror or exc}; `{same}` prints the same "
                              "without writing") from None
    try:
        record_summary(desired, summary, path, now)
    except (OSError, ReconcilerError):
        pass  # the workflows' log is a courtesy: summary.md is written
    return summary, path


def _status_word(state: str) -> str:
    return LEGACY_STATUS.get(state, state.upper())


def _run_status(run: str, run_type: str, planned: dict[str, PlannedUnit]) -> RunStatus:
    ft = planned.get(f"finetune/{run}")
    evals = [p for p in planned.values() if p.kind == "eval" and p.run == run]
    done = sum(1 for p in evals if p.state == "done")
    if evals and done == len(evals):
        evaluation = f"COMPLETED ({done}/{len(evals)})"
    elif not evals:
        evaluation = "N/A"
    else:
        rest: dict[str, int] = {}
        for p in evals:
            if p.state != "done":
                rest[p.state] = rest.get(p.state, 0) + 1
        evaluation = f"{done}/{len(evals)} done, " + ", ".join(f"{n} {s}" for s, n in rest.items())
    return RunStatus(run=run, type=run_type, finetune=_status_word(ft.state) if ft else "N/A",
                     evaluation=evaluation, evals_done=done, evals_total=len(evals))


def _training(unit: Unit, p: PlannedUnit, ev: UnitEvidence, state: StateFile | None) -> TrainingResult:
    record = state.units.get(unit.key) if state else None
    job_ids = [j.job_id for j in ev.jobs]
    if record is not None and record.job_id and record.job_id not in job_ids:
        job_ids.append(record.job_id)
    stdout = stdout_for(unit, job_ids)
    job_id = job_ids[-1] if job_ids else None
    duration = None
    last = ev.jobs[-1] if ev.jobs else None
    if last is not None and last.started_at is not None and last.ended_at is not None:
        duration = last.ended_at - last.started_at
    elif record is not None and record.job_id == job_id and p.state != "running":
        duration = record.elapsed_seconds  # the scheduler was not asked (nothing in flight): state.json remembers
    notes = []
    curve = None
    if stdout is None:
        notes.append("no SLURM stdout found")
    else:
        try:
            text = read_text(stdout)
        except OSError as exc:
            text = ""
            notes.append(f"cannot read {stdout.name}: {exc.strerror or exc}")
        curve = parse_losses(text)
        if curve is None and text:
            notes.append("no loss lines in the stdout")
        if shows_oom(text):
            notes.append("CUDA out of memory in the stdout")
    return TrainingResult(
        run=unit.run, state=p.state, job_id=job_id, stdout=str(stdout) if stdout else None,
        final_loss=curve.final_loss if curve else None, total_steps=curve.total_steps if curve else None,
        epochs=curve.epochs if curve else None, loss_by_epoch=curve.by_epoch if curve else {},
        duration_seconds=duration, partial=p.state != "done", note="; ".join(notes),
    )


def _evaluation(unit: Unit, p: PlannedUnit, ev: UnitEvidence, run_type: str, read_samples: bool,
                binary_tasks: dict[str, bool]) -> EvalResult:
    log = ev.log
    scored = log is not None and log.state in ("complete", "partial")
    fields: dict[str, object] = {}
    task = unit.task or ""
    if scored and read_samples:
        assert log is not None
        if task not in binary_tasks and (verdict := binary_targets(log.path)) is not None:
            binary_tasks[task] = verdict
        metrics = binary_metrics(log.path) if binary_tasks.get(task) else None
        if metrics is not None:
            fields = {"balanced_accuracy": metrics.balanced_accuracy, "f1": metrics.f1,
                      "precision_1": metrics.precision_1, "recall_1": metrics.recall_1,
                      "recall_0": metrics.recall_0, "confusion": metrics.confusion}
    return EvalResult(
        run=unit.run, run_type=run_type, task=unit.task or "", epoch=unit.epoch, state=p.state,
        metric=log.metric if scored and log else None, value=log.value if scored and log else None,
        samples=log.completed if log else None, total_samples=log.total if log else None,
        partial=bool(log is not None and log.state == "partial"), log=log.path if log else None,
        **fields,  # type: ignore[arg-type]
    )


def _best(evaluations: list[EvalResult], controls: list[str]) -> list[BestRun]:
    """Per task: the best cell of a trained run, by balanced accuracy when the task is binary."""
    out = []
    for task in dict.fromkeys(e.task for e in evaluations):
        rows = [e for e in evaluations if e.task == task and e.value is not None]
        binary = bool(rows) and all(e.balanced_accuracy is not None for e in rows)
        metric = "balanced_accuracy" if binary else (rows[0].metric or "accuracy") if rows else "accuracy"
        score = functools.partial(_score, binary=binary)
        trained = [e for e in rows if e.run_type != "control"]
        if not trained:
            continue
        best = max(trained, key=score)  # the first of equals: spec order
        ties = [Cell(run=e.run, epoch=e.epoch) for e in trained
                if e is not best and math.isclose(score(e), score(best), rel_tol=1e-9, abs_tol=1e-12)]
        base = next((e for e in rows if e.run in controls), None)
        out.append(BestRun(task=task, run=best.run, epoch=best.epoch, metric=metric, value=score(best),
                           baseline_run=base.run if base else None,
                           baseline_value=score(base) if base else None, ties=ties))
    return out


def _score(e: EvalResult, binary: bool) -> float:
    value = e.balanced_accuracy if binary else e.value
    return float(value if value is not None else 0.0)


def _incomplete(unit: Unit, p: PlannedUnit, observation: Observation, units: dict[str, Unit]) -> Incomplete:
    ev = observation.get(unit.key)
    read = None
    if unit.kind == "eval" and ev.log is not None and ev.log.state != "complete":
        read = ev.log.path  # the failed or partial log says why
    if read is None:
        path = stdout_for(unit, [j.job_id for j in ev.jobs]) if ev.jobs or unit.kind == "finetune" else None
        read = str(path) if path else None
    if read is None and p.state == "blocked":
        for key in unit.depends_on:
            up = observation.get(key)
            path = stdout_for(units[key], [j.job_id for j in up.jobs]) if key in units else None
            read = str(path) if path else None
    stage = "Fine-tuning" if unit.kind == "finetune" else \
        f"Evaluation: {unit.task}" + (f" epoch {unit.epoch}" if unit.epoch is not None else "")
    return Incomplete(run=unit.run, stage=stage,
                      unit=unit.key, state=p.state, reason=p.reason, read=read)


def _remedies(records: list[dict[str, Any]]) -> list[Remedy]:
    """The journal's `remedy` events, oldest first."""
    out = []
    for rec in records:
        ts = rec.get("ts")
        detail = ", ".join(f"{k}={v}" for k, v in rec.items() if k not in ("ts", "event", "unit"))
        out.append(Remedy(unit=str(rec.get("unit", "")), when=fmt_ts(float(ts)) if isinstance(ts, (int, float))
                          else None, detail=detail))
    return out


def _next_steps(desired: Desired, planned: dict[str, PlannedUnit], backend: str | None) -> list[str]:
    """Commands to paste into a shell, from any directory (summary.md is read from anywhere)."""
    spec = desired.loaded.path
    steps = [f"View the evaluation logs: `{hints.command('inspect', 'view', '--log-dir', desired.layout.experiment_dir)}`"]
    waiting = [p for p in planned.values() if p.state in ("missing", "waiting", "queued", "running", "unknown")]
    if waiting:
        steps.append(f"Finish the {len(waiting)} unit(s) still to run: "
                     f"`{hints.reconcile('apply', spec, backend, '--watch')}`")
    failed = [p for p in planned.values() if p.state in ("failed", "blocked")]
    if failed:
        most = max((p.attempts for p in failed), default=0)
        steps.append(f"Read why {len(failed)} unit(s) failed or are blocked (Incomplete Runs above), fix the cause, "
                     f"then retry: `{hints.reconcile('apply', spec, backend, '--watch', '--max-attempts', str(most + 1))}`")
    if any(p.state == "outdated" for p in planned.values()):
        steps.append(f"Re-run what the spec changed: "
                     f"`{hints.reconcile('apply', spec, backend, '--watch', '--replace', 'outdated')}`")
    steps.append(f"For analysis scripts: `{hints.reconcile('summarize', spec, backend, '--format', 'csv')}` "
                 "(or `--format json`)")
    return steps
