"""summarize on a half-finished fixture with known numbers: loss from real-format stdout, accuracy from .eval logs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest

from reconciler.jobs import COMPLETED, RUNNING, Job, Snapshot
from reconciler.backends.base import Capabilities, SubmitRequest
from reconciler.journal import Journal
from reconciler.engine.loop import PassResult, load_desired
from reconciler.observe.evallogs import HeaderCache
from reconciler.observe.observation import Observation, observe
from reconciler.plan.planner import Policy, plan
from reconciler.report import summary_render
from reconciler.records.summary import build_summary, write_summary
from reconciler.records.summary_sources import compute_binary, parse_losses
from reconciler.spec.units import Desired
from tests.conftest import EXPERIMENTS

FIXTURE = EXPERIMENTS / "summary_fixture"
NOW = time.time()
R1_FINAL = 0.26427456736564636
R1_EPOCH0_END = 0.41230785846710205
R2_FINAL = 0.3571428571428571  # job 1003, the newest of r2's two stdout files


class FakeBackend:
    """A scheduler that answers from a dict: enough for observe/plan/apply in unit tests."""

    capabilities = Capabilities(name="fake", min_poll_seconds=0.0, default_poll_seconds=0.0)

    def __init__(self, jobs: dict[str, Job] | None = None, next_id: int = 100):
        self.jobs: dict[str, Job] = dict(jobs or {})
        self.next_id = next_id
        self.queries = 0

    def submit(self, request: SubmitRequest) -> str:
        self.next_id += 1
        job_id = str(self.next_id)
        self.jobs[job_id] = Job(job_id=job_id, state="PENDING", name=request.name, tag=request.tag,
                                submitted_at=time.time(), depends_on=request.depends_on)
        return job_id

    def query(self, tag_prefix: str, job_ids: object) -> Snapshot:
        self.queries += 1
        wanted = set(job_ids)  # type: ignore[call-overload]
        return Snapshot(jobs={k: j for k, j in self.jobs.items()
                              if k in wanted or (j.live and (j.tag or "").startswith(tag_prefix))})

    def cancel(self, job_ids: object) -> None:
        for job_id in job_ids:  # type: ignore[attr-defined]
            self.set(job_id, "CANCELLED", ended_at=time.time())

    def release(self, job_id: str) -> None:
        self.set(job_id, self.jobs[job_id].state, depends_on=())

    def set(self, job_id: str, state: str, **fields: object) -> None:
        from dataclasses import replace

        self.jobs[job_id] = replace(self.jobs[job_id], state=state, **fields)  # type: ignore[arg-type]


def copy_fixture(tmp_path: Path) -> Desired:
    """The fixture in tmp_path (a pass writes into the experiment dir)."""
    dst = tmp_path / "summary_fixture"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return load_desired(dst)


def fixture_backend(now: float = NOW) -> FakeBackend:
    """r1's fine-tune ran 8m 15s; the r1 binary epoch0 eval has been running for 65 s."""
    tag = "reconciler:summary_fixture:"
    return FakeBackend({
        "1001": Job("1001", COMPLETED, tag=tag + "finetune/r1", exit_code=0, submitted_at=now - 3000,
                    started_at=now - 2900, ended_at=now - 2900 + 495),
        "2008": Job("2008", RUNNING, tag=tag + "eval/r1/binary/epoch0", submitted_at=now - 100, started_at=now - 65),
    }, next_id=3000)


def fixture_observation(desired: Desired, now: float = NOW) -> Observation:
    """What a pass sees when the scheduler is asked about r1's fine-tune and the running eval."""
    snapshot = fixture_backend(now).query("reconciler:summary_fixture:", ["1001", "2008"])
    return observe(desired, Journal(desired.layout.state_dir).read(), snapshot, HeaderCache(None))


def pass_of(desired: Desired, observation: Observation, policy: Policy | None = None) -> PassResult:
    """A pass that saw `observation`, as run_pass returns it (plan is pure, so it is built the same way);
    by default under the spec's policy (max_attempts 2), as `reconcile summarize` plans."""
    policy = policy or Policy(max_attempts=2)
    return PassResult(plan=plan(desired.units, observation, policy, experiment=desired.experiment),
                      observation=observation, journal=Journal(desired.layout.state_dir).read())


