"""A job that evaluates several tasks on one checkpoint: the model is loaded once, each task writes its own log.

The plan puts the pending evals of one checkpoint into one job (plan._grouped). The job runs a
small Python driver that imports inspect-ai only (the cluster's environment has inspect-ai, not the
reconciler): `get_model` once, then one inspect-ai `eval` call per unit, each with that unit's task arguments,
metadata and per-cell log directory, so every unit is still observed from its own `.eval` log. The
driver goes on after a failed task, says each start and end on stdout, and exits 1 if any task did
not succeed; the logs, not that code, say which units are done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.timefmt import format_time_limit, parse_time_limit
from reconciler.fsutil import atomic_write_text
from reconciler.spec.fingerprint import FINGERPRINT_MARK, read_script_fingerprint
from reconciler.plan.remedies import Remedy
from reconciler.scaffold.render import (
    CHECKPOINT_VIEW_COMMENT,
    CHECKPOINT_VIEW_PY,
    NO_ENVIRONMENT,
    SCRIPT_MODE,
    q,
    sbatch_lines,
)
from reconciler.scaffold.resources import NO_USER_CONFIG, Resources, UserConfig, resources_for
from reconciler.scaffold.values import base_model_path, eval_values, find_run
from reconciler.spec.units import Desired, Unit

DRIVER_MARK = "reconciler-group:"  # every line the driver prints starts with it

DRIVER_PY = """\
import json, sys, time
from inspect_ai import eval as inspect_eval
from inspect_ai.model import get_model
job = json.loads(sys.argv[1])
start = time.time()
model = get_model(job["model_api"], **job["model_args"])
print(f"reconciler-group: model loaded once for {len(job['units'])} tasks "
      f"({time.time() - start:.1f} s): {job['model_args'].get('model_path')}", flush=True)
failed = []
for unit in job["units"]:
    print(f"reconciler-group: start {unit['key']}", flush=True)
    status = "error"
    try:
        logs = inspect_eval(unit["task"], model=model, task_args=unit["task_args"], metadata=unit["metadata"],
                            log_dir=unit["log_dir"], display="none", **job["generate"])
        status = logs[0].status if logs else "no log"
    except Exception as exc:  # a task that cannot even start: the next one still runs
        print(f"reconciler-group: {unit['key']} raised {type(exc).__name__}: {exc}", flush=True)
    print(f"reconciler-group: end {unit['key']} {status} ({time.time() - start:.1f} s)", flush=True)
    if status != "success":
        failed.append(unit["key"])
if failed:
    print(f"reconciler-group: {len(failed)} of {len(job['units'])} tasks did not succeed: {' '.join(failed)}",
          flush=True)
    sys.exit(1)"""


@dataclass(frozen=True)
class GroupJob:
    """What apply submits for a group: the units the shared job runs, and those that run alone."""

    keys: tuple[str, ...]  # in the shared job (two or more), or () when every unit runs alone
    alone: tuple[str, ...]  # their own job script: a user's edit is never bypassed
    script: Path
    job_name: str
    stdout: Path
    workdir: Path
    resources: Resources | None = None
    note: str = ""


def group_job_name(leader: Unit, n: int) -> str:
    cell = f"ep{leader.epoch}" if leader.epoch is not None else "base"
    return f"eval-{leader.run}-{cell}-{n}tasks"


def group_paths(desired: Desired, members: list[Unit]) -> GroupJob:
    """Where the shared job's files go (nothing written): the run's eval directory, named by the checkpoint."""
    leader = members[0]
    layout = desired.layout
    return GroupJob(keys=tuple(u.key for u in members), alone=(),
                    script=layout.eval_group_script(leader.run, leader.epoch),
                    job_name=group_job_name(leader, len(members)),
                    stdout=layout.eval_group_stdout(leader.run, leader.epoch),
                    workdir=layout.eval_dir(leader.run))


def prepare_group(desired: Desired, members: list[Unit], remedies: dict[str, Remedy | None],
                  user: UserConfig | None = None) -> GroupJob:
    """Render and write the shared job's script. Call after each member's own files are prepared
    (its config, which its task reads, and its own script): a member whose script is the user's
    runs alone with it, and a group script the user edited is never overwritten (all run alone)."""
    from reconciler.scaffold.resources import load_user_config
    from reconciler.scaffold.write import allowed_roots, check_inside, make_dirs

    user = load_user_config() if user is None else user  # as each member's own script (write.sync_unit)

    own = [u for u in members if _users_script(u.script)]
    joined = [u for u in members if u not in own]
    job = group_paths(desired, joined or members)
    if len(joined) < 2:
        return replace(job, keys=(), alone=tuple(u.key for u in members),
                       note="fewer than two units left to share a job")
    if _users_script(job.script):
        return replace(job, keys=(), alone=tuple(u.key for u in members),
                       note=f"{job.script} has no fingerprint line (edited by its user): each unit runs its own script")
    text, res = render_group(desired, joined, remedies, user)
    roots = allowed_roots(desired.layout)
    for path in (job.script, job.stdout.parent, job.workdir):
        check_inside(path, roots)
    make_dirs(job.script.parent)
    try:
        current = job.script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        try:
            atomic_write_text(job.script, text, SCRIPT_MODE)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(job.script)) from exc
    return replace(job, alone=tuple(u.key for u in own), resources=res)


def _users_script(path: Path) -> bool:
    return (path.exists() or path.is_symlink()) and read_script_fingerprint(path) is None


def _with_job_id(pattern: Path) -> str:
    """A stdout pattern for the shell: each part quoted, `%j` the running job's id."""
    return '"$SLURM_JOB_ID"'.join(q(part) if part else "" for part in str(pattern).split("%j"))


