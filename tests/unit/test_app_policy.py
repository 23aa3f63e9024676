"""The front door's polling and submit caps come from the backend's Capabilities, never from its name."""

from __future__ import annotations

from dataclasses import replace

from reconciler.app.options import poll_floor, submit_cap
from reconciler.backends.local.backend import CAPABILITIES as LOCAL
from reconciler.backends.slurm.backend import CAPABILITIES as SLURM


def test_slurm_caps_live_jobs_at_25_and_local_does_not_cap():
    assert submit_cap(SLURM, None) == 25
    assert submit_cap(LOCAL, None) is None
    assert submit_cap(SLURM, 3) == 3 and submit_cap(LOCAL, 3) == 3


def test_the_cap_follows_the_capabilities_not_the_name():
    assert submit_cap(replace(LOCAL, name="slurm"), None) is None
    assert submit_cap(replace(LOCAL, default_max_submit=7), None) == 7


def test_the_interval_defaults_to_the_backend_and_is_raised_to_its_floor_with_a_note():
    assert poll_floor(SLURM, None) == (60.0, None)
    assert poll_floor(LOCAL, None) == (2.0, None)
    interval, note = poll_floor(SLURM, 1)
    assert interval == 10.0 and note is not None and "raised to 10s" in note