def fixture_result(desired: Desired, now: float = NOW) -> PassResult:
    """A pass over the fixture that asked the scheduler about r1's fine-tune and the running eval."""
    from dataclasses import replace

    return replace(pass_of(desired, fixture_observation(desired, now)),
                   question=("reconciler:summary_fixture:", ("1001", "2008")))


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    desired = copy_fixture(tmp_path_factory.mktemp("summary"))
    return build_summary(desired, fixture_result(desired), now=NOW)


def cell(summary, run: str, task: str, epoch: int | None):  # type: ignore[no-untyped-def]
    return next(e for e in summary.evaluations if (e.run, e.task, e.epoch) == (run, task, epoch))


# ------------------------------------------------------------------ training


def test_loss_is_the_last_loss_line_of_a_stdout_with_carriage_returns() -> None:
    text = (FIXTURE / "r1" / "artifacts" / "slurm-1001.out").read_bytes().decode()  # read_text() turns \r into \n
    assert "\r" in text and text.count("\n") < text.count("|Loss: ")  # many updates per physical line
    curve = parse_losses(text)
    assert curve is not None
    assert (curve.final_loss, curve.total_steps, curve.epochs) == (R1_FINAL, 50, 2)
    # The stdout's epoch 1 is checkpoint epoch_0.
    assert curve.by_epoch == {0: R1_EPOCH0_END, 1: R1_FINAL}


def test_parse_losses_reads_the_shared_fixture_and_exponents(cruijff: Path) -> None:
    text = (cruijff / "head-72a4ace" / "fixtures" / "summarize" / "slurm_training_output.txt").read_text()
    curve = parse_losses(text)
    assert curve is not None and curve.epochs == 2 and curve.total_steps == 500
    tail = parse_losses("1|1|Loss: 2.5: 1%\r1|2|Loss: 1.5e-05:  2%\r1|3|Loss: 1.2e-")
    assert tail is not None and tail.final_loss == 1.5e-05 and tail.total_steps == 2  # a cut number is skipped
    assert parse_losses("no progress bar here") is None


def test_training_results(summary) -> None:  # type: ignore[no-untyped-def]
    r1, r2 = summary.training
    assert (r1.run, r1.state, r1.job_id) == ("r1", "done", "1001")
    assert (r1.final_loss, r1.total_steps, r1.epochs) == (R1_FINAL, 50, 2)
    assert r1.loss_by_epoch == {0: R1_EPOCH0_END, 1: R1_FINAL}
    assert r1.duration_seconds == pytest.approx(495)
    assert r1.stdout is not None and r1.stdout.endswith("r1/artifacts/slurm-1001.out") and not r1.partial
    # r2 failed twice: the newest job's stdout speaks, marked partial, with its OOM.
    assert (r2.state, r2.job_id, r2.final_loss, r2.total_steps, r2.partial) == ("failed", "1003", R2_FINAL, 33, True)
    assert r2.stdout is not None and r2.stdout.endswith("slurm-1003.out")
    assert "out of memory" in r2.note


