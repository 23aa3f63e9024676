"""The checkpoint completeness rules against what real torchtune 0.6.1 runs wrote (fixtures/torchtune-0.6.1).

The oracle is the recording itself: an epoch is truly complete once every file of `epoch_N/` in the
finished tree has reached its final size. The rules may be later than the oracle (conservative), never
earlier, and a non-final epoch must be recognised while the run still trains the next one. The final
epoch's files-side answer covers the files torchtune writes itself; its copies of the base model's
files (tokenizer, config) finish before the job exits, which the planner also requires.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reconciler.jobs import Job
from reconciler.observe.checkpoints import epoch_evidence
from reconciler.observe.observation import Observation, UnitEvidence
from reconciler.plan.planner import Policy, plan
from tests import torchtune_tree
from tests.torchtune_tree import Write, manifest, materialize, poll_steps, writes
from tests.unit.planner_world import make_desired

FINISHED = [c for c in torchtune_tree.cases() if manifest(c)["exit_code"] == 0]
REPLAYED = [c for c in FINISHED if not c.startswith("postprocessed")]  # moved files are not in the poller's log


def epochs_of(case: str) -> list[int]:
    return sorted({int(e["path"].split("/")[0].split("_")[1]) for e in manifest(case)["entries"]
                   if e["path"].startswith("epoch_")})


def test_the_fixtures_hold_every_case_the_rules_are_derived_from() -> None:
    cases = set(torchtune_tree.cases())
    assert {"adapter-1ep", "adapter-2ep", "adapter-3ep", "merged-1ep", "merged-2ep", "merged-3ep",
            "killed-in-epoch-2", "postprocessed-merged-2ep", "postprocessed-adapter-2ep"} <= cases
    for case in cases:
        assert manifest(case)["torchtune"].split("+")[0] == "0.6.1"


def test_torchtune_0_6_1_writes_the_recipe_state_beside_the_epochs_never_inside() -> None:
    """The fact the old rule missed: `recipe_state/recipe_state.pt` at the root, only with a later epoch."""
    for case in torchtune_tree.cases():
        paths = {e["path"] for e in manifest(case)["entries"]}
        assert not any(p.endswith("/recipe_state.pt") and p.startswith("epoch_") for p in paths), case
        multi_epoch = len(epochs_of(case)) > 1 or case.startswith("killed")
        assert ("recipe_state/recipe_state.pt" in paths) == multi_epoch, case


@pytest.mark.parametrize("case", FINISHED)
def test_every_epoch_of_a_finished_run_is_complete(case: str, tmp_path: Path) -> None:
    out = materialize(case, tmp_path / "artifacts")
    epochs = epochs_of(case)
    for n in epochs:
        ev = epoch_evidence(out / f"epoch_{n}", final=(n == epochs[-1]))
        assert ev.state == "complete", (case, n, ev)


def test_a_run_killed_in_its_second_epoch_leaves_its_first_complete_and_no_second(tmp_path: Path) -> None:
    assert manifest("killed-in-epoch-2")["exit_code"] == -9
    out = materialize("killed-in-epoch-2", tmp_path / "artifacts")
    assert epoch_evidence(out / "epoch_0", final=False).state == "complete"
    assert epoch_evidence(out / "epoch_1", final=True).state == "absent"


def _truly_complete(case: str, epoch: int, state: dict[str, Write], own_only: bool) -> bool:
    final = [e for e in manifest(case)["entries"] if e["path"].startswith(f"epoch_{epoch}/") and e["kind"] == "file"
             and (not own_only or e["path"].split("/")[1].startswith(("adapter", "model")))]
    return bool(final) and all(e["path"] in state and state[e["path"]].size == e["size"] for e in final)


@pytest.mark.parametrize("case", REPLAYED)
def test_replayed_poll_by_poll_no_epoch_is_complete_before_its_files_are(case: str, tmp_path: Path) -> None:
    epochs = epochs_of(case)
    seen_complete: dict[int, int] = {}
    history = writes(case)
    for k in poll_steps(case):
        out = tmp_path / f"step{k}"
        materialize(case, out, upto=k)
        state: dict[str, Write] = {}
        for write in history[:k]:
            state[write.path] = write
        for n in epochs:
            ev = epoch_evidence(out / f"epoch_{n}", final=(n == epochs[-1]))
            if ev.state == "complete":
                assert _truly_complete(case, n, state, own_only=n == epochs[-1]), (case, k, n, ev)
                seen_complete.setdefault(n, k)
        shutil.rmtree(out)
    for n in epochs[:-1]:
        # Recognised while the run trains on: before the next epoch's own files are written.
        next_written = min(k for k, w in enumerate(history, 1) if w.path.startswith(f"epoch_{n + 1}/adapter"))
        assert seen_complete[n] < next_written, (case, n, seen_complete)
    assert epochs[-1] in seen_complete


@pytest.mark.parametrize("case", ["adapter-3ep", "merged-2ep"])
def test_a_copy_that_reset_every_mtime_still_reads_complete(case: str, tmp_path: Path) -> None:
    """`cp -r` gives files the copy's time, in no particular order: the next epoch's save still proves one."""
    out = materialize(case, tmp_path / "artifacts")
    for i, path in enumerate(sorted(out.rglob("*"), reverse=True)):
        os.utime(path, (1_800_000_000 - i, 1_800_000_000 - i))  # recipe_state older than every epoch file
    epochs = epochs_of(case)
    for n in epochs:
        assert epoch_evidence(out / f"epoch_{n}", final=(n == epochs[-1])).state == "complete", (case, n)


def test_a_recipe_state_older_than_the_epoch_files_proves_nothing(tmp_path: Path) -> None:
    """A retry rewrites epoch_0 after the first attempt's recipe state: until a new one is written, not complete."""
    out = materialize("killed-in-epoch-2", tmp_path / "artifacts")
    state = out / "recipe_state" / "recipe_state.pt"
    newer = state.stat().st_mtime + 10
    os.utime(out / "epoch_0" / "adapter_config.json", (newer, newer))
    ev = epoch_evidence(out / "epoch_0", final=False)
    assert ev.state == "partial" and "recipe_state" in ev.detail


@pytest.mark.parametrize("case", ["adapter-2ep", "merged-3ep", "postprocessed-merged-2ep"])
def test_a_fine_tune_that_exited_0_with_its_checkpoints_on_disk_is_done_not_resubmitted(
        case: str, tmp_path: Path) -> None:
    out = materialize(case, tmp_path / "artifacts")
    epochs = epochs_of(case)
    evidence = tuple(epoch_evidence(out / f"epoch_{n}", final=(n == epochs[-1])) for n in epochs)
    unit = next(u for u in make_desired(tmp_path, runs=1, epochs=len(epochs), control=False).units
                if u.kind == "finetune")
    job = Job(job_id="7", state="COMPLETED", exit_code=0)
    observation = Observation(units={unit.key: UnitEvidence(jobs=(job,), attempts=1, epochs=evidence)},
                              scheduler_known=True)
    planned = plan([unit], observation, Policy(max_attempts=3)).units[0]
    assert (planned.state, planned.action) == ("done", "none"), planned
