"""The experiment summary as data: what summary.md, `--format json` and `--format csv` are all rendered from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunStatus(_Frozen):
    """One run: how far its fine-tune and its evaluations got."""

    run: str
    type: str = Field(description="fine-tuned, control or eval-only")
    finetune: str = Field(description="COMPLETED, RUNNING, FAILED, ... or N/A for runs that are not trained")
    evaluation: str = Field(description="COMPLETED (n/n), or how many evaluations are done and what holds the rest")
    evals_done: int
    evals_total: int


class TrainingResult(_Frozen):
    """One fine-tune, read from its SLURM stdout and the scheduler."""

    run: str
    state: str = Field(description="The fine-tune unit's state")
    job_id: str | None = None
    stdout: str | None = Field(None, description="The stdout file the numbers were read from")
    final_loss: float | None = Field(None, description="The last `epoch|step|Loss: x` line")
    total_steps: int | None = Field(None, description="The step of that line: the global optimizer step count")
    epochs: int | None = Field(None, description="The epoch of that line (1-based, as the trainer prints it)")
    loss_by_epoch: dict[int, float] = Field(default_factory=dict,
                                            description="0-based checkpoint epoch -> the last loss of that epoch")
    duration_seconds: float | None = Field(None, description="From the scheduler's start and end times")
    partial: bool = Field(False, description="The fine-tune is not done: the numbers are so far")
    note: str = ""


class EvalResult(_Frozen):
    """One matrix cell: run x task x epoch."""

    run: str
    run_type: str
    task: str
    epoch: int | None = Field(None, description="0-based checkpoint epoch; None for control and eval-only runs")
    state: str
    metric: str | None = Field(None, description="The log's headline metric (accuracy for match/includes)")
    value: float | None = None
    samples: int | None = Field(None, description="Completed samples")
    total_samples: int | None = None
    partial: bool = Field(False, description="A success log that does not cover every sample (or ran with --limit)")
    balanced_accuracy: float | None = Field(None, description="Binary 0/1 targets only, from the samples")
    f1: float | None = None
    precision_1: float | None = None
    recall_1: float | None = None
    recall_0: float | None = None
    confusion: dict[str, int] | None = Field(None, description="tp, tn, fp, fn, other, n_1, n_0")
    log: str | None = Field(None, description="The .eval log the numbers come from (or the failed one)")


class Cell(_Frozen):
    """One evaluated checkpoint: a run and its 0-based epoch (None for runs that are not trained)."""

    run: str
    epoch: int | None = None


class BestRun(_Frozen):
    """The best fine-tuned cell of one task, against the control."""

    task: str
    run: str
    epoch: int | None
    metric: str = Field(description="balanced_accuracy when the task is binary, else the headline metric")
    value: float
    baseline_run: str | None = None
    baseline_value: float | None = None
    ties: list[Cell] = Field(default_factory=list,
                             description="Other trained cells with the same score, in spec order: the best is shared")


class Incomplete(_Frozen):
    """A unit that is not done, why, and what to read."""

    run: str
    stage: str = Field(description="Fine-tuning or Evaluation")
    unit: str
    state: str
    reason: str
    read: str | None = Field(None, description="The log or stdout that says what happened")


class Remedy(_Frozen):
    """A change the reconciler made before a retry (journal `remedy` events: OOM, TIMEOUT)."""

    unit: str
    when: str | None = None
    detail: str


class Summary(_Frozen):
    """Everything summarize reports. Partial results are fine: `complete` says whether they are."""

    format_version: int = FORMAT_VERSION
    experiment: str
    experiment_dir: str
    generated: str
    units_done: int
    units_total: int
    complete: bool
    runs: list[RunStatus] = Field(default_factory=list)
    training: list[TrainingResult] = Field(default_factory=list)
    evaluations: list[EvalResult] = Field(default_factory=list)
    controls: list[str] = Field(default_factory=list, description="Control runs: the baseline")
    best: list[BestRun] = Field(default_factory=list)
    incomplete: list[Incomplete] = Field(default_factory=list)
    remedies: list[Remedy] = Field(default_factory=list)
    next_steps: list[str] = Field(default_factory=list)
    plot: str | None = Field(None, description="The accuracy-by-epoch image, relative to the experiment dir")
    plot_note: str = Field("", description="Why there is no plot")
