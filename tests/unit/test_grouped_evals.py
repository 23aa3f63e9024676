"""Evals grouped per checkpoint: which units share a job, its tag, how the plan shows it, the job's script,
and what a shared job's partial failure leaves for the next pass."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.jobs import FAILED, GONE, PENDING, RUNNING, Job, Snapshot
from reconciler.backends.base import SubmitRequest
from reconciler.cli import main
from reconciler.journal import Journal
from reconciler.observe.observation import Observation, UnitEvidence
from reconciler.plan.planner import Policy, plan
from reconciler.report import plan_markdown, plan_render
from reconciler.scaffold.group import prepare_group, render_group
from reconciler.spec.load import load_spec
from reconciler.spec.units import Desired, expand, group_tag, tag_prefix, units_of_tag
from tests.unit.planner_world import complete_epochs, log

TASKS = ("ta", "tb", "tc")


def write_spec(tmp: Path, *, grouping: str | None = None, data: str = "/d.json", epochs: int = 2) -> Path:
    option = f"\n  group_by_checkpoint: {grouping}" if grouping is not None else ""
    tasks = ", ".join(f'{{name: "{t}", script: "/t.py"}}' for t in TASKS)
    text = f"""experiment: {{name: "g", question: "q", date: "2026-01-01", dir: "."}}
controls: {{system_prompt: "", dataset_type: "chat_completion", epochs: {epochs}, batch_size: 1}}
models: {{base: [{{name: "M-1B", path: "/m"}}]}}
data: {{training: {{path: "{data}"}}}}
runs:
  - {{name: "r0", type: "fine-tuned", model: "M-1B", parameters: {{}}}}
  - {{name: "ctl", type: "control", model: "M-1B", parameters: {{}}}}
evaluation:
  tasks: [{tasks}]
  matrix:
    - {{run: "r0", tasks: ["ta", "tb", "tc"], epochs: {list(range(epochs))}}}
    - {{run: "ctl", tasks: ["ta", "tb"], epochs: null}}{option}
