"""A simulated scheduler and the jobs it runs, for driving real watch passes without processes.

`SimScheduler` is a Backend with SLURM's semantics as the reconciler meets them: one job id
counter, PENDING -> RUNNING -> an end state, `afterok` dependencies (satisfied by COMPLETED
with exit 0; any other end leaves the dependent PENDING with reason DependencyNeverSatisfied
forever), a release that drops a pending job's dependency (SLURM allows that even after
DependencyNeverSatisfied), a fixed number of slots, and queries that may fail (unknown).

Its jobs write what the real programs write, on the real filesystem, so the reconciler's real
observation reads them: a fine-tune writes one epoch checkpoint per tick (adapter weights, adapter
config, the base model's config.json, and torchtune's recipe_state after every epoch but the
last); an eval writes an inspect `.eval` log, one tick before it exits (as inspect does). What
each attempt of each unit does is scripted (`Script`): succeed, fail in epoch k, time out, run
out of memory, be cancelled by someone else, exit 0 without its last epoch; for evals, exit 0
with an error log (inspect's way), crash without a log, die leaving a `started` log.

Time is a tick: the watch's sleep advances it. File mtimes and job times are on the same
simulated clock (seconds since BASE), so "checkpoint newer than the running attempt" holds or
not exactly as it would.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.jobs import (
    CANCELLED,
    COMPLETED,
    DEPENDENCY_NEVER_SATISFIED,
    FAILED,
    OUT_OF_MEMORY,
    PENDING,
    RUNNING,
    TIMEOUT,
    Job,
    Snapshot,
)
from reconciler.backends.base import Capabilities, SubmitRequest
from reconciler.errors import BackendError, BackendUnavailable
from reconciler.observe.checkpoints import RECIPE_STATE, epoch_evidence
from reconciler.spec.units import Desired, Unit

BASE = 1_800_000_000.0  # the simulated clock's origin, in epoch seconds

# What one attempt of a fine-tune does: ("ok", 0), or (kind, k): end after saving k epochs, as:
FINETUNE_ENDS = {"fail": (FAILED, 1), "timeout": (TIMEOUT, 0), "oom": (OUT_OF_MEMORY, 0),
                 "cancelled": (CANCELLED, 0), "short": (COMPLETED, 0)}  # short: exits 0 without its last epochs
EVAL_OUTCOMES = ("ok", "error_log", "crash", "started_log", "cancelled")


@dataclass
class Script:
    """Per unit key, what its successive started attempts do; past the end of a list, they succeed."""

    finetune: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    evals: dict[str, list[str]] = field(default_factory=dict)
    unknown_queries: frozenset[int] = frozenset()  # query calls (0-based) that fail
    lost_submits: frozenset[int] = frozenset()  # submit calls that raise BackendUnavailable ...
    created_before_loss: frozenset[int] = frozenset()  # ... of which these created the job first
    refused_submits: frozenset[int] = frozenset()  # submit calls refused for good (BackendError)


@dataclass
class SimJob:
    job_id: str
    unit: str
    tag: str
    depends_on: tuple[str, ...]
    submitted: int
    state: str = PENDING
    exit_code: int | None = None
    started: int | None = None
    ended: int | None = None
    attempt: int = 0  # which started attempt of its unit this is (0-based)
    progress: int = 0  # fine-tune: epochs saved; eval: ticks run
    reason: str | None = None


class SimScheduler:
    capabilities = Capabilities(name="sim", min_poll_seconds=0.0, default_poll_seconds=1.0)

    def __init__(self, desired: Desired, script: Script, slots: int = 2) -> None:
        self.desired = desired
        self.units = desired.by_key()
        self.script = script
        self.slots = slots
        self.tick_no = 0
        self.jobs: dict[str, SimJob] = {}
        self.next_id = 1
        self.queries = 0
        self.submits = 0
        self.started: dict[str, int] = {}  # unit -> attempts that started running
        self.lost: set[str] = set()  # jobs created by a submission whose answer was lost
        self.seen: set[str] = set()  # jobs some answered query has returned
        self.last_answer_never: set[str] = set()  # job ids the last answered query reported DependencyNeverSatisfied

    # -- the Backend protocol -------------------------------------------------------------

    def submit(self, request: SubmitRequest) -> str:
        call = self.submits
        self.submits += 1
        unit = request.tag.split(":", 2)[2]  # reconciler:{experiment}:{unit}
        for dep in request.depends_on:
            if dep not in self.jobs:
                raise AssertionError(f"afterok on a job the scheduler never had: {dep}")
        if call in self.script.refused_submits:
            raise BackendError(command="sbatch", returncode=1, stderr="sbatch: error: Batch job submission failed")
        if call in self.script.lost_submits and call not in self.script.created_before_loss:
            raise BackendUnavailable("sbatch: timed out (simulated)")
        job = SimJob(str(self.next_id), unit, request.tag, tuple(request.depends_on), self.tick_no)
        self.next_id += 1
        self.jobs[job.job_id] = job
        if call in self.script.lost_submits:
            self.lost.add(job.job_id)
            raise BackendUnavailable("sbatch: the answer was lost (simulated)")
        return job.job_id

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        call = self.queries
        self.queries += 1
        if call in self.script.unknown_queries:
            raise BackendUnavailable("squeue: timed out (simulated)")
        wanted = set(job_ids)
        found = {j.job_id: self._job(j) for j in self.jobs.values()
                 if j.job_id in wanted or (self._live(j) and j.tag.startswith(tag_prefix))}
        self.last_answer_never = {i for i, j in found.items() if j.reason == DEPENDENCY_NEVER_SATISFIED}
        self.seen.update(found)
        return Snapshot(jobs=found, missing=frozenset(wanted - found.keys()))

    def cancel(self, job_ids: Collection[str]) -> None:
        for job_id in job_ids:
            job = self.jobs[job_id]
            if self._live(job):
                self._end(job, CANCELLED, 0)

    def release(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job.state == PENDING:
            job.depends_on = ()

    # -- what it looks like -----------------------------------------------------------------

    @staticmethod
    def _live(job: SimJob) -> bool:
        return job.state in (PENDING, RUNNING)

    def _dependency(self, job: SimJob) -> str:
        """`ok`, `wait` or `never`, as SLURM decides an afterok."""
        state = "ok"
        for dep_id in job.depends_on:
            dep = self.jobs[dep_id]
            if dep.state == COMPLETED and dep.exit_code == 0:
                continue
            if dep.state in (PENDING, RUNNING):
                state = "wait"
                continue
            return "never"
        return state

    def _job(self, job: SimJob) -> Job:
        reason = None
        if job.state == PENDING:
            dep = self._dependency(job)
            reason = {"never": DEPENDENCY_NEVER_SATISFIED, "wait": "Dependency"}.get(dep, "Resources")
        return Job(job_id=job.job_id, state=job.state, tag=job.tag, reason=reason, exit_code=job.exit_code,
                   submitted_at=BASE + job.submitted, started_at=None if job.started is None else BASE + job.started,
                   ended_at=None if job.ended is None else BASE + job.ended + 0.3, depends_on=job.depends_on)

    def live_by_unit(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for job in self.jobs.values():
            if self._live(job):
                out.setdefault(job.unit, []).append(job.job_id)
        return out

    def unseen_lost(self) -> dict[str, int]:
        """Per unit, jobs created by a submission whose answer was lost, that ended before any query saw
        them. SLURM's squeue lists live jobs only, so the next pass cannot find such a job by its tag
        and submits the unit again: a known limit (the backend's own retry of sbatch searches ended jobs
        too, but here every answer and search was lost)."""
        out: dict[str, int] = {}
        for job_id in self.lost - self.seen:
            unit = self.jobs[job_id].unit
            out[unit] = out.get(unit, 0) + 1
        return out

    def never_startable(self) -> list[str]:
        return [j.job_id for j in self.jobs.values() if j.state == PENDING and self._dependency(j) == "never"]

    # -- time --------------------------------------------------------------------------------

    def tick(self, _seconds: float = 0.0) -> None:
        """One unit of time: running jobs make progress or end, then free slots go to eligible jobs."""
        self.tick_no += 1
        for job in sorted(self.jobs.values(), key=lambda j: int(j.job_id)):
            if job.state == RUNNING:
                if self.units[job.unit].kind == "finetune":
                    self._finetune_step(job)
                else:
                    self._eval_step(job)
        busy = sum(1 for j in self.jobs.values() if j.state == RUNNING)
        for job in sorted(self.jobs.values(), key=lambda j: int(j.job_id)):
            if busy >= self.slots:
                break
            if job.state == PENDING and self._dependency(job) == "ok":
                job.state, job.started = RUNNING, self.tick_no
                job.attempt = self.started.get(job.unit, 0)
                self.started[job.unit] = job.attempt + 1
                busy += 1

    def _end(self, job: SimJob, state: str, exit_code: int) -> None:
        job.state, job.exit_code, job.ended = state, exit_code, self.tick_no

    def _finetune_step(self, job: SimJob) -> None:
        unit = self.units[job.unit]
        plan = self.script.finetune.get(job.unit, [])
        kind, at = plan[job.attempt] if job.attempt < len(plan) else ("ok", 0)
        if kind != "ok" and job.progress >= at:
            state, code = FINETUNE_ENDS[kind]
            self._end(job, state, code)
            return
        write_epoch(self.desired, unit, job.progress, BASE + self.tick_no)
        job.progress += 1
        if job.progress == len(unit.epochs) and kind == "ok":
            self._end(job, COMPLETED, 0)

    def _eval_step(self, job: SimJob) -> None:
        unit = self.units[job.unit]
        plan = self.script.evals.get(job.unit, [])
        outcome = plan[job.attempt] if job.attempt < len(plan) else "ok"
        job.progress += 1
        if job.progress == 1:
            if not checkpoint_complete(self.desired, unit):
                self._end(job, FAILED, 1)  # the model it loads is not there: inspect dies
            elif outcome in ("ok", "error_log"):
                write_log(unit, job, "success" if outcome == "ok" else "error", BASE + self.tick_no)
            elif outcome == "started_log":
                write_log(unit, job, "started", BASE + self.tick_no)
            elif outcome == "crash":
                self._end(job, FAILED, 1)
            elif outcome == "cancelled":
                self._end(job, CANCELLED, 0)
            return
        self._end(job, FAILED if outcome == "started_log" else COMPLETED, 1 if outcome == "started_log" else 0)


# ---------------------------------------------------------------- artifacts, as the real programs write them


def _safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def write_epoch(desired: Desired, unit: Unit, index: int, when: float) -> None:
    """Epoch `index` of a fine-tune, saved at `when`: its own files, then (not final) the recipe state."""
    layout = desired.layout
    epoch_dir = layout.epoch_dir(unit.run, unit.epochs[index])
    epoch_dir.mkdir(parents=True, exist_ok=True)
    own = [epoch_dir / "adapter_model.safetensors", epoch_dir / "adapter_config.json", epoch_dir / "config.json"]
    _safetensors(own[0])
    own[1].write_text('{"r": 4}')
    own[2].write_text("{}")
    for path in own:
        os.utime(path, (when + 0.1, when + 0.1))
    if index < len(unit.epochs) - 1:
        state = layout.output_dir(unit.run) / RECIPE_STATE
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(b"recipe state")
        os.utime(state, (when + 0.2, when + 0.2))


def checkpoint_complete(desired: Desired, unit: Unit) -> bool:
    """Whether the checkpoint an eval loads is on disk and whole (control evals load the base model)."""
    if unit.needs_epoch is None or not unit.depends_on:
        return True
    run_epochs = desired.by_key()[unit.depends_on[0]].epochs
    index = run_epochs.index(unit.needs_epoch)
    final = index == len(run_epochs) - 1
    return epoch_evidence(desired.layout.epoch_dir(unit.run, unit.needs_epoch), final=final).state == "complete"


def write_log(unit: Unit, job: SimJob, status: str, when: float) -> Path:
    """An inspect-ai `.eval` log as inspect leaves it: a zip with `_journal/start.json`, and
    `header.json` once the eval has ended (success or error)."""
    assert unit.log_dir is not None
    unit.log_dir.mkdir(parents=True, exist_ok=True)
    path = unit.log_dir / f"sim-{int(job.job_id):06d}.eval"
    ev = {"task": unit.task, "created": f"2027-01-01T00:00:{int(when - BASE) % 60:02d}+00:00",
          "config": {"limit": None},
          "metadata": {"epoch": unit.epoch, "run": unit.run, "reconciler_unit": unit.key,
                       "reconciler_fingerprint": f"fp-{unit.fingerprint}"}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("_journal/start.json", json.dumps({"eval": ev}))
        if status != "started":
            z.writestr("header.json", json.dumps({
                "status": status, "eval": ev,
                "results": {"completed_samples": 4, "total_samples": 4,
                            "scores": [{"name": "match", "metrics": {"accuracy": {"name": "accuracy", "value": 0.5}}}]},
                "error": {"message": "simulated error"} if status == "error" else None}))
    os.utime(path, (when + 0.1, when + 0.1))
    return path


def log_complete(unit: Unit) -> bool:
    """Ground truth, read without the reconciler: a complete log of this unit's spec is on disk."""
    from reconciler.observe.evallogs import HeaderCache, scan_dir

    assert unit.log_dir is not None
    return any(s.state == "complete" and s.fingerprint == unit.fingerprint
               for s in scan_dir(unit.log_dir, HeaderCache(None)))
