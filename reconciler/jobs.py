"""The neutral vocabulary of jobs: SLURM's state names, a Job, a Snapshot of many, the order of job ids,
the unit a tag names. Both backends speak it; the planner, journal, observation and reports read it
without importing a backend."""

from __future__ import annotations

from dataclasses import dataclass, field

# SLURM job states, by the names squeue/sacct print.
PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
NODE_FAIL = "NODE_FAIL"
PREEMPTED = "PREEMPTED"
BOOT_FAIL = "BOOT_FAIL"
DEADLINE = "DEADLINE"

# States in which a job still holds (or may soon hold) resources: at most one per unit.
# REQUEUED/RESIZING/SUSPENDED jobs come back, so they count as live.
LIVE_STATES = frozenset(
    {PENDING, RUNNING, "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT", "SIGNALING"}
)
TERMINAL_STATES = frozenset(
    {COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE}
)

# States the reconciler gives a job no scheduler told it about.
# A job the journal knows but no scheduler source remembers: it ended long ago.
GONE = "GONE"
# A job whose state could not be asked (scheduler unreachable, or --offline).
UNKNOWN = "UNKNOWN"

# Reason SLURM gives a job whose afterok dependency failed: it stays PENDING forever.
DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"

# Failure classes kept for reports and remedies.
FAILURE_CLASSES = {
    TIMEOUT: "timeout",
    DEADLINE: "timeout",
    OUT_OF_MEMORY: "out_of_memory",
    NODE_FAIL: "node_failure",
    PREEMPTED: "node_failure",
    BOOT_FAIL: "node_failure",
    FAILED: "other",
    CANCELLED: "cancelled",
}

# torchtune's CUDA OOM ends a job FAILED, not OUT_OF_MEMORY (cruijff_kit PR #484): its output says why.
OOM_MARKERS = ("torch.OutOfMemoryError", "CUDA out of memory")


def shows_oom(text: str) -> bool:
    """Whether a job's output says it ran out of GPU memory."""
    return any(marker in text for marker in OOM_MARKERS)


def normalise_state(raw: str) -> str:
    """`CANCELLED by 0` -> CANCELLED, `RUNNING+` -> RUNNING; unknown words pass through upper-cased."""
    word = raw.strip().split(" ", 1)[0].rstrip("+")
    return word.upper()


@dataclass(frozen=True, slots=True)
class Job:
    """What the scheduler says about one job."""

    job_id: str
    state: str
    name: str = ""
    tag: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    depends_on: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def failure_class(self) -> str | None:
        if self.state == COMPLETED and (self.exit_code or 0) != 0:
            return "other"
        return FAILURE_CLASSES.get(self.state)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The answer to one batched query: every job found, by id.

    `missing` lists the asked-for ids that no source knew (gone from squeue and from
    accounting): those jobs ended long ago; artifacts decide what they produced.
    """

    jobs: dict[str, Job] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()

    def by_tag(self, tag: str) -> list[Job]:
        return sorted((j for j in self.jobs.values() if j.tag == tag), key=lambda j: job_order(j.job_id))


def unit_of_tag(tag: str | None, prefix: str) -> str | None:
    """The unit a job's tag says it belongs to, or None when the tag is not under `prefix` (not ours).

    Ownership by tag: a job the journal does not know (its record was lost) is still the unit's."""
    return tag[len(prefix) :] if tag is not None and tag.startswith(prefix) else None


def job_order(job_id: str) -> tuple[int, int, str]:
    """The sort key of a job id: the order in which the scheduler handed the ids out. Never raises.

    `9` before `10`; an array task (`123_4`) or a heterogeneous job's component (`123+0`) after its
    job `123` and by index (`123_4` before `123_10`); a pending array (`123_[1-5]`) with its job.
    Ids no scheduler writes (`"²"`, whose `isdigit()` is true but which int() refuses, or text from a
    corrupt journal) come first. The id itself breaks ties, so equal keys mean equal ids.
    """
    head, _, rest = job_id.replace("+", "_", 1).partition("_")
    return (_ascii_int(head, 0), _ascii_int(rest, -1), job_id)


def _ascii_int(text: str, default: int) -> int:
    return int(text) if text.isascii() and text.isdigit() else default
