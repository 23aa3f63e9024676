"""After the demo converges on the local backend: summary.md, logs, state.json and status agree with the files."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from inspect_ai.log import read_eval_log

from reconciler.report.summary_render import num
from tests.integration.demo_env import copy_demo, jobs_by_unit, reconcile, start

DEMO_UNITS = 10
EXPERIMENT = "capitalization_demo"

pytestmark = pytest.mark.slow

# The workflows' own parsers (cruijff_kit's skills read these logs).
SUBMIT = re.compile(r"SUBMIT_JOB: ([\w.-]+)\n.*?\nJob ID: (\d+)", re.DOTALL)
ENTRY = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] ([A-Z_]+)(?:: (.*))?$")
LOSS = re.compile(r"(\d+)\|(\d+)\|Loss: ([0-9.eE+-]+)")


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    exp = copy_demo(tmp_path_factory.mktemp("reports") / "demo", seconds_per_epoch=0.3)
    done = reconcile("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    return exp, done.stdout


def summary_rows(text: str) -> dict[tuple[str, str], str]:
    """(run, epoch) -> accuracy cell of the Evaluation Results table."""
    section = text.split("## Evaluation Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[1] == "capitalization":
            rows[(cells[0].replace(" (control)", ""), cells[2])] = cells[3]
    return rows


def test_summary_accuracies_equal_the_eval_headers(converged: tuple[Path, str]) -> None:
    exp, out = converged
    assert f"results: {exp / 'summary.md'}" in out
    rows = summary_rows((exp / "summary.md").read_text())
    logs = sorted(exp.glob("*/eval/*/logs/*.eval"))
    assert len(logs) == 7 and len(rows) == 7
    for path in logs:
        log = read_eval_log(str(path), header_only=True)
        run = path.parts[len(exp.parts)]
        epoch = "-" if run == "base" else path.parent.parent.name.rsplit("epoch", 1)[1]
        accuracy = log.results.scores[0].metrics["accuracy"].value
        assert float(rows[(run, epoch)]) == pytest.approx(accuracy, abs=5e-5), (run, epoch)


def test_summary_losses_equal_the_last_loss_line_of_each_stdout(converged: tuple[Path, str]) -> None:
    exp, _ = converged
    text = (exp / "summary.md").read_text()
    training = text.split("## Training Results", 1)[1].split("\n## ", 1)[0]
    for run in ("rank4_lr5e-5", "rank4_lr1e-4", "rank8_lr1e-4"):
        (stdout,) = (exp / run / "artifacts").glob("slurm-*.out")
        last = LOSS.findall(stdout.read_text().replace("\r", "\n"))[-1]
        row = next(line for line in training.splitlines() if line.startswith(f"| {run} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        # summary.md shows 4 significant digits (the json and csv keep every digit).
        assert cells[1] == num(float(last[2])) and cells[2] == last[1], (cells, last)
    assert "**Baseline (control):** `base`" in text


def test_logs_parse_with_the_workflows_regexes(converged: tuple[Path, str]) -> None:
    exp, _ = converged
    torchtune = (exp / "logs" / "run-torchtune.log").read_text()
    submitted = dict(SUBMIT.findall(torchtune))
    assert sorted(submitted) == ["rank4_lr1e-4", "rank4_lr5e-5", "rank8_lr1e-4"]
    state = json.loads((exp / ".reconciler" / "state.json").read_text())
    for run, job in submitted.items():
        assert state["units"][f"finetune/{run}"]["job_id"] == job
    for name in ("run-experiment.log", "run-torchtune.log", "run-inspect.log"):
        heads = [ENTRY.match(line) for line in (exp / "logs" / name).read_text().splitlines()
                 if line.startswith("[")]
        assert heads and all(heads), name
    experiment = (exp / "logs" / "run-experiment.log").read_text()
    assert experiment.count("ALL_COMPLETE") == 1


def test_a_second_apply_logs_one_line_and_changes_nothing(converged: tuple[Path, str]) -> None:
    exp, _ = converged
    log = exp / "logs" / "run-experiment.log"
    before = log.read_text()
    again = reconcile("apply", str(exp), "--backend", "local")
    assert again.returncode == 0, again.stderr
    added = log.read_text()[len(before):].strip().splitlines()
    assert len(added) == 1 and "STATUS_CHECK" in added[0], added
    assert "ALL_COMPLETE" not in added[0]


def test_status_json_and_table_agree_with_the_state(converged: tuple[Path, str]) -> None:
    exp, _ = converged
    status = reconcile("status", str(exp), "--json", "--backend", "local")
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert len(record["units"]) == DEMO_UNITS
    assert {u["state"] for u in record["units"]} == {"done"}
    assert record["counts"]["finetune"] == {"done": 3} and record["counts"]["eval"] == {"done": 7}
    table = reconcile("status", str(exp), "--backend", "local")
    assert "rank8_lr1e-4" in table.stdout and "10 done" in table.stdout


def test_summarize_formats(converged: tuple[Path, str]) -> None:
    exp, _ = converged
    as_json = reconcile("summarize", str(exp), "--format", "json", "--offline")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["complete"] is True and len(data["evaluations"]) == 7
    as_csv = reconcile("summarize", str(exp), "--format", "csv", "--offline")
    assert as_csv.returncode == 0 and len(as_csv.stdout.strip().splitlines()) >= 8
    markdown = reconcile("summarize", str(exp), "--offline", "--no-plot")
    assert markdown.returncode == 0 and "10/10 units done" in markdown.stdout


def test_status_mid_flight_agrees_with_the_local_scheduler(tmp_path: Path) -> None:
    """Jobs only move forward (PENDING -> RUNNING -> ended): bracket status between two scheduler reads."""
    exp = copy_demo(tmp_path / "demo", seconds_per_epoch=2)
    watcher = start("apply", str(exp), "--watch", "--interval", "0.5", "--backend", "local")
    try:
        deadline = time.monotonic() + 60
        while not any(j.state == "RUNNING" for jobs in jobs_by_unit(exp, EXPERIMENT).values() for j in jobs):
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.2)
        before = jobs_by_unit(exp, EXPERIMENT)
        status = reconcile("status", str(exp), "--json", "--backend", "local")
        after = jobs_by_unit(exp, EXPERIMENT)
    finally:
        watcher.wait(timeout=240)
    assert status.returncode == 0, status.stderr
    units = {u["key"]: u for u in json.loads(status.stdout)["units"]}
    order = {"PENDING": 0, "RUNNING": 1}
    seen_in_flight = 0
    for key, unit in units.items():
        if unit["state"] not in ("queued", "running"):
            continue
        seen_in_flight += 1
        job_id = unit["job_id"]
        was = next((j for j in before.get(key, ()) if j.job_id == job_id), None)  # None: submitted since
        now = next(j for j in after[key] if j.job_id == job_id)
        said = 0 if unit["state"] == "queued" else 1
        assert was is None or order.get(was.state, 2) <= said, (key, was.state, unit["state"])
        assert said <= order.get(now.state, 2), (key, unit["state"], now.state)
    assert seen_in_flight, "status saw nothing in flight mid-way"
    for key, jobs in before.items():
        if any(j.live for j in jobs):
            assert units[key]["state"] in ("queued", "running", "done"), (key, units[key]["state"])
