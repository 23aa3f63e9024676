"""Broken experiment files generated from the published schema, on top of the 40 hand-written ones.

Hypothesis picks a value of a valid file (fixtures/experiments/sweep8) and breaks it the way
its JSON Schema says it must not be broken: a value of the wrong type, a required key removed,
a string outside its pattern or enum, a number outside its bounds. A mutation counts only if
the schema itself rejects the result. Every such file must make `validate`, `plan` and `apply`
exit 2 with one line `error: FILE:LINE[:COL]: ...`, no traceback, and nothing written.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.spec.yamlpos import load_yaml
from tests.conftest import EXPERIMENTS, REPO
from tests.reliability.harness import Record, Tally

SCHEMA = json.loads((REPO / "schemas" / "experiment_summary.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
BASE = load_yaml(EXPERIMENTS / "sweep8" / "experiment_summary.yaml").data
LOCATED = re.compile(r"^error: (?P<path>.+?):(?P<line>\d+)(:\d+)?: \S")
EXAMPLES = 80

# Strings that break names and patterns the way hostile or careless input does.
BAD_STRINGS = ["", " ", "../escape", "/abs/path", "a b", "$(id)", "x;rm -rf ~", "name\n", "\u0430bc", "ｆｕｌｌ",
               "-leading", "." * 3, "a" * 300, "12:3", "2026-13", "tomorrow", "1 GB", "{input", "NaN"]
WRONG_VALUES: list[Any] = [None, True, 0, -1, 3.5, "text", [], ["x"], {}, {"k": 1}]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema = resolve(schema)
    if "anyOf" in schema:
        return [b for s in schema["anyOf"] for b in branches(s)]
    return [schema]


def slots(value: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], dict]]:
    """Every (path, schema) pair of the document, the root included, that the schema describes."""
    out = [(path, schema)]
    for branch in branches(schema):
        if isinstance(value, dict) and branch.get("type") == "object":
            for key, sub in (branch.get("properties") or {}).items():
                if key in value:
                    out += slots(value[key], sub, path + (key,))
        elif isinstance(value, list) and branch.get("type") == "array" and "items" in branch:
            for i, item in enumerate(value):
                out += slots(item, branch["items"], path + (i,))
    return out


SLOTS = [s for s in slots(BASE, SCHEMA) if s[0]]


def get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    get(doc, path[:-1])[path[-1]] = value


def _kinds(schema: dict[str, Any]) -> list[str]:
    options = branches(schema)
    kinds = ["wrong type"]
    if any(b.get("type") == "object" and b.get("required") for b in options):
        kinds.append("drop required")
    if any("pattern" in b or "enum" in b for b in options):
        kinds.append("bad string")
    if any("minimum" in b or "maximum" in b for b in options):
        kinds.append("out of bounds")
    return kinds


KINDS = {kind: [s for s in SLOTS if kind in _kinds(s[1])]
         for kind in ("wrong type", "drop required", "bad string", "out of bounds")}


@st.composite
def broken_documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """First the kind of damage, then a place in the document where the schema forbids it."""
    doc = json.loads(json.dumps(BASE))
    kind = draw(st.sampled_from(sorted(KINDS)))
    path, schema = draw(st.sampled_from(KINDS[kind]))
    options = branches(schema)
    if kind == "wrong type":
        put(doc, path, draw(st.sampled_from(WRONG_VALUES)))
    elif kind == "drop required":
        required = next(b["required"] for b in options if b.get("type") == "object" and b.get("required"))
        del get(doc, path)[draw(st.sampled_from(sorted(required)))]
    elif kind == "bad string":
        put(doc, path, draw(st.sampled_from(BAD_STRINGS) | st.text(max_size=12)))
    else:
        bound = next(b for b in options if "minimum" in b or "maximum" in b)
        value = bound["minimum"] - draw(st.integers(1, 5)) if "minimum" in bound else bound["maximum"] + 1
        put(doc, path, value)
    # Only mutations the published schema rejects: the file must then be refused too.
    assume(not VALIDATOR.is_valid(doc))
    return f"{kind} at {'.'.join(map(str, path))}", doc


CASES: list[str] = []


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
@given(case=broken_documents(), command=st.sampled_from(["validate", "plan", "apply"]))
def test_schema_invalid_file_exits_2_located(tmp_path_factory: pytest.TempPathFactory,
                                             case: tuple[str, dict[str, Any]], command: str) -> None:
    what, doc = case
    directory = tmp_path_factory.mktemp("bad")
    path = directory / "experiment_summary.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    before = sorted(p.name for p in directory.rglob("*"))
    args = [command, str(path)] + (["--backend", "local"] if command == "apply" else [])
    result = CliRunner().invoke(main, args)
    CASES.append(json.dumps(doc, sort_keys=True))
    assert result.exit_code == 2, (what, command, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (what, lines)
    match = LOCATED.match(lines[0])
    assert match and match["path"] == str(path), (what, lines[0])
    assert "Traceback" not in result.output, (what, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (what, result.exception)
    assert sorted(p.name for p in directory.rglob("*")) == before, f"{what}: something was written"


def test_generated_corpus_size(tally: Tally) -> None:
    """Runs after the generator (file order): at least 40 distinct broken files on top of the hand-written 40."""
    distinct = len(set(CASES))
    tally.add(Record("bad input", "-", f"{distinct} distinct generated files", distinct, len(CASES), 0, 0, 0, 0))
    if not CASES:
        pytest.skip("run together with test_schema_invalid_file_exits_2_located")
    assert distinct >= 40, distinct


def test_hand_written_corpus_is_counted(tally: Tally) -> None:
    from tests.unit.test_bad_input import EDITS

    tally.add(Record("bad input", "-", "hand-written corpus (tests/unit/test_bad_input.py)", len(EDITS),
                     2 * len(EDITS), 0, 0, 0, 0))
    assert len(EDITS) >= 40
