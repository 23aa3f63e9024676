"""Broken experiment files generated from the published schema, on top of the 40 hand-written ones.

Hypothesis picks a value of a valid file (fixtures/experiments/sweep8) and breaks it the way
its JSON Schema says it must not be broken: a value of the wrong type, a required key removed,
a string outside its pattern or enum, a number outside its bounds. A mutation counts only if
the schema itself rejects the result. Every such file must make `validate`, `plan` and `apply`
exit 2 with one line `error: FILE:LINE[:COL]: ...` (validate may give one per problem), no
traceback, and nothing written. What each
command made of each file is counted before it is asserted, and tallied when the module ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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
from tests.reliability.harness import Case, Record, Tally

SCHEMA = json.loads((REPO / "schemas" / "experiment_summary.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
BASE = load_yaml(EXPERIMENTS / "sweep8" / "experiment_summary.yaml").data
LOCATED = re.compile(r"^error: (?P<path>.+?):(?P<line>\d+)(:\d+)?: \S")
EXAMPLES = 80
FAULT_CLASS = "bad input"

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


@dataclass
class Outcome:
    refused: bool  # exit 2 with one line `error: FILE:LINE[:COL]: ...` (validate: one such line per problem)
    traceback: bool
    wrote: bool  # something appeared in the experiment's directory


def run_command(command: str, path: Path) -> tuple[Outcome, str]:
    """`reconcile COMMAND FILE` in-process; what came of it, counted before anything is asserted."""
    directory = path.parent
    before = sorted(p.name for p in directory.rglob("*"))
    args = [command, str(path)] + (["--backend", "local"] if command == "apply" else [])
    result = CliRunner().invoke(main, args)
    lines = result.stderr.strip().splitlines()
    matches = [LOCATED.match(line) for line in lines]
    # One line; validate may list every problem, one located line each.
    refused = result.exit_code == 2 and bool(lines) and (len(lines) == 1 or command == "validate") \
        and all(m is not None and m["path"] == str(path) for m in matches)
    traceback = "Traceback" in result.output or not (result.exception is None or isinstance(result.exception, SystemExit))
    wrote = sorted(p.name for p in directory.rglob("*")) != before
    return Outcome(refused, traceback, wrote), f"exit {result.exit_code}: {result.output[-600:]}"


# Every generated file (as canonical JSON) and what each command made of it; tallied at the module's end.
GENERATED: dict[str, list[Outcome]] = {}


@pytest.fixture(scope="module")
def generated_tally(tally: Tally) -> Iterator[dict[str, list[Outcome]]]:
    """After the generator has run: one record of what it found (counted, whether its checks passed or not)."""
    yield GENERATED
    outcomes = [o for runs in GENERATED.values() for o in runs]
    bad_files = sum(1 for runs in GENERATED.values() if any(not o.refused or o.wrote for o in runs))
    tally.add(Record(FAULT_CLASS, "-", f"generated from the schema ({len(GENERATED)} distinct files)",
                     ran=int(bool(GENERATED)), faults=len(GENERATED), runs=len(outcomes), units=0,
                     wrong_states=bad_files, tracebacks=sum(o.traceback for o in outcomes), failed=int(bad_files > 0)))


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
@given(case=broken_documents(), command=st.sampled_from(["validate", "plan", "apply"]))
def test_schema_invalid_file_exits_2_located(tmp_path_factory: pytest.TempPathFactory,
                                             generated_tally: dict[str, list[Outcome]],
                                             case: tuple[str, dict[str, Any]], command: str) -> None:
    what, doc = case
    path = tmp_path_factory.mktemp("bad") / "experiment_summary.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    outcome, output = run_command(command, path)
    generated_tally.setdefault(json.dumps(doc, sort_keys=True), []).append(outcome)
    assert not outcome.traceback, (what, command, output)
    assert outcome.refused, (what, command, output)
    assert not outcome.wrote, f"{what}: something was written"


def test_generated_corpus_size() -> None:
    """Runs after the generator (file order): at least 40 distinct broken files on top of the hand-written ones."""
    if not GENERATED:
        pytest.skip("run together with test_schema_invalid_file_exits_2_located")
    assert len(GENERATED) >= 40, len(GENERATED)


def test_hand_written_corpus_through_every_command(tmp_path: Path, tally: Tally) -> None:
    """The hand-written corpus of tests/unit/test_bad_input.py, through validate, plan and apply."""
    from tests.unit.test_bad_input import EDITS, GOOD

    with Case(tally, FAULT_CLASS, "-", f"hand-written corpus ({len(EDITS)} files, tests/unit/test_bad_input.py)") \
            as counted:
        problems = []
        for name, old, new, _ in EDITS:
            for command in ("validate", "plan", "apply"):
                directory = tmp_path / f"{name}-{command}"
                directory.mkdir()
                path = directory / "experiment_summary.yaml"
                path.write_text(GOOD.replace(old, new, 1))
                outcome, output = run_command(command, path)
                counted.record.runs += 1
                counted.record.tracebacks += outcome.traceback
                if not outcome.refused or outcome.wrote:
                    counted.wrong(1, f"{name} ({command})")
                    problems.append(f"{name} ({command}): {output}")
            counted.fault()
        assert not problems, "\n".join(problems)
        counted.check()
