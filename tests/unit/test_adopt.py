"""Finished work of every provenance is adopted: half-done v0.2 and v0.3 experiments whose evals ran under
cruijff_kit's workflows and by hand (real `inspect eval` logs, real `slurm-{id}.out`, a real `sacct` answer:
fixtures/cruijff-adopt, see its README). The plan submits only what is truly missing."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.backends.base import Capabilities, SubmitRequest
from reconciler.jobs import Snapshot
from reconciler.backends.slurm.parse import parse_sacct, pick
from reconciler.cli import main
from reconciler.engine.loop import PassResult, load_desired, run_pass
from reconciler.plan.planner import Policy
from reconciler.records.workflow_logs import record_pass
from reconciler.spec.units import Desired
from tests.conftest import FIXTURES
from tests.torchtune_tree import materialize
from tests.unit.test_model_dir import TINY, model_dir

ADOPT = FIXTURES / "cruijff-adopt"
V02 = "ck-experiments/adopt_v02"
V03 = "ck-projects/capitalization/adopt_v03"
MANIFEST = json.loads((ADOPT / "manifest.json").read_text())


class RecordedSlurm:
    """SLURM as the real cluster answered for the recorded jobs (sacct.txt): names come from accounting."""

    capabilities = Capabilities(name="slurm", min_poll_seconds=0.0, default_poll_seconds=0.0)

    def __init__(self) -> None:
        self.accounted = parse_sacct((ADOPT / "sacct.txt").read_text())
        self.questions: list[tuple[str, tuple[str, ...]]] = []
        self.submitted: list[SubmitRequest] = []

    def query(self, tag_prefix: str, job_ids: object) -> Snapshot:
        ids = tuple(job_ids)  # type: ignore[call-overload]
        self.questions.append((tag_prefix, ids))
        return Snapshot(jobs=pick(self.accounted, ids))

    def submit(self, request: SubmitRequest) -> str:
        self.submitted.append(request)
        return str(1000 + len(self.submitted))

    def cancel(self, job_ids: object) -> None:
        raise AssertionError("nothing to cancel")

    def release(self, job_id: str) -> None:
        raise AssertionError("nothing to release")


def scratch(tmp: Path) -> Path:
    """The recorded scratch tree, with the base model and the fine-tunes' checkpoints that were complete."""
    root = tmp / "scratch"
    shutil.copytree(ADOPT / "scratch", root)
    model_dir(root / "pretrained-llms", TINY, name="tiny-llama")
    for run in ("rank4", "rank8", "rank16"):  # rank32 never trained
        materialize("merged-2ep", root / "ck-outputs" / "adopt_v02" / f"ck-out-{run}")
    materialize("merged-2ep", root / V03 / "rank4" / "artifacts")  # rank8 never trained
    return root


def planned(result: PassResult) -> dict[str, tuple[str, str, str]]:
    return {p.key: (p.state, p.action, p.reason) for p in result.plan.units}


def expected(unit: str) -> list[dict[str, object]]:
    return [entry for entry in MANIFEST["logs"] if entry["unit"] == unit]


