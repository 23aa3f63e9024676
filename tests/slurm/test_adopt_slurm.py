"""On the real cluster: an experiment whose evals were run by plain `sbatch` of hand-written scripts is adopted,
with no new submission for them. The logs name no epoch (each script stages its checkpoint to local disk
first); only the job names the workflows give (`eval-{task}-ep{N}`), asked of sacct, tell the epochs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.demo_env import reconcile, slurm_jobs_with_prefix
from tests.real_stack import requires_stack
from tests.slurm.conftest import CommandLog
from tests.torchtune_tree import materialize

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster"), requires_stack]
CLI = "tests.slurm.cluster_cli"
EXAMPLE = REPO / "examples" / "capitalization"

SPEC = """\
experiment: {{name: "{name}", question: "Are hand-run evals adopted?", date: "2026-12-02", directory: "."}}
controls: {{system_prompt: "You capitalize words.", prompt: "Capitalize the first letter of this word: {{input}}",
           epochs: 2, batch_size: 4}}
models: {{base: [{{name: "tiny-llama", path: "{model}"}}]}}
data: {{training: {{path: "data/words.json"}}}}
output: {{base_directory: "../../ck-outputs/{name}"}}
runs:
  - {{name: "rank4", type: "fine-tuned", model: "tiny-llama", parameters: {{lora_rank: 4}}}}
  - {{name: "base", type: "control", model: "tiny-llama"}}
evaluation:
  scorer: [{{name: "match"}}]
  tasks: [{{name: "capitalization", script: "inspect_task.py", dataset: "same"}}]
  matrix:
    - {{run: "rank4", tasks: ["capitalization"], epochs: [0, 1]}}
    - {{run: "base", tasks: ["capitalization"]}}
"""

SCRIPT = """\
#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --output={eval_dir}/slurm-%j.out
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=0:20:00
source {venv}/bin/activate
export HF_HUB_OFFLINE=1
cd {eval_dir}
STAGE="${{TMPDIR:-/tmp}}/stage-$SLURM_JOB_ID"
cp -r {model} "$STAGE"
inspect eval {task}@capitalization --model hf/local -M model_path="$STAGE" -M device=cpu \\
    -T data_path={data} --max-tokens 8 --log-dir ./logs
rm -rf "$STAGE"
"""


def test_evals_run_by_plain_sbatch_are_adopted_with_no_new_submission(tmp_path: Path, tiny_model: Path,
                                                                      logging_path: CommandLog) -> None:
    name = f"adopt_{uuid.uuid4().hex[:8]}"
    exp = tmp_path / "ck-experiments" / name
    (exp / "data").mkdir(parents=True)
    shutil.copy2(EXAMPLE / "data" / "words.json", exp / "data" / "words.json")
    shutil.copy2(EXAMPLE / "inspect_task.py", exp / "inspect_task.py")
    (exp / "experiment_summary.yaml").write_text(SPEC.format(name=name, model=tiny_model))
    # The fine-tune ran before: torchtune 0.6.1's two-epoch tree (tests/torchtune_tree.py).
    materialize("merged-2ep", tmp_path / "ck-outputs" / name / "ck-out-rank4")

    jobs = {}
    for run, job_name in (("rank4", "eval-capitalization-ep0"), ("rank4", "eval-capitalization-ep1"),
                          ("base", "eval-capitalization")):
        eval_dir = exp / run / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        script = eval_dir / f"{job_name}.sh"
        script.write_text(SCRIPT.format(job_name=job_name, eval_dir=eval_dir, venv=sys.prefix, model=tiny_model,
                                        task=exp / "inspect_task.py", data=exp / "data" / "words.json"))
        done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
        jobs[job_name] = done.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 900
    while subprocess.run(["squeue", "--noheader", "--jobs", ",".join(jobs.values())], capture_output=True,
                         text=True).stdout.strip():
        assert time.monotonic() < deadline, f"hand-written eval jobs {jobs} did not finish"
        time.sleep(3)
    assert len(list((exp / "rank4" / "eval" / "logs").glob("*.eval"))) == 2

    logging_path.clear()
    proc = reconcile("apply", str(exp), "--backend", "slurm", runner=CLI, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert slurm_jobs_with_prefix(f"reconciler:{name}:") == [], "adopted work was submitted again"
    # One squeue and one sacct for the pass, the three hand-run jobs' names in that sacct.
    assert logging_path.count("sbatch") == 0
    sacct = [line for line in logging_path.lines() if line.startswith("sacct ")]
    assert len(sacct) == 1 and all(job_id in sacct[0] for job_id in jobs.values()), logging_path.lines()

    plan = reconcile("plan", str(exp), "--backend", "slurm", "--format", "json", runner=CLI, check=True)
    units = {u["key"]: u for u in json.loads(plan.stdout)["units"]}
    assert {k: u["state"] for k, u in units.items()} == {
        "finetune/rank4": "done", "eval/rank4/capitalization/epoch0": "done",
        "eval/rank4/capitalization/epoch1": "done", "eval/base/capitalization/base": "done"}
    for key, job_name in (("eval/rank4/capitalization/epoch0", "eval-capitalization-ep0"),
                          ("eval/rank4/capitalization/epoch1", "eval-capitalization-ep1"),
                          ("eval/base/capitalization/base", "eval-capitalization")):
        assert f"adopted by job name {jobs[job_name]}" in units[key]["reason"], units[key]
    names = json.loads((exp / ".reconciler" / "job-names.json").read_text())
    assert {names[job_id] for job_id in jobs.values()} == set(jobs)
    inspect_log = (exp / "logs" / "run-inspect.log").read_text()
    assert "IDENTIFY_EVALS\nDetails: 3 evaluations in the matrix; 3 already complete (3 adopted by job name)" in inspect_log
