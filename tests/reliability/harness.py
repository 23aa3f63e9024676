"""Shared machinery for the reliability suite: a small experiment, the real command, job counts.

Every test here answers the same questions after its faults: how many jobs did each unit get
(duplicates), did every unit end done (lost units), and did the reconciler ever call a unit
something it was not (wrong states). `Tally` records the answers for the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

import yaml

from reconciler.backends.base import Job
from reconciler.backends.local import LocalBackend
from reconciler.backends.slurm.parse import (
    SACCT_FORMAT,
    SEP,
    parse_sacct,
    parse_scontrol_jobs,
)
from reconciler.spec.yamlpos import load_yaml
from tests.conftest import REPO
from tests.integration.demo_env import copy_demo

# finetune/run, eval/run/task/epoch0, eval/base/task/base
SMALL_UNITS = 3
RUN = "rank4_lr5e-5"
UNIT_KEYS = (f"finetune/{RUN}", f"eval/{RUN}/capitalization/epoch0", "eval/base/capitalization/base")
# Tiny requests the single-node test cluster can always grant (the demo's model name reads as 1B: 1 GPU).
SLURM_COMPUTE = {"gpus": 0, "mem": "1G", "cpus_per_task": 1, "time": "0:10:00"}
# Retry policy for runs through the runner: 3 tries, 1.5 s per command (see runner.py).
FAST_RETRY = "3,1.5"
RETRY_ATTEMPTS = 3
RETRY_TIMEOUT = 1.5


def unique_name(prefix: str) -> str:
    """A fresh experiment name: tags (and so job searches) never meet another test's jobs."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def small_experiment(dst: Path, name: str, *, slurm: bool = False, seconds_per_epoch: float = 0.2,
                     epochs: int = 1) -> Path:
    """The demo cut down to one fine-tune (one epoch by default), its eval and the base-model eval.

    Jobs ask for one core, no GPU and little memory, so the single-node test cluster runs two at
    once (the local backend ignores these requests). `slurm` is accepted for symmetry.
    """
    exp = copy_demo(dst, seconds_per_epoch=seconds_per_epoch)
    (exp / "with-failure.yaml").unlink()
    path = exp / "experiment_summary.yaml"
    data = load_yaml(path).data
    data["experiment"]["name"] = name
    data["controls"]["epochs"] = epochs
    data["controls"]["seconds_per_epoch"] = seconds_per_epoch
    data["runs"] = [r for r in data["runs"] if r["name"] in (RUN, "base")]
    for run in data["runs"]:
        if run["type"] == "fine-tuned":
            run["compute"] = dict(SLURM_COMPUTE)
    data["evaluation"]["compute"] = dict(SLURM_COMPUTE)
    matrix = [m for m in data["evaluation"]["matrix"] if m["run"] in (RUN, "base")]
    for cell in matrix:
        if cell.get("epochs") is not None:
            cell["epochs"] = list(range(epochs))
    data["evaluation"]["matrix"] = matrix
    assert len(data["runs"]) == 2 and len(matrix) == 2, data
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return exp


# ------------------------------------------------------------------ running the command


