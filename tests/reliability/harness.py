"""Shared machinery for the reliability suite: a small experiment, the real command, and the counting.

Every case answers the same questions after its faults, from evidence the reconciler does not
produce: how many jobs did each unit get (duplicates), does every unit have its successful job and
its output on disk (lost units), did the reconciler ever call a unit something it was not (wrong
states), did any run print a traceback, and did the case's own checks hold. Jobs are counted from
the scheduler's own accounting (sacct and scontrol, past every wrapper) on SLURM, and from the local
backend's record files read by `tests/jobrecords.py` (not through `LocalBackend`). A `Case` records
those counts whether its checks pass or fail, so a failure shows in the table as a non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from types import TracebackType

import pytest
import yaml

from reconciler.jobs import Job
from reconciler.backends.slurm.parse import (
    SACCT_FORMAT,
    SEP,
    parse_sacct,
    parse_scontrol_jobs,
)
from reconciler.spec.yamlpos import load_yaml
from tests.conftest import REPO
from tests.integration.demo_env import copy_demo
from tests.jobrecords import local_jobs

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
    lost: int  # units without their successful job, or without their output on disk
    detail: str = ""


def verdict(jobs: dict[str, list[Job]], expected: tuple[str, ...] | list[str],
            successes: dict[str, int] | None = None, strict: bool = True,
            on_disk: dict[str, bool] | None = None) -> Verdict:
    """Count duplicates and lost units.

    A unit is lost when it has fewer successful jobs than expected (1, or `successes[key]` when a
    test destroyed a unit's output on purpose), or when `on_disk` says its output is not there.
    Duplicates: successful jobs beyond that, two jobs of a unit alive at the same time, jobs of
    units the experiment does not have, and (`strict`, when nothing was meant to fail) any job
    that did not succeed.
    """
    successes = successes or {}
    duplicates = lost = 0
    missing_output = []
    for key in expected:
        unit_jobs = jobs.get(key, [])
        ok = [j for j in unit_jobs if j.state == "COMPLETED" and not j.exit_code]
        want = successes.get(key, 1)
        duplicates += max(0, len(ok) - want) + overlaps(unit_jobs)
        if strict:
            duplicates += len(unit_jobs) - len(ok)
        gone = on_disk is not None and not on_disk.get(key, False)
        if gone:
            missing_output.append(key)
        lost += len(ok) < want or gone
    duplicates += sum(len(v) for k, v in jobs.items() if k not in expected)
    detail = "; ".join(f"{k}: {[(j.job_id, j.state, j.exit_code) for j in v]}" for k, v in sorted(jobs.items()))
    if missing_output:
        detail += f"; no output on disk: {missing_output}"
    return Verdict(units=len(expected), duplicates=duplicates, lost=lost, detail=detail)


def overlaps(unit_jobs: list[Job]) -> int:
    """Pairs of one unit's jobs whose lives overlap (submitted before the previous one ended)."""
    spans = sorted((j.submitted_at or 0.0, j.ended_at if j.ended_at is not None else float("inf")) for j in unit_jobs)
    return sum(1 for (_, end), (begin, _) in pairwise(spans) if begin < end)


def outputs_on_disk(exp: Path, keys: Iterable[str]) -> dict[str, bool]:
    """Whether each unit's output is on disk, read with zipfile and json alone (no reconciler code).

    A fine-tune: every `{run}/artifacts/epoch_N/` of `controls.epochs` holds adapter_config.json
    and adapter weights. An eval: its cell's `logs/` holds a `.eval` whose header.json says success.
    """
    epochs = yaml.safe_load((exp / "experiment_summary.yaml").read_text())["controls"]["epochs"]
    out = {}
    for key in keys:
        kind, run, *rest = key.split("/")
        if kind == "finetune":
            dirs = [exp / run / "artifacts" / f"epoch_{n}" for n in range(epochs)]
            out[key] = all((d / "adapter_config.json").is_file() and any(d.glob("adapter_model.*")) for d in dirs)
        else:
            task, epoch = rest
            cell = task if epoch == "base" else f"{task}_{epoch}"
            out[key] = any(_log_succeeded(log) for log in (exp / run / "eval" / cell / "logs").glob("*.eval"))
    return out


def _log_succeeded(path: Path) -> bool:
    if sys.version_info < (3, 14):
        import zipfile_zstd  # noqa: F401  (inspect-ai writes zstd members; this teaches zipfile to read them)
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("header.json")).get("status") == "success"
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


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
    """What came of one case, counted from independent evidence (see the module doc)."""

    fault_class: str
    backend: str
    case: str
    ran: int = 1  # 0: skipped, or its fault was never injected
    faults: int = 0
    runs: int = 0
    units: int = 0
    duplicates: int = 0
    lost: int = 0
    wrong_states: int = 0
    tracebacks: int = 0
    failed: int = 0  # 1 when one of the case's own checks failed
    seconds: float = 0.0
    detail: str = ""

    def problems(self) -> list[str]:
        names = ("duplicates", "lost", "wrong_states", "tracebacks")
        return [f"{name} {getattr(self, name)}" for name in names if getattr(self, name)]


@dataclass
class Tally:
    """Collects one Record per case; conftest prints them, and `path` (RELIABILITY_RESULTS) keeps them."""

    records: list[Record] = field(default_factory=list)
    path: str | None = None

    def add(self, record: Record) -> Record:
        self.records.append(record)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(record)) + "\n")
        return record


