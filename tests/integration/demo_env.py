"""Helpers for integration tests: a private copy of the demo and the real `reconcile` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from reconciler.backends.base import Job
from reconciler.backends.local import LocalBackend
from tests.conftest import REPO

DEMO = REPO / "examples" / "capitalization"


def copy_demo(dst: Path, seconds_per_epoch: float = 0.3) -> Path:
    """The demo's files (not its outputs) in `dst`, with faster epochs."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("experiment_summary.yaml", "with-failure.yaml", "inspect_task.py"):
        text = (DEMO / name).read_text()
        text = re.sub(r"seconds_per_epoch: [0-9.]+", f"seconds_per_epoch: {seconds_per_epoch}", text)
        (dst / name).write_text(text)
    for name in ("data", "base_model"):
        shutil.copytree(DEMO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def env() -> dict[str, str]:
    """Jobs run `python` and `inspect`: the test interpreter's bin directory comes first."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out.pop("RECONCILER_CONFIG", None)
    return out


def reconcile(*args: str, timeout: float = 240, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          env=env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"reconcile {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "reconciler", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def jobs_by_unit(exp_dir: Path, experiment: str) -> dict[str, list[Job]]:
    """Every job the local scheduler ever ran for this experiment, by unit key (from the tag)."""
    prefix = f"reconciler:{experiment}:"
    snapshot = LocalBackend(exp_dir / ".reconciler" / "local").query(prefix, [])
    out: dict[str, list[Job]] = defaultdict(list)
    for job in snapshot.jobs.values():
        assert job.tag and job.tag.startswith(prefix)
        out[job.tag[len(prefix):]].append(job)
    return dict(out)


def assert_one_success_and_no_overlap(exp_dir: Path, experiment: str, units: int) -> None:
    """Exactly one successful job per unit, and never two jobs of one unit alive at once."""
    jobs = jobs_by_unit(exp_dir, experiment)
    assert len(jobs) == units, sorted(jobs)
    for unit, unit_jobs in jobs.items():
        completed = [j for j in unit_jobs if j.state == "COMPLETED" and not j.exit_code]
        assert len(completed) == 1, (unit, unit_jobs)
        spans = sorted((j.submitted_at or 0, j.ended_at or float("inf")) for j in unit_jobs)
        for (_, end), (begin, _) in zip(spans, spans[1:]):
            assert begin >= end, f"{unit}: two live jobs at once: {unit_jobs}"


def status_json(exp: Path) -> dict:
    proc = reconcile("status", str(exp), "--json", "--backend", "local", check=True)
    return json.loads(proc.stdout)


def journal_events(exp_dir: Path, event: str) -> list[dict]:
    path = exp_dir / ".reconciler" / "journal.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]
