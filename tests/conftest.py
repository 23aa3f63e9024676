"""Shared test paths and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
EXPERIMENTS = FIXTURES / "experiments"
SHARED_CRUIJFF = REPO.parent / "shared" / "cruijff"


@pytest.fixture
def cruijff() -> Path:
    if not SHARED_CRUIJFF.is_dir():
        pytest.skip(f"{SHARED_CRUIJFF} is absent (a user's clone has no shared/ folder beside it)")
    return SHARED_CRUIJFF
