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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Llama model of examples/tiny-llama, made once per session (about 10 s)."""
    from tests.real_stack import make_tiny_model, missing_stack

    if missing_stack():
        pytest.skip(f"the real stack is not installed ({', '.join(missing_stack())} missing): pip install -e '.[stack]'")
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "model")

