"""load_yaml through libyaml (C) gives what the pure-Python loader gives: data, positions, errors, bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.synth import Shape, spec_text
from reconciler.errors import SpecError
from reconciler.spec import yamlpos
from reconciler.spec.yamlpos import MAX_DEPTH, MAX_NODES, load_yaml
from tests.conftest import EXPERIMENTS, REPO, SHARED_CRUIJFF
from tests.yaml_probe import probe

# Without libyaml both sides of each comparison are the pure-Python loader; these need the real thing.
needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="this PyYAML has no libyaml")

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def outcome(text: str, *, libyaml: bool) -> tuple[Any, ...]:
    """What load_yaml makes of `text`, with libyaml or as a PyYAML build without it would."""
    saved = yamlpos._CLoader
    if not libyaml:
        yamlpos._CLoader = None
    try:
        located = load_yaml(Path("experiment_summary.yaml"), text)
    except SpecError as exc:
        return ("error", str(exc))
    finally:
        yamlpos._CLoader = saved
    # repr tells 1 from 1.0 from True, and keeps key order.
    return ("ok", repr(located.data), located.positions, located.key_positions)


def assert_same(text: str) -> None:
    assert outcome(text, libyaml=True) == outcome(text, libyaml=False), text[:300]


def took_c_path(text: str) -> bool:
    return yamlpos._same_characters(text) and yamlpos._prescan(text)


def spec_files() -> Iterator[Path]:
    for folder in (REPO / "examples", REPO / "tests", EXPERIMENTS.parent, SHARED_CRUIJFF):
        if folder.is_dir():
            yield from sorted(folder.rglob("*.yaml"))


SPEC_FILES = list(spec_files())


def test_spec_files_are_found() -> None:
    assert any(p.name == "experiment_summary.yaml" for p in SPEC_FILES)


def file_id(path: Path) -> str:
    return str(path.relative_to(REPO if path.is_relative_to(REPO) else SHARED_CRUIJFF.parent))


@needs_libyaml
@pytest.mark.parametrize("path", SPEC_FILES, ids=file_id)
def test_real_files_load_the_same_through_libyaml(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert_same(text)
    if path.is_relative_to(REPO) and path.name == "experiment_summary.yaml":
        assert took_c_path(text), "our own experiment files should take the fast path"


@needs_libyaml
def test_synthetic_10k_file_takes_the_libyaml_path_and_loads_the_same() -> None:
    # Its speed (12 ms against 78 ms for the pure-Python loader) is measured by
    # `python -m benchmarks.breakdown`, not asserted here.
    text = spec_text("synth", Shape.for_units(10_000))
    assert took_c_path(text)
    assert_same(text)


@needs_libyaml
def test_yaml_1_2_floats_resolve_through_libyaml() -> None:
    text = "a: 1e-5\nb: -2E+3\nc: 1.5e3\nd: [1e-5, 3e0]\ne: 1e5x\nf: '1e-5'\ng: 1_000\n"
    assert took_c_path(text)
    data = load_yaml(Path("x.yaml"), text).data
    assert data == {"a": 1e-5, "b": -2e3, "c": 1.5e3, "d": [1e-5, 3.0], "e": "1e5x", "f": "1e-5", "g": 1000}
    assert isinstance(data["b"], float) and isinstance(data["d"][1], float)
    assert_same(text)


# Each of these is a place where libyaml and PyYAML read a document differently (found by fuzzing
# the two against each other), or invalid YAML whose message must stay PyYAML's.
TRICKY = [
    "a:\n\tb: 1\n",  # tab indentation: PyYAML refuses it
    "a: \t1\n",  # tab after the colon: libyaml accepts it
    "ab\tc: 1\n",  # tab inside a key
    "a: 1\n\ufeffb: 2\n",  # byte-order mark inside the file
    "\ufeffa: 1\nb: 2\n",  # ... and at its start (both skip it)
    "a: \x01\n",  # control character
    "{a: , b: 1}\n",  # empty flow value: libyaml places it past the spaces
    "[a: ]\n",
    "{? : x}\n",
    "{a:, b: 1}\n",  # libyaml refuses, PyYAML reads a: null
    "{a?b: 1}\n",  # `?` inside a flow plain scalar: libyaml accepts, PyYAML refuses
    "{a: !, b: 1}\n",  # tag ended by `,`
    "a: !!str 1\n",
    "a: !!int abc\n",  # an explicit tag on a bad value
    "a: !foo,bar 1\n",
    "a: |#c\n  x\n",  # comment glued to a block scalar header
    "a: |\n  x\n  y\nb: >-\n  z\n\n  w\n",
    "a: [1, 2\n",
    "a: b: c\n",
    "a: *x\n",
    "a: &x 1\nb: &x 2\n",
    "a: 1\n---\nb: 2\n",
    "a: 1\n---\nb: [\n",
    "---",
    "--- \n",
    "? a",
    "a:",
    "a:\n",
    "a: 1\r\nb:\r\n  - 2\r\n",
    "a: 1\rb: 2\r",
    "a: 1\x85b: 2\n",
    "a: 'x\u2028y'\nb: 2\n",
    "é: {x: 1, y: [ä, 😀]}\n",
    "%YAML 1.1\n---\na: 1\n",
    "%YAML 1.2\n---\na: 1\n",
    "a: \"\\x41\\u00e9\\/\\_\\N\"\n",
    "a: \"\\ud800\"\n",
    "k" * 1025 + ": 1\n",  # simple keys stop at 1024 characters
    "é" * 600 + ": 1\n",
    "a: &a [*a]\n",  # recursive alias
    "a: <<\nb: {<<: {c: 1}}\n",
    "",
    "# only a comment\n",
    "a: 2026-13-45\nb: 2026-01-05\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_documents_load_the_same(text: str) -> None:
    assert_same(text)


_TOKENS = ["a", "b", "1", "1e-5", "~", "true", "2024-01-01", " ", "  ", "\n", "\n  ", "\n- ", "\r\n", ": ", ":", "- ",
           "? ", "?", " # c", "#", ",", ", ", "[", "]", "{", "}", "'", '"', "''", "\\", "\\n", "|", "|-", ">+", "|2",
           "&x ", "*x", "!!str ", "!", "---\n", "...\n", "é", "\u2028", "\t", "<<", "http://x:80/"]


@SETTINGS
@given(st.lists(st.sampled_from(_TOKENS), max_size=30), st.booleans())
def test_token_soup_loads_the_same(tokens: list[str], final_newline: bool) -> None:
    assert_same("".join(tokens) + ("\n" if final_newline else ""))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
                     st.sampled_from(["1e-5", "yes", "~", "", " a", "a: b", "- x", "#", "{", "2026-01-01", "0x1F"]))
_keys = st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(["lr", "a b", "1", "true", "?", "-", "é"]))
_documents = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(_keys, inner, max_size=4)), max_leaves=30)


@SETTINGS
@given(_documents, st.sampled_from([None, True, False]), st.sampled_from([2, 4]), st.sampled_from([20, 80, 1 << 20]),
       st.booleans(), st.booleans())
def test_random_nested_documents_load_the_same(doc: Any, flow: bool | None, indent: int, width: int,
                                               unicode: bool, explicit_start: bool) -> None:
    text = yaml.safe_dump({"experiment": doc}, default_flow_style=flow, indent=indent, width=width,
                          allow_unicode=unicode, explicit_start=explicit_start, sort_keys=False)
    assert_same(text)


# ------------------------------------------------------------------ bounds


@pytest.mark.parametrize("text", [
    "x: [" + ",".join(["1"] * (MAX_NODES - 3)) + "]\n",  # exactly MAX_NODES values: accepted
    "x: [" + ",".join(["1"] * (MAX_NODES - 2)) + "]\n",  # one more: refused
    "".join(f"k{i}: {i}\n" for i in range(MAX_NODES // 2 + 1)),
    "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n",  # the deepest accepted
    "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n",
    "x: " + "{a: " * MAX_DEPTH + "1" + "}" * MAX_DEPTH + "\n",
    "".join("  " * i + "-\n" for i in range(MAX_DEPTH + 2)),
    "".join("  " * i + "a:\n" for i in range(MAX_DEPTH - 1)),
    "".join("  " * i + "a:\n" for i in range(MAX_DEPTH + 1)),
    "x: " + "[" * 5000 + "\n",  # past libyaml's own nesting limit (1000 in 0.2.6)
    "a: *x\n" + "b: " + "[" * 100 + "\n",  # an undefined alias before the bound
])
def test_bounds_refuse_where_the_pure_python_loader_does(text: str) -> None:
    assert_same(text)


@needs_libyaml
def test_bound_is_raised_before_libyaml_composes(monkeypatch: pytest.MonkeyPatch) -> None:
    composed = []
    real = yamlpos._compose_with
    monkeypatch.setattr(yamlpos, "_compose_with", lambda cls, text: composed.append(cls) or real(cls, text))
    with pytest.raises(SpecError, match=f"values nested more than {MAX_DEPTH} deep"):
        load_yaml(Path("x.yaml"), "- " * 500_000 + "\n")
    assert composed == []


HOSTILE = {
    "2 MiB of [": "[" * yamlpos.MAX_FILE_BYTES,
    "2 MiB of - -": "- " * (yamlpos.MAX_FILE_BYTES // 2 - 1) + "\n",
    "deep block nesting": "".join("  " * i + "-\n" for i in range(1000)),
    "billion laughs": "a0: &a0 [" + ", ".join(['"lol"'] * 10) + "]\n"
    + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 12)),
    "recursive alias": "a: &a [*a, *a]\n",
    "deep through aliases": "".join(f"a{i}: &a{i} " + "[" * 60 + (f"*a{i - 1}" if i else "1") + "]" * 60 + "\n"
                                    for i in range(800)),
}

@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_refused_with_bounded_work(tmp_path: Path, case: str) -> None:
    """Counted, not timed (tests/yaml_probe.py): no bound is passed on the way to the refusal."""
    path = tmp_path / "experiment_summary.yaml"
    path.write_text(HOSTILE[case])
    found = probe(path)
    assert found["unbounded"] is None, (case, found["counts"], found["limits"])
    assert found["message"] is not None, f"{case}: accepted"
    assert found["message"].count("\n") == 0 and str(path) in found["message"]


# ------------------------------------------------------------------ errors that used to escape as tracebacks


@pytest.mark.parametrize("text,expected", [
    ("a: &a [*a]\n", f"values nest more than {MAX_DEPTH} deep once aliases are expanded"),
    ("a: 1\nb: x\x01y\n", "2:5: invalid YAML: unacceptable character #x0001: special characters are not allowed"),
    ("a: !!int abc\n", "1:4: a: 'abc' is not a valid int"),
    ("a: !!bool maybe\n", "1:4: a: 'maybe' is not a valid bool"),
])
def test_refusals_are_one_located_line(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_yaml(Path("x.yaml"), text)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_dates_stay_strings_even_when_impossible() -> None:
    assert load_yaml(Path("x.yaml"), "a: 2026-13-45\nb: 2026-01-05\n").data == {"a": "2026-13-45", "b": "2026-01-05"}


def test_loading_keeps_no_nodes_alive() -> None:
    text = spec_text("synth", Shape.for_units(1_000))
    load_yaml(Path("x.yaml"), text)
    assert not yamlpos._SCALAR_LOADER.constructed_objects
