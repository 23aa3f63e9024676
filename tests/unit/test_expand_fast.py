"""The spec's expansion got faster; what it produces must not change, or every finished unit of
every experiment would read as outdated after an upgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec.layout import child
from reconciler.spec.load import load_spec
from reconciler.spec.units import encoded, epoch_fingerprints, expand, fingerprint, unit_inputs

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "experiments"

# Fingerprints as the first released expansion computed them (journals and .eval logs keep them).
PINNED = {
    "sweep8": {
        "finetune/r4_lr1e-5": "eae282634fef3ac9",
        "finetune/r4_lr5e-5": "63e826aacaacc0ec",
        "eval/r32_lr5e-5/capitalization/epoch1": "a3e4c80cd628025d",
        "eval/base/capitalization/base": "78f21d3e1c08dfd8",
    },
    "v02_sweep": {
        "finetune/rank4": "e565c61f46709ecf",
        "eval/rank4/capitalization/epoch0": "98b2423d56cda0ea",
        "eval/base/capitalization/base": "37422e973e57bf09",
    },
}


@pytest.mark.parametrize("experiment", sorted(PINNED))
def test_fingerprints_of_existing_experiments_do_not_move(experiment: str) -> None:
    units = expand(load_spec(FIXTURES / experiment)).by_key()
    assert {key: units[key].fingerprint for key in PINNED[experiment]} == PINNED[experiment]


@pytest.mark.parametrize("experiment", ["sweep8", "v02_sweep", "diff_old"])
def test_every_fingerprint_is_the_fingerprint_of_the_units_inputs(experiment: str) -> None:
    loaded = load_spec(FIXTURES / experiment)
    inputs_of = unit_inputs(loaded)
    for unit in expand(loaded).units:
        assert unit.fingerprint == fingerprint(inputs_of(unit)), unit.key


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(shared=st.dictionaries(st.text(max_size=12).filter(lambda k: k != "epoch"), json_values, max_size=12),
       epoch=st.none() | st.integers(min_value=0, max_value=1000))
def test_epoch_fingerprints_equal_the_fingerprint_of_the_whole_inputs(shared: dict, epoch: int | None) -> None:
    assert epoch_fingerprints(encoded(shared))(epoch) == fingerprint({**shared, "epoch": epoch})


@given(name=st.text(alphabet="ab.-_/ ", min_size=0, max_size=6))
def test_child_joins_like_pathlib(name: str) -> None:
    parent = Path("/tmp/exp/run-1")
    assert child(parent, name) == parent / name
    assert str(child(parent, name)) == str(parent / name)
    assert child(Path("relative/dir"), name) == Path("relative/dir") / name