def test_stdout_found_by_glob_when_no_job_is_known(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    (desired.layout.state_dir / "journal.jsonl").unlink()
    quiet = observe(desired, Journal(desired.layout.state_dir).read(), Snapshot(), HeaderCache(None))
    summary = build_summary(desired, pass_of(desired, quiet), read_samples=False)
    assert summary.training[0].final_loss == R1_FINAL and summary.training[0].job_id is None


# ------------------------------------------------------------------ evaluations


def header_accuracy(path: str) -> float:
    """Straight from the .eval header, without the reconciler's reader."""
    with zipfile.ZipFile(path) as z:
        header = json.loads(z.read("header.json"))
    return header["results"]["scores"][0]["metrics"]["accuracy"]["value"]


def test_accuracy_per_run_task_epoch_equals_the_eval_headers(summary) -> None:  # type: ignore[no-untyped-def]
    expected = {("r1", "capitalization", 0): 0.5, ("r1", "capitalization", 1): 0.8, ("r1", "binary", 1): 0.6,
                ("r2", "capitalization", 0): 0.3, ("base", "capitalization", None): 0.1, ("base", "binary", None): 0.4}
    for (run, task, epoch), value in expected.items():
        e = cell(summary, run, task, epoch)
        assert e.value == value == header_accuracy(e.log)
        assert (e.metric, e.samples, e.total_samples, e.partial, e.state) == ("accuracy", 10, 10, False, "done")
    for run, task, epoch in (("r1", "binary", 0), ("r2", "capitalization", 1)):
        assert cell(summary, run, task, epoch).value is None


def test_binary_metrics_by_hand(summary) -> None:  # type: ignore[no-untyped-def]
    # r1 epoch 1: targets 1,1,1,1,1,1,0,0,0,0; answers 1,1,1,0,0,?,0,0,0,1
    # tp 3, fn 2, other 1 (a target-1 answer that is neither), tn 3, fp 1.
    e = cell(summary, "r1", "binary", 1)
    accuracy = (3 + 3) / 10
    precision_1, recall_1, recall_0 = 3 / (3 + 1), 3 / 6, 3 / 4
    assert e.value == accuracy
    assert e.precision_1 == precision_1 and e.recall_1 == recall_1 and e.recall_0 == recall_0
    assert e.balanced_accuracy == pytest.approx((recall_1 + recall_0) / 2) == 0.625
    assert e.f1 == pytest.approx(2 * precision_1 * recall_1 / (precision_1 + recall_1)) == pytest.approx(0.6)
    assert e.confusion == {"tp": 3, "tn": 3, "fp": 1, "fn": 2, "other": 1, "n_1": 6, "n_0": 4}
    base = cell(summary, "base", "binary", None)  # always answers 0
    assert (base.value, base.balanced_accuracy, base.f1, base.recall_0) == (0.4, 0.5, 0.0, 1.0)
    # Not binary: no sample-level metrics.
    assert cell(summary, "r1", "capitalization", 0).balanced_accuracy is None


def test_one_log_per_task_tells_whether_it_is_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.records import summary as summary_module

    asked: list[str] = []
    real = summary_module.binary_targets

    def counting(path: str) -> bool | None:
        asked.append(path)
        return real(path)

    monkeypatch.setattr(summary_module, "binary_targets", counting)
    desired = copy_fixture(tmp_path)
    result = build_summary(desired, fixture_result(desired), now=NOW)
    scored = [e for e in result.evaluations if e.value is not None]
    capitalization = [e for e in scored if e.task == "capitalization"]
    assert len(capitalization) > 1
    # The capitalization task's targets were read from one of its logs; each binary log is read
    # (its own metrics), and every binary cell still has them.
    assert sum(1 for path in asked if "capitalization" in path) == 1
    assert all(e.balanced_accuracy is not None for e in scored if e.task == "binary")
    assert all(e.balanced_accuracy is None for e in capitalization)


def test_compute_binary_edge_cases() -> None:
    assert compute_binary([]) is None
    only_ones = compute_binary([("1", "1"), ("1", "1")])
    assert only_ones is not None and only_ones.recall_0 == 0.0 and only_ones.f1 == 1.0


def test_successful_log_wins_over_a_failed_one_either_way(summary) -> None:  # type: ignore[no-untyped-def]
    # r1 binary epoch1: an error log, then a newer success. base binary: a success, then a newer error.
    for run, epoch in (("r1", 1), ("base", None)):
        logs = sorted((FIXTURE / run / "eval" / ("binary" + (f"_epoch{epoch}" if epoch is not None else ""))
                       / "logs").glob("*.eval"))
        assert len(logs) == 2
        e = cell(summary, run, "binary", epoch)
        assert e.state == "done" and e.log is not None and Path(e.log).name in {p.name for p in logs}
        with zipfile.ZipFile(e.log) as z:
            assert json.loads(z.read("header.json"))["status"] == "success"
    newer_failed = sorted((FIXTURE / "base" / "eval" / "binary" / "logs").glob("*.eval"))[-1]
    with zipfile.ZipFile(newer_failed) as z:
        assert json.loads(z.read("header.json"))["status"] == "error"


def test_best_run_and_control_baseline(summary) -> None:  # type: ignore[no-untyped-def]
    best = {b.task: b for b in summary.best}
    assert (best["capitalization"].run, best["capitalization"].epoch, best["capitalization"].value) == ("r1", 1, 0.8)
    assert (best["capitalization"].baseline_run, best["capitalization"].baseline_value) == ("base", 0.1)
    assert (best["binary"].metric, best["binary"].value, best["binary"].baseline_value) == \
        ("balanced_accuracy", 0.625, 0.5)
    assert summary.controls == ["base"]


def test_run_status_incomplete_and_remedies(summary) -> None:  # type: ignore[no-untyped-def]
    runs = {r.run: r for r in summary.runs}
    assert (runs["r1"].finetune, runs["r1"].evaluation) == ("COMPLETED", "3/4 done, 1 running")
    assert (runs["r2"].finetune, runs["r2"].evaluation) == ("FAILED", "1/2 done, 1 blocked")
    assert (runs["base"].finetune, runs["base"].evaluation) == ("N/A", "COMPLETED (2/2)")
    assert (summary.units_done, summary.units_total, summary.complete) == (7, 10, False)
    incomplete = {i.unit: i for i in summary.incomplete}
    assert set(incomplete) == {"finetune/r2", "eval/r1/binary/epoch0", "eval/r2/capitalization/epoch1"}
    assert incomplete["finetune/r2"].read.endswith("slurm-1003.out")  # type: ignore[union-attr]
    assert "retry budget used" in incomplete["finetune/r2"].reason
    assert incomplete["eval/r2/capitalization/epoch1"].state == "blocked"
    assert [(r.unit, "batch_size 8 -> 4" in r.detail) for r in summary.remedies] == [("finetune/r2", True)]
    assert any("inspect view --log-dir" in s for s in summary.next_steps)


# ------------------------------------------------------------------ rendering


def test_summary_md_lists_every_cell(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    summary, path = write_summary(desired, fixture_result(desired), now=NOW, plot=False)
    text = path.read_text()
    assert path == desired.layout.experiment_dir / "summary.md"
    for section in ("## Run Status", "## Training Results", "## Evaluation Results", "## Incomplete Runs",
                    "## Next Steps", "## Remedies Applied"):
        assert section in text
    assert "| r1 | capitalization | 1 | 0.8 | - | - |  | 10 | COMPLETED |" in text
    assert "| r1 | binary | 1 | 0.6 | 0.625 | 0.6 |  | 10 | COMPLETED |" in text
    assert "| base (control) | capitalization | - | 0.1 |" in text
    assert "| r1 | 0.2643 | 50 | 2 | 8m 15s |" in text  # 4 significant digits; json and csv keep them all
    assert "**Baseline (control):** `base` on capitalization: 0.1" in text
    assert "partial results" in text and "`r2/artifacts/slurm-1003.out`" in text
    assert summary.plot is None and "![" not in text
    # Re-running overwrites.
    write_summary(desired, fixture_result(desired), now=NOW + 60, plot=False)
    assert path.read_text().count("# Experiment Summary") == 1


def test_plot_is_embedded_when_matplotlib_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    desired = copy_fixture(tmp_path)
    summary, path = write_summary(desired, fixture_result(desired), now=NOW)
    assert summary.plot == "summary_accuracy.png"
    assert "![Accuracy by epoch for each run, against the control](summary_accuracy.png)" in path.read_text()
    assert (desired.layout.experiment_dir / "summary_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_works_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    desired = copy_fixture(tmp_path)
    summary, path = write_summary(desired, fixture_result(desired), now=NOW)
    assert summary.plot is None and "matplotlib is not installed" in summary.plot_note
    assert "*No plot: matplotlib is not installed" in path.read_text()
    assert not (desired.layout.experiment_dir / "summary_accuracy.png").exists()


def test_json_and_csv(summary) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    summary_render.write_json(summary, out)
    data = json.loads(out.getvalue())
    assert data["format_version"] == 1 and data["training"][0]["final_loss"] == R1_FINAL
    out = io.StringIO()
    summary_render.write_csv(summary, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 8  # one per eval cell
    r1 = next(r for r in rows if (r["run"], r["task"], r["epoch"]) == ("r1", "binary", "1"))
    assert (float(r1["value"]), float(r1["balanced_accuracy"]), float(r1["final_loss"])) == (0.6, 0.625, R1_FINAL)
    base = next(r for r in rows if (r["run"], r["task"]) == ("base", "capitalization"))
    assert base["epoch"] == "" and base["run_type"] == "control"


def test_partial_log_is_marked(tmp_path: Path) -> None:
    """A success log that did not score every sample (say --limit) is shown, and marked partial."""
    desired = copy_fixture(tmp_path)
    log = next((desired.layout.experiment_dir / "r1" / "eval" / "capitalization_epoch0" / "logs").glob("*.eval"))
    with zipfile.ZipFile(log) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(members["header.json"])
    header["results"]["completed_samples"] = 6
    members["header.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(log, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    summary = build_summary(desired, fixture_result(desired), read_samples=False)
    e = cell(summary, "r1", "capitalization", 0)
    assert e.partial and e.value == 0.5 and (e.samples, e.total_samples) == (6, 10)
    assert "| r1 | capitalization | 0 | 0.5 | - | - |  | 6/10 | PARTIAL |" in summary_render.markdown_text(summary)


def test_summary_of_a_pass_result_uses_state_json_for_durations(tmp_path: Path) -> None:
    """After convergence nothing is asked of the scheduler; the last state.json remembers the times."""
    from reconciler.records.state_file import write_state

    desired = copy_fixture(tmp_path)
    write_state(desired, fixture_result(desired), now=NOW)
    quiet = observe(desired, Journal(desired.layout.state_dir).read(), Snapshot(), HeaderCache(None))
    summary = build_summary(desired, pass_of(desired, quiet), read_samples=False)
    assert summary.training[0].duration_seconds == pytest.approx(495)



# ------------------------------------------------------------------ built from the pass


def test_remedies_come_from_the_pass_journal_view_not_the_file(tmp_path: Path) -> None:
    desired = copy_fixture(tmp_path)
    result = fixture_result(desired)
    (desired.layout.state_dir / "journal.jsonl").unlink()  # the pass read it; the summary does not again
    summary = build_summary(desired, result, read_samples=False)
    assert [(r.unit, r.detail) for r in summary.remedies] == \
        [("finetune/r2", "change=batch_size 8 -> 4, failure_class=out_of_memory, job_id=1002")]


def test_the_summary_keeps_the_pass_plan_and_plans_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch's --max-attempts is the pass's: a budget of 3 leaves r2's fine-tune to resubmit, not failed."""
    import reconciler.plan.planner as planner

    desired = copy_fixture(tmp_path)
    result = pass_of(desired, fixture_observation(desired), Policy(max_attempts=3))
    monkeypatch.setattr(planner, "plan", lambda *a, **k: pytest.fail("the summary planned again"))
    summary = build_summary(desired, result, read_samples=False)
    r2 = next(i for i in summary.incomplete if i.unit == "finetune/r2")
    assert r2.state == "failed" and r2.reason == next(p.reason for p in result.plan.units if p.key == "finetune/r2")
    assert "budget" not in r2.reason


def test_units_a_selection_left_untouched_are_reported_not_selected(tmp_path: Path) -> None:
    """A watch with --stage/--target: its last pass is summarized; the units it did not select are
    incomplete with the planner's reason, "not selected: ..."."""
    from reconciler.spec.selection import select_units

    desired = copy_fixture(tmp_path)
    policy = Policy(max_attempts=2, selected=select_units(desired.units, "finetune", ()))
    summary = build_summary(desired, pass_of(desired, fixture_observation(desired), policy), read_samples=False)
    incomplete = {i.unit: i for i in summary.incomplete}
    assert set(incomplete) == {"finetune/r2", "eval/r1/binary/epoch0", "eval/r2/capitalization/epoch1"}
    assert "retry budget used" in incomplete["finetune/r2"].reason  # selected: as without --stage
    for key in ("eval/r1/binary/epoch0", "eval/r2/capitalization/epoch1"):
        assert incomplete[key].reason.startswith("not selected: "), incomplete[key].reason
    assert incomplete["eval/r2/capitalization/epoch1"].state == "blocked"
    text = summary_render.markdown_text(summary)
    assert "| r1 | Evaluation: binary epoch 0 | RUNNING | not selected: " in text
    # Without a selection nothing says so.
    plain = build_summary(desired, fixture_result(desired), read_samples=False)
    assert not [i for i in plain.incomplete if i.reason.startswith("not selected")]
