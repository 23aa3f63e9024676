"""What the summary reads beyond the pass (its plan, observation and journal view): training stdout, eval samples
(binary tasks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.spec.units import Unit, job_stdout

# torchtune's progress bar: `pbar.set_description(f"{curr_epoch + 1}|{self.global_step}|Loss: {loss}")`.
LOSS_RE = re.compile(r"(\d+)\|(\d+)\|Loss: ([0-9.eE+-]+)")
BINARY_LABELS = frozenset({"0", "1"})


@dataclass(frozen=True)
class LossCurve:
    final_loss: float
    total_steps: int
    epochs: int  # the 1-based epoch of the last loss line
    by_epoch: dict[int, float]  # 0-based checkpoint epoch -> last loss printed in it


def parse_losses(text: str) -> LossCurve | None:
    """The last loss line wins. tqdm separates updates with \\r, so search the whole text, not lines."""
    last: tuple[int, int, float] | None = None
    by_epoch: dict[int, float] = {}
    for epoch_text, step_text, loss_text in LOSS_RE.findall(text):
        try:
            loss = float(loss_text)
        except ValueError:
            continue  # a line cut mid-number, e.g. `Loss: 1.2e-`
        epoch = int(epoch_text)
        last = (epoch, int(step_text), loss)
        # Printed epochs are 1-based; checkpoint directories are 0-based: log epoch 1 is epoch_0.
        by_epoch[epoch - 1] = loss
    if last is None:
        return None
    return LossCurve(final_loss=last[2], total_steps=last[1], epochs=last[0], by_epoch=by_epoch)


def stdout_for(unit: Unit, job_ids: list[str]) -> Path | None:
    """The job's stdout: the unit's --output pattern with %j = the newest known job, else the newest slurm-*.out."""
    for job_id in reversed(job_ids):
        path = job_stdout(unit.stdout, job_id)
        if path.is_file():
            return path
    if unit.kind != "finetune":
        return None  # eval stdout dirs may be shared; only a known job id names the right file
    try:
        found = [p for p in unit.stdout.parent.glob("slurm-*.out") if p.is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


@dataclass(frozen=True)
class BinaryMetrics:
    samples: int
    accuracy: float
    balanced_accuracy: float
    f1: float
    precision_1: float
    recall_1: float
    recall_0: float
    confusion: dict[str, int]


def compute_binary(pairs: list[tuple[str, str]]) -> BinaryMetrics | None:
    """(target, prediction) pairs with targets "0"/"1". An answer that is neither is wrong for its class.

    cruijff_kit's summary_binary.py leaves such answers out of recall; here a target-1 sample answered
    "maybe" was not recalled, so recall_1 = tp / n_1. With no such answers the two agree.
    """
    if not pairs:
        return None
    c = {"tp": 0, "tn": 0, "fp": 0, "fn": 0, "other": 0, "n_1": 0, "n_0": 0}
    for target, prediction in pairs:
        c["n_1" if target == "1" else "n_0"] += 1
        if prediction not in BINARY_LABELS:
            c["other"] += 1
        elif target == "1":
            c["tp" if prediction == "1" else "fn"] += 1
        else:
            c["tn" if prediction == "0" else "fp"] += 1
    n = len(pairs)
    precision_1 = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall_1 = c["tp"] / c["n_1"] if c["n_1"] else 0.0
    recall_0 = c["tn"] / c["n_0"] if c["n_0"] else 0.0
    f1 = 2 * precision_1 * recall_1 / (precision_1 + recall_1) if precision_1 + recall_1 else 0.0
    return BinaryMetrics(samples=n, accuracy=(c["tp"] + c["tn"]) / n, balanced_accuracy=(recall_0 + recall_1) / 2,
                         f1=f1, precision_1=precision_1, recall_1=recall_1, recall_0=recall_0, confusion=c)


def binary_targets(path: str) -> bool | None:
    """Whether every sample's target is "0" or "1" (None: the log could not be read, or has no sample).

    Read from the cheap sample summaries, still ~1 ms a log: a task's targets are its dataset's,
    so one log of a task answers for all of them (`build_summary` asks once per task)."""
    from inspect_ai.log import read_eval_log_sample_summaries

    try:
        summaries = read_eval_log_sample_summaries(path)
    except Exception:  # noqa: BLE001 - inspect raises many kinds; a summary row then just lacks these metrics
        return None
    if not summaries:
        return None  # says nothing about the task's other logs
    return all(_target(s.target) in BINARY_LABELS for s in summaries)


def binary_metrics(path: str) -> BinaryMetrics | None:
    """Balanced accuracy and F1 for a log whose targets are all "0"/"1"; None for any other task.

    The cheap sample summaries decide whether the task is binary; only then is the whole log read.
    """
    from inspect_ai.log import read_eval_log

    if not binary_targets(path):
        return None
    try:
        samples = read_eval_log(path).samples or []
    except Exception:  # noqa: BLE001 - inspect raises many kinds; a summary row then just lacks these metrics
        return None
    return compute_binary([(_target(s.target), _prediction(s)) for s in samples])


def _target(target: Any) -> str:
    if isinstance(target, list):
        return str(target[0]).strip() if len(target) == 1 else ""
    return str(target).strip()


def _prediction(sample: Any) -> str:
    """The model's answer: the completion, else the last assistant message (as summary_binary.py reads it)."""
    output = getattr(sample, "output", None)
    completion = getattr(output, "completion", "") if output is not None else ""
    if completion:
        return str(completion).strip()
    for message in reversed(getattr(sample, "messages", None) or []):
        if getattr(message, "role", "") == "assistant":
            return str(getattr(message, "text", "")).strip()
    return ""