def has_traceback(*texts: str | None) -> bool:
    return any(t and "Traceback (most recent call last)" in t for t in texts)


@dataclass
class Expectation:
    """How a case's outcome is counted at its end: whose jobs, which units, what counts as success."""

    exp: Path
    name: str
    backend: str
    keys: tuple[str, ...]
    since: float = 0.0
    successes: dict[str, int] | None = None
    strict: bool = True
    env: dict[str, str] | None = None
    done: bool = True  # every unit must end done (status) with its output on disk


class Case:
    """One case of the table, used as `with Case(tally, CLASS, backend, name) as case:`.

    Runs go through `case.reconcile`/`converge`/`status` (counted, tracebacks looked for); faults are
    counted with `case.fault()`; `case.expect(...)` says how the outcome is counted; `case.check()`
    counts it and asserts. On leaving the block, pass or fail, the outcome is counted if it was not
    yet and the Record is added to the tally: a failing case shows its failure in the table.
    """

    def __init__(self, tally: Tally, fault_class: str, backend: str, name: str) -> None:
        self.tally = tally
        self.record = Record(fault_class, backend, name)
        self.expectation: Expectation | None = None
        self.notes: list[str] = []
        self._measured = False
        self._started = time.monotonic()

    def __enter__(self) -> Case:
        self._started = time.monotonic()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if kind is not None and issubclass(kind, pytest.skip.Exception):
            self.record.ran = 0
        elif kind is not None:
            self.record.failed = 1
            self.notes.append(f"{kind.__name__}: {str(exc)[:400]}")
        if not self._measured and self.expectation is not None and self.record.ran:
            try:
                self.measure()
            except Exception as error:  # noqa: BLE001 - the record must be written whatever happens
                self.record.failed = 1
                self.notes.append(f"counting failed: {type(error).__name__}: {error}")
        self.record.seconds = time.monotonic() - self._started
        self.record.detail = " | ".join(self.notes)[:2000]
        self.tally.add(self.record)
        return False

    # -- what happened along the way

    def fault(self, n: int = 1) -> None:
        self.record.faults += n

    def wrong(self, n: int | bool, what: str = "") -> None:
        if n:
            self.record.wrong_states += int(n)
            self.notes.append(f"wrong state: {what}")

    def saw(self, proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        """Count a finished reconciler run and look for a traceback in what it printed."""
        self.record.runs += 1
        if has_traceback(proc.stdout, proc.stderr):
            self.record.tracebacks += 1
            self.notes.append(f"traceback: {(proc.stderr or proc.stdout)[-600:]}")
        return proc

    def reconcile(self, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.saw(reconcile(*args, env=env, timeout=timeout))

    def converge(self, exp: Path, backend: str, env: dict[str, str] | None = None,
                 timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = self.reconcile("apply", str(exp), "--watch", "--interval", "0.5" if backend == "local" else "1",
                              "--backend", backend, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"no convergence (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        return proc

    def status(self, exp: Path, backend: str, env: dict[str, str] | None = None) -> dict[str, str]:
        proc = self.reconcile("status", str(exp), "--json", "--backend", backend, env=env)
        assert proc.returncode == 0, proc.stderr
        return {u["key"]: u["state"] for u in json.loads(proc.stdout)["units"]}

    def not_reached(self, why: str) -> None:
        """The case's fault never happened: it did not run (and fails)."""
        self.record.ran = 0
        raise AssertionError(f"the case did not run: {why}")

    # -- the outcome

    def expect(self, exp: Path, name: str, backend: str, keys: tuple[str, ...] = UNIT_KEYS, *, since: float = 0.0,
               successes: dict[str, int] | None = None, strict: bool = True, env: dict[str, str] | None = None,
               done: bool = True) -> None:
        self.expectation = Expectation(exp, name, backend, tuple(keys), since, successes, strict, env, done)

    def measure(self, jobs: Callable[[], dict[str, list[Job]]] | None = None) -> Record:
        """Count jobs (scheduler accounting or the local records), outputs on disk and reported states."""
        assert self.expectation is not None, "case.expect(...) first"
        e = self.expectation
        self._measured = True
        if jobs is not None:
            found = jobs()
        elif e.backend == "slurm":
            found = wait_for_slurm_jobs(e.name, e.since, e.keys)
        else:
            found = local_jobs(e.exp, e.name)
        on_disk = outputs_on_disk(e.exp, e.keys) if e.done else None
        result = verdict(found, e.keys, e.successes, e.strict, on_disk)
        self.record.units += result.units
        self.record.duplicates += result.duplicates
        self.record.lost += result.lost
        if result.duplicates or result.lost:
            self.notes.append(result.detail)
        if e.done:
            states = self.status(e.exp, e.backend, env=e.env)
            not_done = {k: states.get(k) for k in e.keys if states.get(k) != "done"}
            self.wrong(len(not_done), f"not done at the end: {not_done}")
        if any(j.live for v in found.values() for j in v):  # leave nothing running behind a failed case
            reconcile("cancel", str(e.exp), "--backend", e.backend, env=e.env)
        return self.record

    def check(self) -> None:
        """Count the outcome (if not yet) and assert that nothing went wrong."""
        if not self._measured and self.expectation is not None:
            self.measure()
        problems = self.record.problems()
        assert not problems, f"{self.record.case}: {', '.join(problems)}\n" + "\n".join(self.notes)
