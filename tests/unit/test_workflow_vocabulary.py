"""Every action the workflows' logs hold, in their files and form, parsed back with the regexes their
documents and scripts use (research: workflow-logs.md; cruijff_kit.md §9)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from reconciler.jobs import COMPLETED, RUNNING
from reconciler.engine.loop import PassResult, load_desired, run_pass
from reconciler.plan.planner import Policy
from reconciler.records.summary import write_summary
from reconciler.records.workflow_logs import record_pass
from reconciler.spec.units import Desired
from tests.unit.test_summary import FIXTURE, FakeBackend

# `[YYYY-MM-DD HH:MM:SS] ACTION: short description`, then `Key: value` lines, then a blank line.
ENTRY_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] ([A-Z_]+)(?:: (.*))?$")
FIELD_RE = re.compile(r"^([^:\n]+): (.+)$")
# The harvests (explore-experiment, compute_metrics): DOTALL, from the action to its job id.
SUBMIT_JOB_RE = re.compile(r"SUBMIT_JOB: ([\w.-]+)\n.*?\nJob ID: (\d+)", re.DOTALL)
SUBMIT_EVAL_RE = re.compile(r"SUBMIT_EVAL: ([\w./-]+)\n.*?\nJob ID: (\d+)", re.DOTALL)
SLURM_STATES = {"PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "BLOCKED",
                "NOT_SUBMITTED", "WAITING"}
VOCABULARY = {"DISCOVER_EXPERIMENT", "VERIFY_FINETUNING", "VERIFY_CHECKPOINTS", "CHECKPOINT_MISSING",
              "IDENTIFY_EVALS", "SUBMIT_JOB", "SUBMIT_EVAL", "ALL_SUBMITTED", "STATUS_CHECK", "STATE_CHANGE",
              "ALL_COMPLETE", "EXTRACT_LOSS"}
SUCCESS_LOG = next((FIXTURE / "r1" / "eval" / "capitalization_epoch0" / "logs").glob("*.eval"))

SPEC = """\
experiment: {name: "vocab", question: "q", date: "2026-01-01", dir: "."}
controls: {system_prompt: "", prompt: "{input}", dataset_type: "chat_completion", epochs: 2, batch_size: 1}
models: {base: [{name: "M-1B", path: "/m"}]}
data: {training: {path: "/d.json"}}
runs:
  - {name: "r0", type: "fine-tuned", model: "M-1B", parameters: {lora_rank: 4}}
  - {name: "ctl", type: "control", model: "M-1B"}
  - {name: "lost", type: "eval-only", model: "M-1B", parameters: {checkpoint_path: "/nowhere/epoch_3"}}
evaluation:
  tasks: [{name: "t", script: "/t.py"}]
  matrix:
    - {run: "r0", tasks: ["t"], epochs: [0, 1]}
    - {run: "ctl", tasks: ["t"]}
    - {run: "lost", tasks: ["t"]}
"""


def entries(path: Path) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(action, description, fields) of every entry, checking the form line by line."""
    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    for line in path.read_text().splitlines():
        head = ENTRY_RE.match(line)
        if head:
            out.append((head.group(2), head.group(3) or "", []))
        elif line:
            field = FIELD_RE.match(line)
            assert field is not None and out, f"{path.name}: not a `Key: value` line: {line!r}"
            out[-1][2].append((field.group(1), field.group(2)))
    return out


def step(desired: Desired, backend: FakeBackend, now: float) -> PassResult:
    result = run_pass(desired, backend, Policy(), act=True)
    assert not record_pass(desired, result, now=now).warnings
    return result