def test_half_done_v02_submits_only_what_is_missing(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    # rank32's eval was scaffolded by the workflows already (cruijff_kit v0.2's name): it is used as it is.
    script = root / V02 / "rank32" / "eval" / "capitalization_epoch1.slurm"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/bash\n#SBATCH --job-name=eval-capitalization-ep1\ninspect eval ...\n")
    desired = load_desired(root / V02)
    slurm = RecordedSlurm()
    result = run_pass(desired, slurm, Policy(), act=False)
    units = planned(result)
    submitting = {k for k, (_, action, _) in units.items() if action in ("submit", "resubmit")}
    assert submitting == {"finetune/rank32", "eval/rank32/capitalization/epoch1"}, units
    assert "afterok finetune/rank32; script capitalization_epoch1.slurm was not rendered by the reconciler: used " \
           "as it is" in units["eval/rank32/capitalization/epoch1"][2]
    for run in ("rank4", "rank8", "rank16"):
        assert units[f"finetune/{run}"][:2] == ("done", "none")
    # Each eval of earlier work, adopted by the source the manifest recorded it for.
    for key, source in (("eval/rank4/capitalization/epoch0", "metadata"),
                        ("eval/rank4/capitalization/epoch1", "checkpoint in model args"),
                        ("eval/rank8/capitalization/epoch0", "job name 238"),
                        ("eval/rank8/capitalization/epoch1", "slurm stdout in the checkpoint directory"),
                        ("eval/rank16/capitalization/epoch1", "task (one epoch in the matrix)"),
                        ("eval/base/capitalization/base", "checkpoint in model args")):
        state, action, reason = units[key]
        assert (state, action) == ("done", "none") and f"adopted by {source}" in reason, (key, reason)
        assert [e["source"] for e in expected(key)][0] == source.removesuffix(" 238")
        log = result.observation.get(key).log
        assert log is not None and Path(log.path).name in {Path(str(e["log"])).name for e in expected(key)}
    # Two complete logs of the base model: the newest wins, and the plan says which.
    base = units["eval/base/capitalization/base"][2]
    assert "newest of 2 complete logs: 2026-12-02T06-00-08-00-00_capitalization-base_NwGaDfD2mDhy2uL64N2LHQ.eval" \
        in base
    # sacct was asked once, for the one job whose name decides (239's stdout sits in epoch_1/: no need).
    assert len(slurm.questions) == 1 and slurm.questions[0][1] == ("238",)
    # What cannot be attributed is reported, never ignored.
    warnings = "\n".join(result.plan.warnings)
    assert "lowercase-rank8_mrCjiMHbF84itpWABx4hmF.eval: not attributed to any unit: task 'lowercase_rank8' is not " \
           "evaluated for run 'rank8'" in warnings
    assert "dmqfGradHK4McMwzbSHXYv.eval: not attributed to any unit: no epoch in its metadata, model path, model " \
           "name; no job stdout names it, and rank4/capitalization has 2 epochs in the matrix" in warnings
    assert len(result.plan.warnings) == 2  # the --limit log of the base model is attributed (and loses)


def test_the_job_name_is_asked_once_then_remembered(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    (root / V02 / ".reconciler").mkdir()
    desired = load_desired(root / V02)
    slurm = RecordedSlurm()
    first = run_pass(desired, slurm, Policy(), act=False)
    second = run_pass(desired, slurm, Policy(), act=False)
    assert [q[1] for q in slurm.questions] == [("238",), ()]
    assert planned(first) == planned(second)
    names = json.loads((root / V02 / ".reconciler" / "job-names.json").read_text())
    assert names == {"238": "eval-capitalization-ep0"}


def test_without_the_scheduler_an_ambiguous_log_is_never_taken_for_an_epoch(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    desired = load_desired(root / V02)
    result = run_pass(desired, None, Policy(), act=False)  # offline: no job names
    units = planned(result)
    assert units["eval/rank8/capitalization/epoch0"][0] == "unknown"
    assert units["eval/rank8/capitalization/epoch1"][0] == "done"  # its stdout's place says it, no scheduler needed
    assert "2026-12-02T06-01-57-00-00_capitalization-rank8_aKvJBdJhVqneLh2btFKjub.eval: not attributed to any " \
           "unit" in "\n".join(result.plan.warnings)
    assert "may be this unit's" in units["eval/rank8/capitalization/epoch0"][2]


def test_half_done_v03_submits_only_what_is_missing(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    desired = load_desired(root / V03)
    slurm = RecordedSlurm()
    result = run_pass(desired, slurm, Policy(), act=False)
    units = planned(result)
    submitting = {k for k, (_, action, _) in units.items() if action in ("submit", "resubmit")}
    assert submitting == {"finetune/rank8", "eval/rank8/capitalization/epoch0", "eval/rank8/capitalization/epoch1",
                          "eval/rank4_again/capitalization/base"}, units
    assert "adopted by cell directory" in units["eval/rank4/capitalization/epoch0"][2]
    assert "adopted by job name 240" in units["eval/rank4/capitalization/epoch1"][2]
    assert "adopted by cell directory" in units["eval/base/capitalization/base"][2]
    assert units["eval/lost/capitalization/base"][:2] == ("blocked", "none")
    assert units["eval/lost/capitalization/base"][2].startswith("checkpoint_missing: parameters.checkpoint_path")
    assert slurm.questions[0][1] == ("240",)
    assert not result.plan.warnings


def test_an_eval_only_checkpoint_another_unit_writes_waits_for_it(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    shutil.rmtree(root / V03 / "rank4" / "artifacts")  # rank4 not trained yet either
    desired = load_desired(root / V03)
    unit = desired.by_key()["eval/rank4_again/capitalization/base"]
    assert unit.depends_on == ("finetune/rank4",) and unit.needs_epoch == 1
    units = planned(run_pass(desired, RecordedSlurm(), Policy(), act=False))
    assert units["finetune/rank4"][1] == "submit"
    assert units["eval/rank4_again/capitalization/base"][1] == "submit"
    assert units["eval/rank4_again/capitalization/base"][2].endswith("afterok finetune/rank4")


def test_a_blocked_eval_only_is_never_submitted_and_logs_checkpoint_missing(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    desired = load_desired(root / V03)
    slurm = RecordedSlurm()
    result = run_pass(desired, slurm, Policy(), act=True)
    record_pass(desired, result)
    assert "eval/lost/capitalization/base" not in {r.tag.split(":", 2)[2] for r in slurm.submitted}
    log = (root / V03 / "logs" / "run-inspect.log").read_text()
    assert "CHECKPOINT_MISSING: lost/capitalization\nDetails: " in log and "elsewhere/epoch_3 (parameters.checkpoint_path)" \
        " does not exist" in log
    again = run_pass(desired, slurm, Policy(), act=True)
    record_pass(desired, again)
    assert (root / V03 / "logs" / "run-inspect.log").read_text().count("CHECKPOINT_MISSING") == 1


def corrupt_copy(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_bad_logs_are_reported_and_never_proof(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    logs = root / V02 / "rank16" / "eval" / "logs"
    (only,) = logs.glob("*.eval")
    corrupt = corrupt_copy(only, logs / "2026-12-03T00-00-00-00-00_capitalization-rank16_torn.eval")
    # A log whose metadata names a run the experiment does not have, in a shared directory.
    foreign = logs.parent.parent.parent / "rank4" / "eval" / "logs" / "2026-12-03T00-00-00_foreign.eval"
    src = next((root / V02 / "rank4" / "eval" / "logs").glob("*MAxbPvcs*.eval"))
    with zipfile.ZipFile(src) as z_in, zipfile.ZipFile(foreign, "w") as z_out:
        for item in z_in.infolist():
            data = z_in.read(item.filename)
            if item.filename in ("header.json", "_journal/start.json"):
                doc = json.loads(data)
                doc["eval"]["metadata"] = {"run": "rank64", "epoch": 0}
                data = json.dumps(doc).encode()
            z_out.writestr(item, data)
    result = run_pass(load_desired(root / V02), RecordedSlurm(), Policy(), act=False)
    warnings = "\n".join(result.plan.warnings)
    assert f"{corrupt}: not attributed to any unit: unreadable (" in warnings
    assert f"{foreign}: not attributed to any unit: its metadata names run 'rank64', which this experiment does not " \
           "evaluate" in warnings
    units = planned(result)
    assert units["eval/rank16/capitalization/epoch1"][0] == "done"  # the torn copy changes nothing
    assert units["eval/rank4/capitalization/epoch0"][0] == "done"


def test_a_newer_failed_log_never_hides_the_successful_one(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    logs = root / V03 / "base" / "eval" / "capitalization" / "logs"
    (done,) = logs.glob("*.eval")
    later = logs / "2026-12-09T00-00-00-00-00_capitalization-base_torn.eval"
    corrupt_copy(done, later)
    result = run_pass(load_desired(root / V03), RecordedSlurm(), Policy(), act=False)
    state, action, reason = planned(result)["eval/base/capitalization/base"]
    assert (state, action) == ("done", "none") and "log complete" in reason


def test_status_lists_unattributed_logs(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    exp = root / V02
    env = {"RECONCILER_CONFIG": str(tmp_path / "none.yaml")}
    result = CliRunner().invoke(main, ["status", str(exp), "--offline", "--json"], env=env)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    names = {Path(u["path"]).name for u in record["unattributed"]}
    assert "2026-12-02T05-58-59-00-00_lowercase-rank8_mrCjiMHbF84itpWABx4hmF.eval" in names
    text = CliRunner().invoke(main, ["status", str(exp), "--offline"], env=env).stdout
    assert "not attributed to any unit" in text and "lowercase-rank8" in text


@pytest.mark.parametrize("exp", [V02, V03])
def test_the_manifest_matches_the_fixture(exp: str) -> None:
    kept = {str(p.relative_to(ADOPT / "scratch")) for p in (ADOPT / "scratch").rglob("*.eval")}
    assert kept == {e["log"] for e in MANIFEST["logs"]}
    assert all(isinstance(e["argv"], list) for e in MANIFEST["logs"] if e["log"].startswith(exp))


def adopt_plan(desired: Desired) -> set[str]:
    return {p.key for p in run_pass(desired, RecordedSlurm(), Policy(), act=False).plan.units if p.state == "done"}


def test_apply_warns_once_about_each_unattributed_log(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    exp = root / V02
    env = {"RECONCILER_CONFIG": str(tmp_path / "none.yaml")}
    args = ["apply", str(exp), "--backend", "local", "--target", "eval/rank4/capitalization/epoch0"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "not attributed to any unit" in line]
    assert len(lines) == 3 and any("lowercase-rank8" in line for line in lines), result.stderr
    journal = (exp / ".reconciler" / "journal.jsonl")
    assert not journal.exists() or '"submitted"' not in journal.read_text()
