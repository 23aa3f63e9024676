"""RECONCILER_LOCAL_SLOTS: how many jobs the local backend runs at once (benchmarks use more than the CPUs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.backends import SLOTS_ENV, make_backend
from reconciler.backends.local.backend import LocalBackend
from reconciler.errors import UsageError


def test_default_is_one_slot_per_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SLOTS_ENV, raising=False)
    backend, _ = make_backend("local", tmp_path)
    assert isinstance(backend, LocalBackend) and backend.max_concurrent == max(1, os.cpu_count() or 1)


def test_the_variable_sets_the_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLOTS_ENV, "16")
    backend, _ = make_backend("local", tmp_path)
    assert isinstance(backend, LocalBackend) and backend.max_concurrent == 16


@pytest.mark.parametrize("raw", ["0", "-2", "many", "1.5"])
def test_a_bad_value_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(SLOTS_ENV, raw)
    with pytest.raises(UsageError, match=SLOTS_ENV):
        make_backend("local", tmp_path)