"""
    (tmp / "experiment_summary.yaml").write_text(text)
    return tmp


def desired_of(tmp: Path, **kw: object) -> Desired:
    return expand(load_spec(write_spec(tmp, **kw)))  # type: ignore[arg-type]


def fresh_plan(desired: Desired, observation: Observation | None = None, policy: Policy = Policy()):
    return plan(desired.units, observation or Observation(units={}, scheduler_known=True), policy, "g")


# ---------------------------------------------------------------- which units share a job


def test_the_pending_evals_of_each_checkpoint_share_one_job(tmp_path: Path) -> None:
    result = fresh_plan(desired_of(tmp_path))
    groups = plan_render.shared_jobs(result)
    assert groups == [
        tuple(f"eval/r0/{t}/epoch0" for t in TASKS),
        tuple(f"eval/r0/{t}/epoch1" for t in TASKS),
        ("eval/ctl/ta/base", "eval/ctl/tb/base"),
    ]
    finetune = next(p for p in result.units if p.kind == "finetune")
    assert finetune.group == ()
    for p in result.units:
        if p.kind == "eval":
            assert p.key in p.group and p.action == "submit"


def test_group_by_checkpoint_false_gives_every_eval_its_own_job(tmp_path: Path) -> None:
    result = fresh_plan(desired_of(tmp_path, grouping="false"))
    assert plan_render.shared_jobs(result) == []
    assert all(p.group == () for p in result.units)


def test_only_units_to_submit_in_the_same_pass_are_grouped(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    ok = log("complete")
    observation = Observation(units={
        "finetune/r0": UnitEvidence(epochs=complete_epochs(2), jobs=(Job("1", "COMPLETED", exit_code=0),), attempts=1),
        # epoch 0: ta done, tb running in a job of its own: only tc is left, alone
        "eval/r0/ta/epoch0": UnitEvidence(log=ok),
        "eval/r0/tb/epoch0": UnitEvidence(jobs=(Job("7", RUNNING),), attempts=1),
    }, scheduler_known=True)
    result = fresh_plan(desired, observation)
    by_key = {p.key: p for p in result.units}
    assert by_key["eval/r0/tc/epoch0"].action == "submit" and by_key["eval/r0/tc/epoch0"].group == ()
    assert by_key["eval/r0/ta/epoch1"].group == tuple(f"eval/r0/{t}/epoch1" for t in TASKS)
    # not selected (--target): planned, not acted on, and not grouped
    only = fresh_plan(desired, observation, Policy(selected=frozenset({"eval/r0/ta/epoch1", "eval/r0/tb/epoch1"})))
    assert plan_render.shared_jobs(only) == [("eval/r0/ta/epoch1", "eval/r0/tb/epoch1")]


def test_evals_whose_settings_differ_do_not_share_a_job(tmp_path: Path) -> None:
    # Two checkpoints never share; nor do evals that wait on different jobs (`after`).
    desired = desired_of(tmp_path)
    shares = {u.key: u.share for u in desired.units if u.kind == "eval"}
    assert shares["eval/r0/ta/epoch0"] == shares["eval/r0/tc/epoch0"] != shares["eval/r0/ta/epoch1"]
    assert shares["eval/ctl/ta/base"] != shares["eval/r0/ta/epoch0"]
    text = (tmp_path / "experiment_summary.yaml").read_text().replace("evaluation:\n", "evaluation:\n  max_tokens: 9\n")
    (tmp_path / "experiment_summary.yaml").write_text(text)
    changed = {u.key: u.share for u in expand(load_spec(tmp_path)).units if u.kind == "eval"}
    assert changed["eval/r0/ta/epoch0"] != shares["eval/r0/ta/epoch0"]  # the generation settings are in it


def test_bad_group_by_checkpoint_is_one_line_with_its_place(tmp_path: Path) -> None:
    write_spec(tmp_path, grouping='"sometimes"')
    result = CliRunner().invoke(main, ["plan", str(tmp_path), "--offline"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "experiment_summary.yaml:13:" in lines[0] and "evaluation.group_by_checkpoint" in lines[0], lines


# ---------------------------------------------------------------- tags


def test_a_group_tag_names_every_unit_and_reads_back() -> None:
    keys = ("eval/r.0/ta/epoch3", "eval/r.0/t-b/epoch3", "eval/r.0/t_c/epoch3")
    tag = group_tag("exp", keys)
    assert tag == "reconciler:exp:eval/r.0/ta+t-b+t_c/epoch3"
    assert units_of_tag(tag[len(tag_prefix("exp")):]) == keys
    assert group_tag("exp", ("eval/ctl/ta/base",)) == "reconciler:exp:eval/ctl/ta/base"
    assert units_of_tag("eval/ctl/ta+tb/base") == ("eval/ctl/ta/base", "eval/ctl/tb/base")
    assert units_of_tag("finetune/r0") == ("finetune/r0",)
    with pytest.raises(ValueError):
        group_tag("exp", ("eval/r0/ta/epoch0", "eval/r0/tb/epoch1"))


def test_a_shared_job_found_by_its_tag_alone_counts_for_each_of_its_units(tmp_path: Path) -> None:
    """Journal lost: the scheduler's one job is every unit's, so nothing is submitted again."""
    from reconciler.observe.observation import HeaderCache, observe

    desired = desired_of(tmp_path)
    keys = tuple(f"eval/r0/{t}/epoch0" for t in TASKS)
    snapshot = Snapshot(jobs={
        "1": Job("1", RUNNING, tag="reconciler:g:finetune/r0"),
        "2": Job("2", PENDING, tag=group_tag("g", keys), depends_on=("1",)),
    })
    observation = observe(desired, Journal(tmp_path / ".reconciler").read(), snapshot, HeaderCache(None))
    result = fresh_plan(desired, observation)
    by_key = {p.key: p for p in result.units}
    for key in keys:
        assert (by_key[key].state, by_key[key].action, by_key[key].job_id) == ("queued", "none", "2"), by_key[key]


# ---------------------------------------------------------------- partial failure


def test_a_shared_job_killed_half_way_reruns_only_its_unfinished_units(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    keys = [f"eval/r0/{t}/epoch0" for t in TASKS]
    dead = (Job("2", GONE),)
    observation = Observation(units={
        "finetune/r0": UnitEvidence(epochs=complete_epochs(2), jobs=(Job("1", "COMPLETED", exit_code=0),), attempts=1),
        keys[0]: UnitEvidence(jobs=dead, attempts=1, log=log("complete")),
        keys[1]: UnitEvidence(jobs=dead, attempts=1, log=log("started")),
        keys[2]: UnitEvidence(jobs=dead, attempts=1),
    }, scheduler_known=True)
    result = fresh_plan(desired, observation)
    by_key = {p.key: p for p in result.units}
    assert (by_key[keys[0]].state, by_key[keys[0]].action) == ("done", "none")
    for key in keys[1:]:
        p = by_key[key]
        assert (p.state, p.action) == ("failed", "resubmit"), p
        assert "attempt 2 of 3" in p.reason  # the shared job was one attempt for each of its units
    # the two left go into one job again (the next group); the done one never
    assert by_key[keys[1]].group == tuple(keys[1:])
    # a budget spent by shared jobs: failed for good, like any unit
    spent = Observation(units={**observation.units, keys[1]: UnitEvidence(jobs=dead, attempts=3, log=log("started"))},
                        scheduler_known=True)
    assert {p.key: p for p in fresh_plan(desired, spent).units}[keys[1]].action == "none"


def test_a_unit_whose_log_is_done_does_not_cancel_the_job_its_group_still_needs(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    keys = [f"eval/r0/{t}/epoch0" for t in TASKS]
    queued = (Job("5", PENDING),)
    observation = Observation(units={
        "finetune/r0": UnitEvidence(epochs=complete_epochs(2), jobs=(Job("1", "COMPLETED", exit_code=0),), attempts=1),
        keys[0]: UnitEvidence(jobs=queued, attempts=1, log=log("complete")),
        keys[1]: UnitEvidence(jobs=queued, attempts=1),
        keys[2]: UnitEvidence(jobs=queued, attempts=1),
    }, scheduler_known=True)
    by_key = {p.key: p for p in fresh_plan(desired, observation).units}
    assert by_key[keys[0]].action == "none" and "also runs" in by_key[keys[0]].reason
    assert by_key[keys[1]].state == "queued"
    # alone, the same unit's job is cancelled as before
    alone = Observation(units={**observation.units, keys[1]: UnitEvidence(), keys[2]: UnitEvidence()},
                        scheduler_known=True)
    assert {p.key: p for p in fresh_plan(desired, alone).units}[keys[0]].action == "cancel"


# ---------------------------------------------------------------- apply: one submission, journaled per unit


class RecordingBackend:
    def __init__(self) -> None:
        self.requests: list[SubmitRequest] = []

    def submit(self, request: SubmitRequest) -> str:
        self.requests.append(request)
        return str(len(self.requests))


def test_apply_submits_a_group_once_and_journals_it_against_every_unit(tmp_path: Path) -> None:
    from reconciler.apply.apply import apply_plan

    desired = desired_of(tmp_path)
    result = fresh_plan(desired)
    backend = RecordingBackend()
    journal = Journal(tmp_path / ".reconciler")
    applied = apply_plan(result, desired, backend, journal, Snapshot(jobs={}))  # type: ignore[arg-type]
    assert not applied.errors
    tags = [r.tag for r in backend.requests]
    assert tags == ["reconciler:g:finetune/r0", "reconciler:g:eval/r0/ta+tb+tc/epoch0",
                    "reconciler:g:eval/r0/ta+tb+tc/epoch1", "reconciler:g:eval/ctl/ta+tb/base"]
    assert backend.requests[1].depends_on == ("1",) and backend.requests[3].depends_on == ()
    view = journal.read()
    for t in TASKS:
        assert view.history(f"eval/r0/{t}/epoch0").jobs == [("2", desired.by_key()[f"eval/r0/{t}/epoch0"].fingerprint)]
    intents = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert sum(1 for r in intents if r["event"] == "intent" and r["tag"] == tags[1]) == 3


# ---------------------------------------------------------------- how the plan shows it


def test_text_markdown_and_json_plans_say_which_units_share_a_job(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    result = fresh_plan(desired)
    text = io.StringIO()
    plan_render.write_text(result, text)
    assert "Shared jobs: 8 evals in 3 job(s), one model load per checkpoint:" in text.getvalue()
    assert "  eval/r0/{ta,tb,tc}/epoch0 (3 tasks)" in text.getvalue()
    md = io.StringIO()
    plan_markdown.write_markdown(result, md, desired)
    assert "#### Shared jobs (3)" in md.getvalue()
    assert "| `eval/ctl/{ta,tb}/base` | `eval/ctl/ta/base`, `eval/ctl/tb/base` |" in md.getvalue()
    assert "for the 9 unit(s) this plan submits in 4 job(s)" in md.getvalue()
    record = plan_render.plan_record(result)
    assert record["format_version"] == 3
    units = {u["key"]: u for u in record["units"]}
    assert units["eval/r0/tb/epoch1"]["group"] == [f"eval/r0/{t}/epoch1" for t in TASKS]
    assert units["finetune/r0"]["group"] == []
    # ungrouped: the text plan says nothing of shared jobs
    plain = io.StringIO()
    (tmp_path / "off").mkdir()
    plan_render.write_text(fresh_plan(desired_of(tmp_path / "off", grouping="false")), plain)
    assert "Shared jobs" not in plain.getvalue()


def test_the_gpu_hour_estimate_counts_a_shared_job_as_one_job_for_the_sum_of_its_tasks(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    est = plan_markdown.estimate_record(fresh_plan(desired), desired)
    # 1 fine-tune x 2 h + 8 evals x 0.5 h (1B row, 1 GPU); 4 jobs
    assert est["submit"] == {"units": 9, "jobs": 4, "gpu_hours": 6.0, "presumed": 0}


# ---------------------------------------------------------------- the job script


def test_the_shared_job_script_parses_quotes_every_value_and_asks_for_the_sum_of_the_time_limits(
        tmp_path: Path) -> None:
    odd = tmp_path / "it's $HOME; `x`"
    odd.mkdir()
    desired = desired_of(odd, data=str(odd / "d d.json"))
    members = [u for u in desired.units if u.key.endswith("/epoch0")]
    text, res = render_group(desired, members)
    path = tmp_path / "job.sh"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert res.time == "01:30:00" and "#SBATCH --time=01:30:00" in text  # 3 x 0:30:00
    assert "#SBATCH --job-name=eval-r0-ep0-3tasks" in text
    # the driver's input is one shell-quoted JSON argument: read it back as bash would
    line = next(line for line in text.splitlines() if line.startswith("python - ") and "<<'PY'" in line
                and "units" in line)
    words = shlex.split(line.split(" <<'PY'")[0])
    job = json.loads(words[2])
    assert [u["key"] for u in job["units"]] == [u.key for u in members]
    assert job["units"][0]["task_args"]["data_path"] == str(odd / "d d.json")
    assert job["units"][2]["metadata"]["reconciler_unit"] == "eval/r0/tc/epoch0"
    assert job["units"][2]["log_dir"] == str(members[2].log_dir)
    assert job["model_args"]["model_path"] == str(desired.layout.eval_group_model_view("r0", 0))
    # the driver imports inspect-ai only: the cluster's environment has no reconciler
    driver = text.split("<<'PY'\n")[-1]
    assert "reconciler." not in driver.replace("reconciler-group", "")


def test_a_member_whose_cell_script_is_the_users_runs_alone(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    members = [u for u in desired.units if u.key.endswith("/epoch0")]
    members[1].script.parent.mkdir(parents=True)
    members[1].script.write_text("#!/bin/bash\necho mine\n")  # no fingerprint line: the user's
    job = prepare_group(desired, members, {})
    assert job.keys == (members[0].key, members[2].key) and job.alone == (members[1].key,)
    assert job.script.is_file() and members[1].key not in job.script.read_text()
    # a shared script the user edited is never overwritten: every unit then runs alone
    job.script.write_text("#!/bin/bash\necho my group\n")
    again = prepare_group(desired, members, {})
    assert again.keys == () and set(again.alone) == {u.key for u in members}
    assert job.script.read_text() == "#!/bin/bash\necho my group\n"


def test_the_shared_job_activates_the_same_environment_as_its_units_own_scripts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user config's environment (a venv with inspect-ai) is what makes `python` work on the node."""
    from reconciler.scaffold.write import sync_unit

    config = tmp_path / "user.yaml"
    config.write_text("venv: /opt/my env\n")
    monkeypatch.setenv("RECONCILER_CONFIG", str(config))
    (tmp_path / "exp").mkdir()
    desired = desired_of(tmp_path / "exp")
    members = [u for u in desired.units if u.key.endswith("/epoch0")]
    sync_unit(desired, members[0])
    activation = [line for line in members[0].script.read_text().splitlines() if "bin/activate" in line]
    assert activation and "/opt/my env" in activation[0]
    job = prepare_group(desired, members, {})
    assert activation[0] in job.script.read_text().splitlines()


def test_reconcile_cancel_cancels_a_shared_job_once_and_journals_it_for_each_unit(tmp_path: Path) -> None:
    from reconciler.apply.cancel import cancel_all

    desired = desired_of(tmp_path)
    keys = tuple(f"eval/r0/{t}/epoch0" for t in TASKS)

    class Scheduler:
        cancelled: list[list[str]] = []

        def query(self, prefix: str, ids: object) -> Snapshot:
            return Snapshot(jobs={"9": Job("9", PENDING, tag=group_tag("g", keys))})

        def cancel(self, job_ids: list[str]) -> None:
            self.cancelled.append(job_ids)

    scheduler = Scheduler()
    done = cancel_all(desired, scheduler)  # type: ignore[arg-type]
    assert scheduler.cancelled == [["9"]]
    assert sorted(done) == sorted((key, "9") for key in keys)