def command_env(extra: dict[str, str] | None = None, path_first: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    bins = [str(Path(sys.executable).parent)]
    if path_first is not None:
        bins.insert(0, str(path_first))
    env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
    env["PYTHONPATH"] = str(REPO)
    env["RELIABILITY_RETRY"] = FAST_RETRY
    env.pop("RECONCILER_CONFIG", None)
    env.pop("RECONCILER_CRASH_AT", None)
    env.update(extra or {})
    return env


def reconcile(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process (through runner.py: fast retries, fast polling allowed)."""
    return subprocess.run([sys.executable, "-m", "tests.reliability.runner", *args], check=False, capture_output=True,
                          text=True, env=env or command_env(), timeout=timeout, cwd=cwd or REPO)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.runner", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or command_env(), cwd=REPO)


def converge(exp: Path, backend: str, env: dict[str, str] | None = None, timeout: float = 180) -> \
        subprocess.CompletedProcess[str]:
    """`apply --watch` until converged (the runner lets SLURM be polled every second)."""
    proc = reconcile("apply", str(exp), "--watch", "--interval", "0.5" if backend == "local" else "1",
                     "--backend", backend, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"no convergence (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def status_states(exp: Path, backend: str, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = reconcile("status", str(exp), "--json", "--backend", backend, env=env)
    assert proc.returncode == 0, proc.stderr
    return {u["key"]: u["state"] for u in json.loads(proc.stdout)["units"]}


def journal(exp: Path, event: str | None = None) -> list[dict]:
    path = exp / ".reconciler" / "journal.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if event is None or rec.get("event") == event:
            out.append(rec)
    return out


# ------------------------------------------------------------------ counting jobs


def local_jobs(exp: Path, experiment: str) -> dict[str, list[Job]]:
    """Every job the local scheduler ever held for this experiment, by unit (from the tag)."""
    prefix = f"reconciler:{experiment}:"
    snapshot = LocalBackend(exp / ".reconciler" / "local").query(prefix, [])
    out: dict[str, list[Job]] = defaultdict(list)
    for job in snapshot.jobs.values():
        if job.tag and job.tag.startswith(prefix):
            out[job.tag[len(prefix):]].append(job)
    return dict(out)


def slurm_jobs(experiment: str, since: float) -> dict[str, list[Job]]:
    """Every job of this experiment the cluster knows: the controller's memory (MinJobAge) and accounting.

    Bypasses every wrapper (absolute paths of the real commands), so fault injection cannot hide a job.
    """
    prefix = f"reconciler:{experiment}:"
    found: dict[str, Job] = {}
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 120))
    env = {**os.environ, "SLURM_TIME_FORMAT": "standard", "LC_ALL": "C"}
    sacct = subprocess.run([real_command("sacct"), "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations",
                            "--allusers", f"--starttime={start}", "--endtime=now", f"--format={SACCT_FORMAT}"],
                           check=False, capture_output=True, text=True, env=env, timeout=60)
    if sacct.returncode == 0:
        for job in parse_sacct(sacct.stdout):
            if job.tag and job.tag.startswith(prefix):
                found[job.job_id] = job
    ctl = subprocess.run([real_command("scontrol"), "show", "job", "--oneliner"], check=False, capture_output=True,
                         text=True,
                         env=env, timeout=60)
    if ctl.returncode == 0:
        for job in parse_scontrol_jobs(ctl.stdout):
            if job.tag and job.tag.startswith(prefix):
                found[job.job_id] = job  # the controller is fresher than accounting
    out: dict[str, list[Job]] = defaultdict(list)
    for job in found.values():
        assert job.tag is not None
        out[job.tag[len(prefix):]].append(job)
    return dict(out)


_REAL: dict[str, str] = {}


def real_command(name: str) -> str:
    """The real SLURM binary, found on PATH without any test directory in front."""
    if name not in _REAL:
        for directory in os.environ.get("PATH", "").split(os.pathsep):
            candidate = Path(directory) / name
            if "pytest-of" in directory or "/tmp/" in directory:
                continue
            if candidate.is_file() and os.access(candidate, os.X_OK):
                _REAL[name] = str(candidate)
                break
        else:
            raise FileNotFoundError(name)
    return _REAL[name]


@dataclass
class Verdict:
    units: int
    duplicates: int  # jobs beyond one per unit
    lost: int  # units without exactly one successful job
    detail: str = ""


def verdict(jobs: dict[str, list[Job]], expected: tuple[str, ...] | list[str],
            successes: dict[str, int] | None = None, strict: bool = True) -> Verdict:
    """Count duplicates and lost units.

    A unit is lost when it has fewer successful jobs than expected (1, or `successes[key]` when a
    test destroyed a unit's output on purpose). Duplicates: successful jobs beyond that, two jobs
    of a unit alive at the same time, and (`strict`, when nothing was meant to fail) any job that
    did not succeed.
    """
    successes = successes or {}
    duplicates = lost = 0
    for key in expected:
        unit_jobs = jobs.get(key, [])
        ok = [j for j in unit_jobs if j.state == "COMPLETED" and not j.exit_code]
        want = successes.get(key, 1)
        duplicates += max(0, len(ok) - want) + overlaps(unit_jobs)
        if strict:
            duplicates += len(unit_jobs) - len(ok)
        lost += len(ok) < want
    duplicates += sum(len(v) for k, v in jobs.items() if k not in expected)
    detail = "; ".join(f"{k}: {[(j.job_id, j.state, j.exit_code) for j in v]}" for k, v in sorted(jobs.items()))
    return Verdict(units=len(expected), duplicates=duplicates, lost=lost, detail=detail)


def overlaps(unit_jobs: list[Job]) -> int:
    """Pairs of one unit's jobs whose lives overlap (submitted before the previous one ended)."""
    spans = sorted((j.submitted_at or 0.0, j.ended_at if j.ended_at is not None else float("inf")) for j in unit_jobs)
    return sum(1 for (_, end), (begin, _) in pairwise(spans) if begin < end)


def wait_for_slurm_jobs(experiment: str, since: float, expected: tuple[str, ...], timeout: float = 60) -> \
        dict[str, list[Job]]:
    """Jobs of the experiment once none is live (accounting and the controller can lag a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = slurm_jobs(experiment, since)
        settled = all(jobs.get(k) for k in expected) and not any(j.live for v in jobs.values() for j in v)
        if settled or time.monotonic() > deadline:
            return jobs
        time.sleep(1)


# ------------------------------------------------------------------ the report's records


@dataclass
class Record:
    fault_class: str
    backend: str
    case: str
    faults: int
    runs: int
    units: int
    duplicates: int
    lost: int
    wrong_states: int
    seconds: float = 0.0


@dataclass
class Tally:
    """Collects one Record per test case; conftest prints them and writes RELIABILITY_RESULTS."""

    records: list[Record] = field(default_factory=list)

    def add(self, record: Record) -> Record:
        self.records.append(record)
        path = os.environ.get("RELIABILITY_RESULTS")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(record)) + "\n")
        return record