def group_fingerprint(members: list[Unit]) -> str:
    return hashlib.sha256("\0".join(f"{u.key}={u.fingerprint}" for u in members).encode()).hexdigest()[:16]


def group_resources(desired: Desired, members: list[Unit], remedies: dict[str, Remedy | None],
                    user: UserConfig = NO_USER_CONFIG) -> Resources:
    """One model's memory and GPUs; a time limit that covers every task: the sum of theirs (a
    timeout's remedy included), since the tasks run one after another."""
    res = resources_for(desired.loaded, members[0], user)
    seconds = 0
    for unit in members:
        remedy = remedies.get(unit.key)
        own = remedy.time if remedy is not None and remedy.time else resources_for(desired.loaded, unit, user).time
        seconds += parse_time_limit(own) or 0
    return replace(res, time=format_time_limit(seconds))


def render_group(desired: Desired, members: list[Unit], remedies: dict[str, Remedy | None] | None = None,
                 user: UserConfig = NO_USER_CONFIG) -> tuple[str, Resources]:
    """The shared job's script (pure). Every value is shell-quoted; the driver's inputs travel as
    one JSON argument, never spliced into its code."""
    loaded, layout = desired.loaded, desired.layout
    spec = loaded.spec
    leader = members[0]
    res = group_resources(desired, members, remedies or {}, user)
    job = group_paths(desired, members)
    first = eval_values(loaded, leader)
    load_path: Path = first.model_path
    view: list[str] = []
    if leader.needs_epoch is not None:
        load_path = layout.eval_group_model_view(leader.run, leader.epoch)
        base = base_model_path(loaded, find_run(loaded, leader.run))
        view = [*CHECKPOINT_VIEW_COMMENT,
                f"python - {q(first.model_path)} {q(base)} {q(load_path)} <<'PY' || exit 1", CHECKPOINT_VIEW_PY, "PY"]
    model_args: dict[str, Any] = {"model_path": str(load_path)}
    if res.device != "cuda":
        model_args["device"] = res.device
    generate: dict[str, Any] = {"seed": first.seed}
    if first.do_sample and first.temperature is not None:
        generate["temperature"] = first.temperature
    if first.max_tokens is not None:
        generate["max_tokens"] = first.max_tokens
    if first.max_connections is not None:
        generate["max_connections"] = first.max_connections
    units = []
    for unit in members:
        assert unit.task is not None and unit.log_dir is not None
        v = eval_values(loaded, unit)
        # The metadata the single-unit script gives inspect on its command line, with the types
        # inspect's YAML parsing gives them there.
        metadata: dict[str, Any] = {"run": v.run}
        if v.epoch is not None:
            metadata.update(epoch=v.epoch, checkpoint=str(v.model_path))
        metadata.update(is_finetuned=v.is_finetuned, source_model=v.source_model, reconciler_unit=unit.key,
                        reconciler_fingerprint="fp-" + unit.fingerprint)
        units.append({
            "key": unit.key,
            "task": f"{v.task_script}@{v.task_name}",
            "task_args": {"data_path": str(v.data_path),
                          "config_path": str(layout.eval_config(unit.run, unit.task, unit.epoch)),
                          "vis_label": v.vis_label},
            "metadata": metadata,
            "log_dir": str(unit.log_dir),
        })
    payload = json.dumps({"model_api": spec.tools.model_api, "model_args": model_args, "generate": generate,
                          "units": units}, sort_keys=True)
    lines = ["#!/bin/bash", f"{FINGERPRINT_MARK} {group_fingerprint(members)}",
             "# Generated by reconciler: one job for the evals of one checkpoint (evaluation.group_by_checkpoint).",
             "# Rewritten at each submission. To run a unit with a script of your own, edit that unit's cell script",
             "# (and delete its fingerprint line): it then runs alone.",
             *(f"# Unit: {unit.key}" for unit in members)]
    lines += sbatch_lines(job.job_name, job.stdout, res)
    lines += ["", "# Environment (the experiment's reconciler: block, else the user config)", *res.environment] \
        if res.environment else ["", *NO_ENVIRONMENT]
    log_dirs = " ".join(q(unit.log_dir) for unit in members)
    lines += [
        "",
        "export HF_HUB_OFFLINE=1",
        'export HF_DATASETS_CACHE="${TMPDIR:-/tmp}/reconciler-hf-datasets-${SLURM_JOB_ID:-$$}"',
        f'mkdir -p -- {log_dirs} "$HF_DATASETS_CACHE"',
        f"cd -- {q(job.workdir)} || exit 1",
        # Each cell's usual stdout name leads to this job's output (status and summaries look there).
        *(f"ln -sfn -- {_with_job_id(job.stdout)} {_with_job_id(unit.stdout)} 2>/dev/null || true" for unit in members),
        *view,
        "# One model load, then each task in turn, each writing its own .eval log in its cell's logs/.",
        f"python - {q(payload)} <<'PY'",
        DRIVER_PY,
        "PY",
        "status=$?",
        'rm -rf -- "$HF_DATASETS_CACHE"',
        # The logs, not this code, say which units are done.
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n", res
