"""Attribution rules one by one (pure): which unit a log speaks for, and when none may be assumed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.observe.attribution import (
    CHECKPOINT,
    CONTROL,
    JOB_NAME,
    METADATA,
    MODEL_NAME,
    TASK_ALONE,
    Matrix,
    Where,
    attribute,
    read_job_name,
)
from reconciler.observe.evallogs import LogSummary
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand

SPEC = """\
experiment: {name: "e", question: "q", date: "2026-01-01", directory: "."}
controls: {system_prompt: "", prompt: "{input}", epochs: 3, batch_size: 4}
models: {base: [{name: "m", path: "/models/tiny"}]}
data: {training: {path: "/d.json"}}
output: {base_directory: "/scratch/ck-outputs/e"}
runs:
  - {name: "r4", type: "fine-tuned", model: "m", parameters: {lora_rank: 4}}
  - {name: "r8", type: "fine-tuned", model: "m", parameters: {lora_rank: 8}}
  - {name: "base", type: "control", model: "m"}
evaluation:
  tasks: [{name: "cap", script: "/t.py"}, {name: "cap-long", script: "/t.py"}]
  matrix:
    - {run: "r4", vis_label: "rank4", tasks: ["cap", "cap-long"], epochs: [0, 2]}
    - {run: "r8", tasks: ["cap"], epochs: [2]}
    - {run: "base", tasks: ["cap"]}
