"""One reconcile pass (observe -> plan -> apply), and watch: repeat until converged."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.engine import memo
from reconciler.apply.apply import ApplyOptions, ApplyResult, Event, Prepare, apply_plan, record_observed
from reconciler.observe.scheduler import Question, ask
from reconciler.backends.base import Backend
from reconciler.jobs import COMPLETED, Snapshot
from reconciler.engine.gcpause import without_gc
from reconciler.journal import Folded, Journal, JournalView
from reconciler.observe.reader import Reader, Stat, unchanged
from reconciler.observe.evallogs import HeaderCache, LoadedCaches
from reconciler.observe.observation import (
    JobNames,
    Observation,
    all_done_on_disk,
    observe,
    observe_files,
    settle,
)
from reconciler.plan.planner import IN_FLIGHT, Plan, Policy, plan
from reconciler.engine.annotate import annotate
from reconciler.engine.polling import PollPolicy, RunningJob, next_event, next_interval
from reconciler.observe.progress import epoch_due
from reconciler.spec.load import load_spec
from reconciler.spec.location import spec_path, spec_text
from reconciler.spec.units import Desired, expand, job_stdout, tag_prefix

HEADER_CACHE = "eval-headers.json"
JOB_NAMES = "job-names.json"


@dataclass
class PassResult:
    plan: Plan
    observation: Observation
    applied: ApplyResult | None = None
    elapsed: float = 0.0
    events: list[Event] = field(default_factory=list)
    # What the scheduler was asked (None: nothing) and answered (None: not asked, or no answer).
    question: Question | None = None
    snapshot: Snapshot | None = None
    # The journal as this pass planned from (what apply then wrote is in `applied`): the summary reads
    # its remedies here instead of parsing the file again. None: a result not made by run_pass.
    journal: JournalView | None = None

    @property
    def scheduler_queried(self) -> bool:
        return self.question is not None

    @property
    def converged(self) -> bool:
        """Nothing submitted this pass, nothing left to submit, nothing in flight."""
        if self.applied is not None and self.applied.changed:
            return False
        return self.plan.converged

    @property
    def stalled(self) -> str | None:
        """Why a watch cannot go on by itself, or None: the file system refused what this pass had to
        write (a full disk, a quota), nothing was submitted, and nothing is in flight whose end could
        change that. Waiting would repeat the same refusal every pass until someone frees space."""
        applied = self.applied
        if applied is None or applied.held_by_filesystem is None:
            return None
        if any(e.kind in ("submitted", "resubmitted") for e in applied.events):
            return None
        if any(p.state in IN_FLIGHT for p in self.plan.units):
            return None
        return applied.held_by_filesystem


@without_gc
def load_desired(target: Path, memory: PassMemory | None = None) -> Desired:
    """The spec, expanded. With a `memory` (a watch's), an unchanged text gives back the last expansion:
    a watch re-reads the file every pass, and expanding 100k units again costs seconds. Expansion is
    a pure function of the file's path and text; any edit is expanded (and validated) afresh."""
    path = spec_path(target)
    text = spec_text(path)
    if text is None:
        return expand(load_spec(target))  # load_spec says what is wrong, with the location
    key = os.path.abspath(path)
    if memory is not None and memory.loaded is not None and memory.loaded[:2] == (key, text):
        return memory.loaded[2]
    desired = expand(load_spec(target, text))
    if memory is not None:
        memory.loaded = (key, text, desired)
    return desired


def scheduler_question(desired: Desired, backend: Backend | None, view: JournalView,
                       files_done: bool, names_wanted: tuple[str, ...] = ()) -> Question | None:
    """What one batched scheduler query asks (tag prefix, in-flight job ids, and the jobs whose names would
    attribute eval logs nobody tagged); None: no need to ask."""
    if backend is None:
        return None
    in_flight = view.in_flight_ids()
    if files_done and not in_flight and not names_wanted:
        return None
    return tag_prefix(desired.experiment), tuple(sorted(in_flight | set(names_wanted)))


def asks_job_names(backend: Backend | None) -> bool:
    """Job ids read from `slurm-{id}.out` files are SLURM's: only SLURM can name them (a local job id is
    another numbering)."""
    return backend is not None and getattr(getattr(backend, "capabilities", None), "name", "") == "slurm"


@without_gc
def run_pass(desired: Desired, backend: Backend | None, policy: Policy, *, act: bool,
             options: ApplyOptions = ApplyOptions(),
             prepare: Prepare | None = None,
             answered: tuple[Question | None, Snapshot | None, str] | None = None,
             presume_empty: bool = False, reader: Reader | None = None,
             memory: PassMemory | None = None) -> PassResult:
    """Observe, plan, and (when `act`) apply. `backend=None` plans offline: the scheduler's state is
    unknown, or with `presume_empty` (`reconcile plan --offline`) presumed to hold no job the journal
    does not know of.

    `answered`: a question this process already put to the scheduler, with the answer; reused if the
    pass asks the same (one query per pass, even when a remembered plan was checked first).
    `reader`: how the pass reads every file it observes (a recording one when the pass is remembered).
    `memory`: a watch's, whose folded journal and parsed header cache the pass reuses (None: read afresh).
    """
    started = time.monotonic()
    state_dir = desired.layout.state_dir
    read = reader or Reader()
    journal = Journal(state_dir, None if memory is None else memory.folded)
    view = journal.read(read.open)
    cache = HeaderCache(state_dir / HEADER_CACHE if state_dir.is_dir() else None,
                        None if memory is None else memory.headers)
    names = JobNames(state_dir / JOB_NAMES if state_dir.is_dir() else None)
    files = observe_files(desired, cache, names, read)
    wanted = files.job_ids_to_ask() if files.waiting and asks_job_names(backend) else ()
    if not wanted:
        files = settle(files, names)
    question = scheduler_question(desired, backend, view, all_done_on_disk(files), wanted)
    if answered is not None and answered[0] == question:
        snapshot, note = answered[1], answered[2]
    else:
        snapshot, note = ask(backend, question)
    if wanted:
        names.learn(wanted, snapshot)
        files = settle(files, names)
    events: list[Event] = []
    if act and snapshot is not None:
        events = record_observed(journal, view, snapshot, desired)
        if events:
            view = journal.read(read.open)
    observation = observe(desired, view, snapshot, cache, scheduler_note=note, files=files,
                          presumed_empty=presume_empty and backend is None, reader=read)
    the_plan = plan(desired.units, observation, policy, experiment=desired.experiment)
    the_plan = replace(the_plan, warnings=desired.loaded.warnings + the_plan.warnings,
                       backend=getattr(getattr(backend, "capabilities", None), "name", None))
    if the_plan.has_changes:
        the_plan = annotate(the_plan, desired, view, read)
    applied = None
    if act and backend is not None and the_plan.has_changes:
        applied = apply_plan(the_plan, desired, backend, journal, snapshot, options, prepare)
        events.extend(applied.events)
    if act or state_dir.is_dir():
        cache.save()
        if names.path is None and state_dir.is_dir():
            names.path = state_dir / JOB_NAMES  # the first pass of an apply made the directory
        names.save()
    return PassResult(plan=the_plan, observation=observation, applied=applied, elapsed=time.monotonic() - started,
                      events=events, question=question, snapshot=snapshot, journal=view)


@dataclass(frozen=True)
class _Kept:
    """A watch's last pass, with what it read and asked: the next pass is the same while they are."""

    desired: Desired
    backend: Backend | None
    policy: Policy
    act: bool
    paths: list[str]
    stats: list[Stat]
    question: Question | None
    answer: str
    result: PassResult


@dataclass
class PassMemory:
    """What a command keeps from one pass to the next, owned by its caller (the watch) and passed in:
    no module keeps state between calls. `loaded`: the last spec expanded, with its path and text;
    `kept`: the watch's last pass that changed nothing, with what it read and asked; `folded`: how far
    the journal was folded (only appends since are parsed again); `headers`: the header cache file as
    last parsed or written (parsed again only when another writer changed it)."""

    loaded: tuple[str, str, Desired] | None = None
    kept: _Kept | None = None
    folded: dict[str, Folded] = field(default_factory=dict)
    headers: LoadedCaches = field(default_factory=dict)


def watch_pass(desired: Desired, backend: Backend | None, policy: Policy, *, act: bool, memory: PassMemory,
               options: ApplyOptions = ApplyOptions(),
               prepare: Prepare | None = None) -> PassResult:
    """A pass of a watch: the last pass's result again when every input it read stats the same and
    the scheduler answers the same question the same (as `reconcile plan`'s memo, kept in memory).

    Only a pass that changed nothing is kept: no plan action, no event journaled. Most passes of a
    long sweep see nothing new (fine-tunes take hours, the poll is a minute): they cost a stat per input.
    """
    started = time.monotonic()
    answered = None
    kept, memory.kept = memory.kept, None
    if kept is not None and kept.desired is desired and kept.backend is backend and kept.policy == policy \
            and kept.act == act and unchanged(kept.paths, kept.stats):
        snapshot, note = ask(backend, kept.question)
        if memo.answer_digest(snapshot, note) == kept.answer:
            memory.kept = kept
            now = time.time()
            observation = replace(kept.result.observation,
                                  read_at={source: now for source in kept.result.observation.read_at})
            return replace(kept.result, observation=observation, elapsed=time.monotonic() - started,
                           snapshot=snapshot, events=[])
        answered = (kept.question, snapshot, note)
    reader = Reader({})
    result = run_pass(desired, backend, policy, act=act, options=options, prepare=prepare, answered=answered,
                      reader=reader, memory=memory)
    record = reader.record
    assert record is not None
    if result.events or result.plan.has_changes or result.applied is not None:
        return result
    now_ns = memo.fs_clock_ns(desired.layout.state_dir)
    if now_ns is not None and memo.settled(record, now_ns):
        memory.kept = _Kept(desired, backend, policy, act, list(record), list(record.values()), result.question,
                            memo.answer_digest(result.snapshot, result.plan.scheduler_note), result)
    return result


@dataclass
class ReplaceOnce:
    """`--replace KEY` re-runs KEY once per command. A watch re-plans every pass with the same
    options: without this, the replacement's own result would be replaced again, pass after pass.
    A key leaves the policy once a pass has submitted its replacement. (`--replace outdated` needs
    no such care: the new job runs under the new fingerprint, so its result is not outdated.)"""

    submitted: set[str] = field(default_factory=set)

    def policy(self, policy: Policy) -> Policy:
        if not policy.replace & self.submitted:
            return policy
        return replace(policy, replace=policy.replace - self.submitted)

    def note(self, result: PassResult) -> None:
        if result.applied is not None:
            self.submitted.update(e.unit for e in result.applied.events if e.kind in ("submitted", "resubmitted"))


def watch(run_one: Callable[[], PassResult], interval: float, on_pass: Callable[[PassResult], None],
          sleep: Callable[[float], None] = time.sleep, max_passes: int | None = None,
          pace: Callable[[PassResult], float] | None = None) -> PassResult:
    """Repeat passes until converged, or stalled. Only this function sleeps: `interval` seconds
    between passes, or what `pace` makes of each pass (adaptive polling)."""
    passes = 0
    while True:
        result = run_one()
        on_pass(result)
        passes += 1
        if result.converged or result.stalled or (max_passes is not None and passes >= max_passes):
            return result
        sleep(interval if pace is None else pace(result))


def adaptive_pace(poll: PollPolicy, desired: Callable[[], Desired], on_interval: Callable[[float], None],
                  clock: Callable[[], float] = time.time) -> Callable[[PassResult], float]:
    """The watch's wait after each pass (see reconciler.engine.polling): the floor after a pass that changed
    something, longer after quiet ones, never past what a running job is expected to do next.
    `on_interval` hears each new interval, so the log can say what is in use."""
    last_digest: tuple[object, ...] | None = None
    last_wait = poll.floor
    eval_seconds: dict[str, float] = {}  # by job id: a job's end is in the answer of one pass only

    def pace(result: PassResult) -> float:
        nonlocal last_digest, last_wait
        digest = pass_digest(result)
        eval_seconds.update(finished_eval_seconds(result))
        typical = statistics.median(eval_seconds.values()) if eval_seconds else None
        expected = next_event(running_jobs(desired(), result, typical), clock())
        wait = next_interval(poll, last_wait, changed=digest != last_digest, expected_in=expected)
        if wait != last_wait:
            on_interval(wait)
        last_digest, last_wait = digest, wait
        return wait

    return pace


def pass_digest(result: PassResult) -> tuple[object, ...]:
    """What a watch would notice between passes: each unit's state, job and action, and events."""
    units = tuple((u.key, u.state, u.job_id, u.action) for u in result.plan.units)
    return units, tuple((e.kind, e.unit, e.detail) for e in result.events)


def finished_eval_seconds(result: PassResult) -> dict[str, float]:
    """How long each eval job this pass saw completed ran, by job id."""
    return {job.job_id: job.ended_at - job.started_at for p in result.plan.units if p.kind == "eval"
            for job in result.observation.get(p.key).jobs
            if job.state == COMPLETED and job.started_at is not None and job.ended_at is not None}


def running_jobs(desired: Desired, result: PassResult, typical_eval: float | None = None) -> list[RunningJob]:
    """What the running jobs of a pass let us expect: fine-tunes write epochs at the pace of the
    first ones, or when their progress bar says (a tail read of each running fine-tune's output);
    evals end after `typical_eval` seconds (how long finished ones ran); every job ends
    by its time limit."""
    from reconciler.timefmt import parse_time_limit
    from reconciler.scaffold.resources import resources_for

    units = desired.by_key()
    out = []
    for planned in result.plan.units:
        unit = units.get(planned.key)
        if planned.state != "running" or unit is None:
            continue
        ev = result.observation.get(planned.key)
        job = next((j for j in reversed(ev.jobs) if j.job_id == planned.job_id and j.started_at), None)
        if job is None or job.started_at is None:
            continue
        try:
            limit = parse_time_limit(resources_for(desired.loaded, unit).time)
        except ValueError:
            limit = None
        mtimes = tuple(e.mtime for e in ev.epochs if e.state == "complete" and e.mtime is not None)
        due = epoch_due(job_stdout(unit.stdout, job.job_id)) if unit.kind == "finetune" else None
        out.append(RunningJob(started_at=job.started_at, time_limit=limit, epochs_total=len(unit.epochs),
                              epoch_mtimes=mtimes, typical_seconds=typical_eval if unit.kind == "eval" else None,
                              epoch_due_at=due))
    return out


def exit_code_for(result: PassResult) -> int:
    """0 converged with every unit done (or left outdated), 3 with failed or blocked units, 1 otherwise."""
    states = result.plan.state_counts()
    if not result.converged:
        return 1
    return 3 if states["failed"] or states["blocked"] else 0