def test_a_run_writes_every_action_the_workflows_grep_for(tmp_path: Path) -> None:
    (tmp_path / "experiment_summary.yaml").write_text(SPEC)
    desired = load_desired(tmp_path)
    backend = FakeBackend()
    t = 1795000000.0
    step(desired, backend, t)  # submits r0, its evals afterok, the control; `lost` is blocked
    backend.set("101", RUNNING, started_at=t + 10)
    step(desired, backend, t + 60)
    for n in (0, 1):
        shutil.copytree(FIXTURE / "r1" / "artifacts" / f"epoch_{n}", desired.layout.epoch_dir("r0", n))
    backend.set("101", COMPLETED, exit_code=0, ended_at=t + 300)
    for job_id, cell in (("102", "r0/eval/t_epoch0"), ("103", "r0/eval/t_epoch1"), ("104", "ctl/eval/t")):
        logs = tmp_path / cell / "logs"
        logs.mkdir(parents=True)
        shutil.copy2(SUCCESS_LOG, logs)
        backend.set(job_id, COMPLETED, exit_code=0, started_at=t + 310, ended_at=t + 330)
    result = step(desired, backend, t + 400)
    write_summary(desired, result, now=t + 410, plot=False)

    logs = tmp_path / "logs"
    found = {name: entries(logs / name) for name in ("run-experiment.log", "run-torchtune.log", "run-inspect.log",
                                                     "summarize-experiment.log")}
    actions = {action for parsed in found.values() for action, _, _ in parsed}
    assert VOCABULARY <= actions, VOCABULARY - actions

    torchtune, inspect = (logs / "run-torchtune.log").read_text(), (logs / "run-inspect.log").read_text()
    assert SUBMIT_JOB_RE.findall(torchtune) == [("r0", "101")]
    assert SUBMIT_EVAL_RE.findall(inspect) == [("r0/t/epoch0", "102"), ("r0/t/epoch1", "103"), ("ctl/t", "104")]

    def blocks(name: str, action: str) -> list[tuple[str, dict[str, str]]]:
        return [(desc, dict(fields)) for a, desc, fields in found[name] if a == action]

    (_, submitted), = blocks("run-inspect.log", "ALL_SUBMITTED")
    assert submitted == {"Details": "3 submitted, 0 failed", "Job IDs": "102-104"}
    (desc, missing), = blocks("run-inspect.log", "CHECKPOINT_MISSING")
    assert desc == "lost/t" and missing["Details"] == "/nowhere/epoch_3 (parameters.checkpoint_path) does not exist"
    (_, identify), = blocks("run-inspect.log", "IDENTIFY_EVALS")
    assert identify["Details"].startswith("4 evaluations in the matrix; 0 already complete")
    assert identify["Result"] == "3 ready to submit, 1 blocked"
    (_, verify), = blocks("run-inspect.log", "VERIFY_FINETUNING")
    assert verify["Details"].startswith("squeue --me") and verify["Result"] == "1 queued (fine-tunes)"

    # STATE_CHANGE: Previous and Current in SLURM's words, the job, and on completion when, how long, the log.
    changes = {desc: fields for desc, fields in blocks("run-torchtune.log", "STATE_CHANGE")
               + blocks("run-inspect.log", "STATE_CHANGE")}
    running = [f for d, f in blocks("run-torchtune.log", "STATE_CHANGE") if f["Current"] == "RUNNING"][0]
    assert (running["Previous"], running["Job ID"]) == ("PENDING", "101")
    done = changes["r0/t/epoch1"]
    assert (done["Previous"], done["Current"], done["Job ID"]) == ("PENDING", "COMPLETED", "103")
    assert done["Elapsed"] == "20s" and done["Completed"] == time.strftime("%Y-%m-%d %H:%M:%S",
                                                                           time.localtime(t + 330))
    assert done["Result log"].endswith(".eval") and "/r0/eval/t_epoch1/logs/" in done["Result log"]
    assert all(f["Previous"] in SLURM_STATES and f["Current"] in SLURM_STATES for f in changes.values())

    # STATUS_CHECK counts the jobs by SLURM state on every poll.
    assert any("jobs: 4 PENDING" in desc or "jobs: 4 PENDING" in dict(f).get("Details", "")
               for a, desc, f in found["run-experiment.log"] if a == "STATUS_CHECK")

    # ALL_COMPLETE: the fine-tunes all done; the evals ended with one blocked; each unit with job, time, paths.
    (_, ft), = blocks("run-torchtune.log", "ALL_COMPLETE")
    assert ft["Result"] == "1 COMPLETED, 0 FAILED" and ft["r0"].startswith("job 101, 4m 50s")
    (_, ev), = blocks("run-inspect.log", "ALL_COMPLETE")
    assert ev["Result"] == "3 COMPLETED, 0 FAILED, 1 BLOCKED" and "Total time" in ev
    assert re.fullmatch(r"job 102, 20s, log \S+\.eval, stdout \S+/r0/eval/t_epoch0/slurm-102\.out", ev["r0/t/epoch0"])
    assert ev["Next"].startswith("inspect view --log-dir ")

    (desc, loss), = blocks("summarize-experiment.log", "EXTRACT_LOSS")
    assert desc == "r0" and loss["Result"] == "N/A recorded for the final loss"
