"""Helpers for integration tests: a private copy of the demo and the real `reconcile` command.

Used on the local backend (tests/integration) and on the real SLURM cluster (tests/slurm): the
job-counting helpers take `backend="local"` or `backend="slurm"`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import yaml

from reconciler.jobs import Job, job_order
from tests.conftest import REPO
from tests.jobrecords import local_jobs

DEMO = REPO / "tests" / "standin" / "experiment"  # the stand-in experiment: seconds per job
TASK_FILE = REPO / "examples" / "capitalization" / "inspect_task.py"  # shared with the real demo
SYSTEM_BIN = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin"


def copy_demo(dst: Path, seconds_per_epoch: float = 0.3, experiment: str | None = None,
              runs: Sequence[str] | None = None) -> Path:
    """The demo's files (not its outputs) in `dst`, with faster epochs.

    `experiment` renames the experiment (with-failure.yaml's becomes `{experiment}_failing`), so
    that its jobs' tags meet no other test's on a shared scheduler. `runs` keeps only these runs
    of experiment_summary.yaml, and their matrix cells.
    """
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(TASK_FILE, dst / "inspect_task.py")
    for name in ("experiment_summary.yaml", "with-failure.yaml"):
        text = (DEMO / name).read_text()
        text = re.sub(r"seconds_per_epoch: [0-9.]+", f"seconds_per_epoch: {seconds_per_epoch}", text)
        if experiment is not None:
            text = re.sub(r'^(  name: )"capitalization_demo(_failing)?"', rf'\1"{experiment}\2"', text, flags=re.MULTILINE)
        (dst / name).write_text(text)
    if runs is not None:
        path = dst / "experiment_summary.yaml"
        data = yaml.safe_load(path.read_text())
        data["runs"] = [r for r in data["runs"] if r["name"] in runs]
        data["evaluation"]["matrix"] = [m for m in data["evaluation"]["matrix"] if m["run"] in runs]
        assert len(data["runs"]) == len(runs), f"not runs of the demo: {runs}"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("data", "base_model"):
        shutil.copytree(DEMO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Jobs run `python` and `inspect`: the test interpreter's bin directory comes first."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    # `runner` modules live under tests/: importable whatever the working directory.
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH", "")) if p)
    out.pop("RECONCILER_CONFIG", None)
    out.update(extra or {})
    return out


def reconcile(*args: str, timeout: float = 240, check: bool = False, runner: str = "reconciler",
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m {runner} ARGS`: the real CLI (or a test runner module that wraps it)."""
    proc = subprocess.run([sys.executable, "-m", runner, *args], check=False, capture_output=True, text=True,
                          env=env(extra_env), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"reconcile {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start(*args: str, runner: str = "reconciler", extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", runner, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(extra_env))


def jobs_by_unit(exp_dir: Path, experiment: str, backend: str = "local") -> dict[str, list[Job]]:
    """Every job the scheduler ever held for this experiment, by unit key (from the tag).

    Read from the scheduler's own records: sacct, scontrol and squeue on SLURM; the local backend's
    job files read by tests/jobrecords.py (not through LocalBackend, which is what is being checked).
    """
    prefix = f"reconciler:{experiment}:"
    if backend != "slurm":
        return local_jobs(exp_dir, experiment)  # the job record files, not LocalBackend's answer
    jobs = slurm_jobs_with_prefix(prefix)
    out: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        assert job.tag and job.tag.startswith(prefix)
        out[job.tag[len(prefix):]].append(job)
    return dict(out)


def slurm_jobs_with_prefix(prefix: str, days: int = 2) -> list[Job]:
    """Every job on the SLURM cluster whose tag (--comment) starts with `prefix`, live or ended.

    Accounting (sacct) holds every job, but fills Comment only once a job has ended and may lag
    a moment; the controller (scontrol, jobs ended less than MinJobAge ago) and squeue hold the
    live ones with their comment and are fresher, so they win. An id in no source is not a job.
    """
    from reconciler.backends.slurm.commands import command_env
    from reconciler.backends.slurm.parse import (
        SACCT_FORMAT,
        SEP,
        SQUEUE_FORMAT,
        parse_sacct,
        parse_scontrol_jobs,
        parse_squeue,
    )

    def run(argv: list[str]) -> str:
        # The installed binary, not a test's wrapper earlier on PATH (it would count this call).
        argv = [shutil.which(argv[0], path=SYSTEM_BIN) or argv[0], *argv[1:]]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, env=command_env(), timeout=60)
        return done.stdout if done.returncode == 0 else ""

    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - days * 86400))
    found: dict[str, Job] = {}
    for job in parse_sacct(run(["sacct", "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations",
                                f"--starttime={start}", "--endtime=now", f"--format={SACCT_FORMAT}"])):
        found[job.job_id] = job
    for job in parse_scontrol_jobs(run(["scontrol", "show", "job", "--oneliner"])):
        found[job.job_id] = job
    for job in parse_squeue(run(["squeue", "--me", "--noheader", f"--format={SQUEUE_FORMAT}"])):
        found[job.job_id] = job
    return sorted((j for j in found.values() if j.tag and j.tag.startswith(prefix)), key=lambda j: job_order(j.job_id))


def assert_one_success_and_no_overlap(exp_dir: Path, experiment: str, units: int, backend: str = "local") -> None:
    """Exactly one successful job per unit, and never two jobs of one unit alive at once."""
    jobs = jobs_by_unit(exp_dir, experiment, backend)
    assert len(jobs) == units, sorted(jobs)
    for unit, unit_jobs in jobs.items():
        completed = [j for j in unit_jobs if j.state == "COMPLETED" and not j.exit_code]
        assert len(completed) == 1, (unit, unit_jobs)
        spans = sorted((j.submitted_at or 0, j.ended_at or float("inf")) for j in unit_jobs)
        for (_, end), (begin, _) in zip(spans, spans[1:]):
            assert begin >= end, f"{unit}: two live jobs at once: {unit_jobs}"


def status_json(exp: Path, backend: str = "local") -> dict:
    proc = reconcile("status", str(exp), "--json", "--backend", backend, check=True)
    return json.loads(proc.stdout)


def journal_events(exp_dir: Path, event: str) -> list[dict]:
    path = exp_dir / ".reconciler" / "journal.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]
