"""Pydantic models of experiment_summary.yaml, in the v0.2 and v0.3.4 dialects found in the wild."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StringConstraints

# Names flow into paths, job names and shell scripts: one safe alphabet for all of them.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RE = re.compile(NAME_PATTERN)

SafeName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=200)]
Number = StrictInt | StrictFloat
# "H:MM:SS", "MM", "D-HH:MM:SS": SLURM time formats.
TimeLimit = Annotated[str, StringConstraints(pattern=r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")]
Memory = Annotated[str, StringConstraints(pattern=r"^\d+[KMGT]?B?$")]
Date = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class _Open(BaseModel):
    """Users add their own keys: keep them (reported as warnings), never fail on them."""

    model_config = ConfigDict(extra="allow")


class Experiment(_Open):
    name: SafeName = Field(description="Experiment identifier; used in job tags and paths")
    question: str = Field(description="Scientific question being addressed")
    date: Date = Field(description="YYYY-MM-DD")
    project: str | None = Field(None, description="v0.3: blueprint directory name (e.g. capitalization)")
    hypothesis: str | None = None
    purpose: str | None = None
    dir: str | None = Field(None, description="v0.3.4: experiment directory (relative paths: to this file)")
    directory: str | None = Field(None, description="v0.2: experiment directory (relative paths: to this file)")


class Tools(_Open):
    """Without a `tools:` section the workflows assume torchtune and inspect-ai; so does the reconciler."""

    preparation: Literal["torchtune", "command"] = Field(
        "torchtune", description="torchtune, or command: a trainer of your own run by `tools.command`"
    )
    evaluation: Literal["inspect-ai"] = "inspect-ai"
    command: str | None = Field(
        None,
        description="preparation=command: the fine-tune command line; `{config}` is replaced by the run's setup_finetune.yaml",
    )
    model_api: str = Field(
        "hf/local",
        description="inspect-ai --model for evals; the checkpoint goes in -M model_path",
    )


class Controls(_Open):
    system_prompt: str = Field(description='Shared by training and eval; "" for none')
    prompt: str = Field("{input}", description="Prompt template, must contain {input}")
    dataset_type: Literal["chat_completion", "text_completion"] | None = None
    epochs: StrictInt = Field(ge=1, le=1000, description="Training epochs; checkpoints epoch_0..epoch_{epochs-1}")
    batch_size: StrictInt = Field(ge=1)
    gradient_accumulation_steps: StrictInt = Field(1, ge=1)
    validation_during_training: StrictBool = False
    seed: StrictInt = 14
    batch_size_val: StrictInt | None = Field(None, ge=1)
    weight_decay: Number | None = None
    lora_dropout: Number | None = None
    lr: Number | None = None
    lora_rank: StrictInt | None = Field(None, ge=1)


class BaseModelEntry(_Open):
    name: SafeName
    path: str = Field(description="Model directory")
    size_gb: Number | None = None
    component: str | None = Field(
        None, description="torchtune LoRA model builder (dotted path) for a model the scaffold cannot map itself"
    )
    model_type: str | None = Field(None, description="torchtune checkpointer model_type for `component` (e.g. QWEN2)")


class Models(_Open):
    base: list[BaseModelEntry] = Field(min_length=1)


class Splits(_Open):
    train: StrictInt = Field(ge=0)
    validation: StrictInt = Field(ge=0)
    test: StrictInt = Field(ge=0)


class TrainingData(_Open):
    path: str
    dataset_label: str | None = Field(None, description="v0.3.4: file stem")
    label: str | None = Field(None, description="v0.2: file stem")
    format: Literal["json", "parquet"] = "json"
    size_kb: Number | None = None
    splits: Splits | None = None


class Data(_Open):
    training: TrainingData
    data_generation: dict[str, Any] | None = None


class Output(_Open):
    wandb_project: str | None = None
    base_directory: str | None = Field(None, description="v0.2: checkpoints root")
    checkpoint_pattern: str | None = Field(None, description='v0.2: e.g. "ck-out-{run_name}/epoch_{N}"')


class Compute(_Open):
    time: TimeLimit | None = None
    gpus: StrictInt | None = Field(None, ge=0)
    mem: Memory | None = None
    cpus_per_task: StrictInt | None = Field(None, ge=1)
    device: Literal["cuda", "cpu"] | None = Field(None, description="torchtune/inspect device (default cuda)")
    dtype: Literal["bf16", "fp32", "fp16"] | None = Field(None, description="torchtune dtype (default bf16)")


class Run(_Open):
    name: SafeName = Field(description="Run directory name, used verbatim")
    type: Literal["fine-tuned", "control", "eval-only"]
    model: str = Field(description="A models.base[].name")
    parameters: dict[str, Any] = Field(default_factory=dict)
    training_condition: str | None = None
    dataset_path: str | None = None
    compute: Compute | None = None
    slurm_overrides: dict[str, str | int] | None = None


class Scorer(_Open):
    name: str
    params: dict[str, Any] | None = None


class Task(_Open):
    name: SafeName
    script: str = Field(description="The inspect-ai task file")
    description: str | None = None
    dataset: str | None = Field(None, description='Eval data file; "same" = the training file')
    eval_condition: str | None = None
    prompt: str | None = None
    system_prompt: str | None = None
    assistant_prefix: str | None = None


class MatrixEntry(_Open):
    run: str
    vis_label: str | None = None
    tasks: list[str] = Field(min_length=1)
    epochs: list[StrictInt] | None = None


class Evaluation(_Open):
    temperature: Number | None = None
    do_sample: StrictBool = False
    seed: StrictInt = 14
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_connections: StrictInt | None = Field(None, ge=1)
    assistant_prefix: str | None = None
    system_prompt: str | None = Field(None, description="v0.2 (kept in some v0.3 files)")
    scorers: list[Scorer] | None = Field(None, description="v0.3.4")
    scorer: list[Scorer] | None = Field(None, description="v0.2")
    tasks: list[Task] = Field(min_length=1)
    compute: Compute | None = None
    matrix: list[MatrixEntry] = Field(min_length=1)
    group_by_checkpoint: StrictBool = Field(
        True,
        description="One job per checkpoint: the pending evals of one checkpoint load its model once and run "
                    "their tasks one after another in one job (each task still writes its own log); false: one "
                    "job per eval",
    )


# What may follow `conda activate`, `module load` or `source`: a name or a path, never shell syntax.
ENV_NAME_PATTERN = r"^[A-Za-z0-9_.~+/@-][A-Za-z0-9_.+/@:=-]*$"
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=500)]


class Settings(_Open):
    """The reconciler's own knobs (optional block `reconciler:`). The job environment and placement
    keys are cruijff_kit's own (its setup_finetune.yaml and claude.local.md): they win over the
    user config file (`~/.config/reconciler/config.yaml`)."""

    max_attempts: StrictInt = Field(3, ge=1, le=100, description="Submissions per unit before giving up")
    account: str | None = Field(None, description="SLURM --account for every job")
    partition: str | None = Field(None, description="SLURM --partition for every job")
    constraint: str | None = Field(None, description="SLURM --constraint for every job (e.g. gpu80)")
    modules: list[EnvName] | None = Field(None, description="`module load` each, before tune/inspect")
    conda_env: EnvName | None = Field(None, description="`conda activate` this environment (a name or a path)")
    venv: Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=1000)] | None = Field(
        None, description="`source VENV/bin/activate` (a virtualenv directory; shell-quoted)")
    environment: str | None = Field(
        None, description="Raw shell lines that activate the environment (replace modules/conda_env/venv)"
    )


class ExperimentSpec(_Open):
    experiment: Experiment
    tools: Tools = Field(default_factory=Tools)
    variables: dict[str, list[Any]] | None = None
    controls: Controls
    models: Models
    data: Data
    output: Output | None = None
    runs: list[Run] = Field(min_length=1)
    evaluation: Evaluation
    reconciler: Settings = Field(default_factory=Settings)

    def run_named(self, name: str) -> Run:
        """The run called `name` (the loader refuses a name defined twice)."""
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run named {name!r} in the experiment")
