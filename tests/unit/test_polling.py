"""Adaptive polling: the wait stretches while nothing changes, and comes back for changes and expected events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine.polling import PollPolicy, RunningJob, next_event, next_interval


def test_quiet_passes_stretch_the_wait_up_to_the_cap_and_a_change_resets_it() -> None:
    policy = PollPolicy(floor=60, cap=600)
    waits = [60.0]
    for _ in range(8):
        waits.append(next_interval(policy, waits[-1], changed=False, expected_in=None))
    assert waits[:4] == [60, 90, 135, 202.5] and waits[-1] == 600
    assert next_interval(policy, 600, changed=True, expected_in=None) == 60


def test_the_wait_never_overshoots_an_expected_event_nor_drops_below_the_floor() -> None:
    policy = PollPolicy(floor=60, cap=600)
    assert next_interval(policy, 400, changed=False, expected_in=100) == 100
    assert next_interval(policy, 400, changed=False, expected_in=5) == 60  # never below the floor


def test_a_fine_tunes_next_epoch_is_expected_at_the_pace_of_its_first() -> None:
    job = RunningJob(started_at=1000, time_limit=7200, epochs_total=3, epoch_mtimes=(1600,))
    assert next_event([job], now=1700) == pytest.approx(500)  # epoch 1 due at 2200
    done = RunningJob(started_at=1000, time_limit=7200, epochs_total=3, epoch_mtimes=(1600, 2200, 2800))
    assert next_event([done], now=2900) == pytest.approx(5300)  # only the time limit is left
    assert next_event([], now=0) is None


def test_a_cap_below_the_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="below the floor"):
        PollPolicy(floor=10, cap=5)


@settings(max_examples=300, deadline=None)
@given(floor=st.floats(1, 100), factor=st.floats(1, 20), previous=st.floats(0, 5000), changed=st.booleans(),
       expected=st.none() | st.floats(0, 5000))
def test_the_wait_stays_between_floor_and_cap(floor: float, factor: float, previous: float, changed: bool,
                                              expected: float | None) -> None:
    policy = PollPolicy(floor=floor, cap=floor * factor)
    wait = next_interval(policy, previous, changed, expected)
    assert policy.floor <= wait <= policy.cap
    if changed:
        assert wait == policy.floor
    if expected is not None and expected >= policy.floor:
        assert wait <= expected


def test_an_overdue_epoch_keeps_the_watch_at_the_floor_until_it_comes() -> None:
    # Epoch 1 was due at 2200; at 2500 it has not been written: look again as soon as allowed.
    late = RunningJob(started_at=1000, time_limit=7200, epochs_total=3, epoch_mtimes=(1600,))
    assert next_event([late], now=2500) == 0
    assert next_interval(PollPolicy(floor=60, cap=600), 600, changed=False, expected_in=0) == 60


def test_a_running_eval_is_expected_to_end_when_finished_evals_did() -> None:
    running = RunningJob(started_at=1000, time_limit=3600, typical_seconds=40)
    assert next_event([running], now=1010) == pytest.approx(30)
