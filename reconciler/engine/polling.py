"""How long a watch waits before its next pass: it stretches while nothing can change, and shrinks near events.

Pure: times in, seconds out (engine/loop.adaptive_pace reads them from each pass). A shared
SLURM controller pays for every poll, and a sweep waiting behind hour-long fine-tunes has nothing
to learn from most of them; yet an epoch's eval should start soon after torchtune writes that
epoch. So:

- the interval starts at the floor (`--interval`, never below what the scheduler allows);
- after a pass that changed nothing it grows by half, up to the cap (`--max-interval`, by default
  the backend's `max_poll_factor` floors: 5 min on SLURM; the local backend asks no one and stays
  at its floor);
- any change (a unit's state or job, a submission) brings it back to the floor;
- it never overshoots the next expected event: a running fine-tune's next epoch (from the pace of
  the epochs it has written, and from torchtune's progress bar in the job's output, which also
  times the first epoch), a running eval's end (at the typical duration of the experiment's
  finished evals), or a running job's time limit; an event that is due and has not come yet keeps
  the watch at the floor until it does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

GROWTH = 1.5


@dataclass(frozen=True)
class PollPolicy:
    floor: float
    cap: float

    def __post_init__(self) -> None:
        if self.cap < self.floor:
            raise ValueError(f"the cap ({self.cap:g}s) is below the floor ({self.floor:g}s)")


@dataclass(frozen=True)
class RunningJob:
    """What a running job says about when something will happen next (times in epoch seconds)."""

    started_at: float
    time_limit: float | None = None  # seconds, from the job's script
    epochs_total: int = 0  # a fine-tune: how many epochs it writes
    epoch_mtimes: tuple[float, ...] = ()  # when each epoch written so far was complete
    typical_seconds: float | None = None  # how long finished jobs of its kind took
    epoch_due_at: float | None = None  # a fine-tune: when its current epoch ends, by its own progress bar


def next_event(jobs: Iterable[RunningJob], now: float) -> float | None:
    """Seconds until the soonest thing expected to happen (0: overdue), None when nothing is expected."""
    waits = [max(0.0, at - now) for job in jobs for at in _expected(job)]
    return min(waits, default=None)


def _expected(job: RunningJob) -> list[float]:
    out = []
    if job.time_limit is not None:
        out.append(job.started_at + job.time_limit)
    if job.typical_seconds is not None:
        out.append(job.started_at + job.typical_seconds)
    if job.epoch_due_at is not None:
        out.append(job.epoch_due_at)
    done = len(job.epoch_mtimes)
    if job.epochs_total and 0 < done < job.epochs_total:
        pace = (max(job.epoch_mtimes) - job.started_at) / done
        out.append(max(job.epoch_mtimes) + pace)
    elif job.epochs_total and done == 0 and job.time_limit is not None:
        # No epoch written yet: the first may come any time before the limit; look at least halfway.
        out.append(job.started_at + job.time_limit / (2 * job.epochs_total))
    return out


def next_interval(policy: PollPolicy, previous: float, changed: bool, expected_in: float | None) -> float:
    """The wait before the next pass."""
    interval = policy.floor if changed else min(policy.cap, max(previous, policy.floor) * GROWTH)
    if expected_in is not None:
        interval = min(interval, max(policy.floor, expected_in))
    return interval