"""


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    path = tmp_path_factory.mktemp("attr") / "experiment_summary.yaml"
    path.write_text(SPEC)
    return Matrix(expand(load_spec(path)))


def log(**fields: object) -> LogSummary:
    base: dict[str, object] = {"path": "/x/logs/a.eval", "state": "complete", "status": "success", "task": "cap"}
    return LogSummary(**{**base, **fields})  # type: ignore[arg-type]


SHARED = Where("r4")


def test_our_own_logs_are_attributed_by_their_metadata_whatever_they_loaded(matrix: Matrix) -> None:
    # The reconciler's scripts load `{cell}/model` (a directory of links) and pass the epoch dir as metadata.
    ours = log(unit="eval/r4/cap/epoch2", model_path="/exp/r4/eval/cap_epoch2_model", model="hf/local")
    assert attribute(ours, SHARED, matrix).key == "eval/r4/cap/epoch2"
    older = log(model_path="/exp/r4/eval/cap_epoch2_model", checkpoint="/scratch/ck-outputs/e/ck-out-r4/epoch_2")
    claim = attribute(older, SHARED, matrix)
    assert (claim.key, claim.source) == ("eval/r4/cap/epoch2", CHECKPOINT)


def test_cruijff_metadata_and_vis_label_task_names(matrix: Matrix) -> None:
    claim = attribute(log(task="cap_rank4", vis_label="rank4", epoch=0), SHARED, matrix)
    assert (claim.key, claim.source) == ("eval/r4/cap/epoch0", METADATA)
    claim = attribute(log(task="cap-long_rank4", vis_label="rank4", epoch=2), SHARED, matrix)
    assert claim.key == "eval/r4/cap-long/epoch2"  # the longer task name, not its prefix `cap`
    claim = attribute(log(task="cap", finetuned=False), Where("base"), matrix)
    assert claim.key == "eval/base/cap/base"


def test_an_epoch_the_matrix_does_not_have_is_reported_not_moved(matrix: Matrix) -> None:
    claim = attribute(log(epoch=1), SHARED, matrix)
    assert claim.key is None and "says epoch 1, which the matrix does not have for r4/cap (0, 2)" in claim.problem
    claim = attribute(log(model_path="/scratch/ck-outputs/e/ck-out-r4/epoch_1"), SHARED, matrix)
    assert claim.key is None and "epoch 1" in claim.problem


def test_checkpoint_paths_under_another_mount_and_of_another_run(matrix: Matrix) -> None:
    claim = attribute(log(model_path="/gpfs/old/ck-outputs/e/ck-out-r4/epoch_2/"), SHARED, matrix)
    assert (claim.key, claim.source) == ("eval/r4/cap/epoch2", CHECKPOINT)
    claim = attribute(log(model_path="/scratch/ck-outputs/e/ck-out-r8/epoch_2"), SHARED, matrix)
    assert claim.key is None and "a checkpoint of run 'r8', but sits in run 'r4'" in claim.problem
    assert attribute(log(model_path="/elsewhere/tiny"), Where("base"), matrix).key == "eval/base/cap/base"
    # The base model evaluated in a fine-tuned run's directory is no epoch of that run.
    claim = attribute(log(model_path="/models/tiny"), Where("r8"), matrix)
    assert claim.key is None and "says no epoch (a base or given model)" in claim.problem


def test_the_workflows_model_name(matrix: Matrix) -> None:
    claim = attribute(log(model="hf/r4_epoch_2", model_path="/tmp/stage-7"), SHARED, matrix)
    assert (claim.key, claim.source) == ("eval/r4/cap/epoch2", MODEL_NAME)


@pytest.mark.parametrize(("name", "run", "task", "said"), [
    ("eval-cap-ep2", "r4", "cap", 2),  # cruijff_kit HEAD
    ("eval-cap-r4-ep0", "r4", "cap", 0),  # older docs, and the reconciler's own
    ("eval-cap-long-ep2", "r4", "cap-long", 2),
    ("eval-cap-base-base", "base", "cap", CONTROL),  # the reconciler's control
    ("eval-cap", "base", "cap", CONTROL),  # cruijff_kit's name for a cell without an epoch
    ("eval-cap-r8-ep2", "r4", "cap", "names run 'r8', but the log is in 'r4''s directory"),
    ("eval-cap-long-ep2", "r4", "cap", "names task 'cap-long', but the log ran 'cap'"),
    ("my-job", "r4", "cap", None),
    ("eval-cap", "r4", "cap", None),  # no epoch for a fine-tuned run: says nothing
])
def test_job_names(matrix: Matrix, name: str, run: str, task: str, said: object) -> None:
    assert read_job_name(name, run, task, matrix) == said


def test_a_job_name_decides_only_once_the_scheduler_answered(matrix: Matrix) -> None:
    find = lambda: ("238", None)  # noqa: E731
    waiting = attribute(log(model_path="/tmp/stage-238"), SHARED, matrix, find, None)
    assert (waiting.key, waiting.job_id) == (None, "238")
    named = attribute(log(model_path="/tmp/stage-238"), SHARED, matrix, find, {"238": "eval-cap-ep2"})
    assert (named.key, named.source) == ("eval/r4/cap/epoch2", JOB_NAME)
    unknown = attribute(log(model_path="/tmp/stage-238"), SHARED, matrix, find, {"238": None})
    assert unknown.key is None and "could be any" in unknown.problem  # two epochs: never guessed
    single = attribute(log(model_path="/tmp/stage-9"), Where("r8"), matrix, find, {"238": None})
    assert (single.key, single.source) == ("eval/r8/cap/epoch2", TASK_ALONE)


def test_a_foreign_unit(matrix: Matrix) -> None:
    assert attribute(log(unit="eval/zz/cap/epoch0"), SHARED, matrix).key is None
    # In a cell's own directory, the directory decides (a log copied in, or kept from a renamed experiment).
    assert attribute(log(unit="eval/zz/cap/epoch0"), Where("r4", cell="eval/r4/cap/epoch0"), matrix).key == \
        "eval/r4/cap/epoch0"
    assert attribute(log(state="unreadable", status="unreadable"), SHARED, matrix).key is None


def test_stdout_names_its_log_across_wrapped_lines(tmp_path: Path) -> None:
    from reconciler.observe.attribution import StdoutIndex

    (tmp_path / "slurm-238.out").write_text(
        "│capitalization_rank8 (16 samples): hf/local    │\nLog:                     \n"
        "logs/2026-12-02T06-01-57-00-00_capitalization-rank8_aKvJBdJhVqneLh2btFKjub.eval \n")
    (tmp_path / "slurm-239.out").write_text("Log: logs/other.eval\n")
    index = StdoutIndex()
    name = "/x/logs/2026-12-02T06-01-57-00-00_capitalization-rank8_aKvJBdJhVqneLh2btFKjub.eval"
    assert index.job_of(name, [(tmp_path, None)]) == ("238", None)
    assert index.job_of("/x/logs/third.eval", [(tmp_path, None)]) is None
