"""JSON plans of real experiments validate against schemas/plan.schema.json, and the schema tracks the planner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reconciler.backends.local.backend import LocalBackend
from reconciler.engine.loop import load_desired, run_pass
from reconciler.plan.planner import ACTIONS, STATES, Policy
from reconciler.report.plan_render import FORMAT_VERSION, plan_record
from tests.conftest import EXPERIMENTS, REPO
from tests.unit.converged_fixture import build_converged, copy_demo

SCHEMA_PATH = REPO / "schemas" / "plan.schema.json"
FIXTURE_EXPERIMENTS = sorted(p.parent for p in EXPERIMENTS.glob("*/experiment_summary.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def assert_valid(validator: jsonschema.Draft202012Validator, record: dict[str, Any]) -> None:
    # Through JSON text, as a consumer reads it.
    data = json.loads(json.dumps(record))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def test_schema_enums_match_the_planner() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    unit = schema["$defs"]["unit"]["properties"]
    assert unit["state"]["enum"] == list(STATES)
    assert unit["action"]["enum"] == list(ACTIONS)
    assert schema["properties"]["format_version"]["const"] == FORMAT_VERSION
    assert schema["properties"]["summary"]["required"] == list(ACTIONS)


@pytest.mark.parametrize("exp", FIXTURE_EXPERIMENTS, ids=lambda p: p.name)
def test_offline_plans_of_fixture_experiments_validate(validator: jsonschema.Draft202012Validator, exp: Path,
                                                       tmp_path: Path) -> None:
    # A copy: an offline plan saves its header cache in the experiment's .reconciler/, and the
    # checked-in fixtures must stay as they are.
    copy = tmp_path / exp.name
    shutil.copytree(exp, copy)
    for presume in (False, True):  # `status --offline`; `plan --offline`
        result = run_pass(load_desired(copy), None, Policy(), act=False, presume_empty=presume)
        assert_valid(validator, plan_record(result.plan))


def test_a_presumed_plan_validates_and_a_presumed_non_submission_does_not(
        validator: jsonschema.Draft202012Validator) -> None:
    record = plan_record(run_pass(load_desired(FIXTURE_EXPERIMENTS[0]), None, Policy(), act=False,
                                  presume_empty=True).plan)
    assert record["scheduler"]["presumed_empty"] and record["scheduler"]["backend"] is None
    assert {(u["action"], u["presumed"]) for u in record["units"]} == {("submit", True)}
    assert_valid(validator, record)
    record["units"][0]["action"] = "none"
    assert not validator.is_valid(json.loads(json.dumps(record)))


def test_plan_with_submissions_validates(validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    desired = load_desired(copy_demo(tmp_path / "exp"))
    result = run_pass(desired, LocalBackend(desired.layout.state_dir / "local"), Policy(), act=False)
    record = plan_record(result.plan)
    assert record["summary"]["submit"] > 0 and record["has_changes"]
    assert any(u["after"] for u in record["units"])  # evals planned afterok their fine-tune
    assert_valid(validator, record)


@pytest.mark.slow  # the converged fixture runs real `inspect eval`s (once per session)
def test_converged_and_outdated_plans_validate(validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    desired = build_converged(tmp_path / "exp")
    converged = plan_record(run_pass(desired, None, Policy(), act=False).plan)
    assert converged["converged"] and all(u["job_id"] for u in converged["units"])
    assert_valid(validator, converged)

    spec = desired.loaded.path
    spec.write_text(spec.read_text().replace("lora_rank: 8, lr: 1e-4", "lora_rank: 8, lr: 3e-4"))
    for policy in (Policy(), Policy(replace_outdated=True)):
        record = plan_record(run_pass(load_desired(spec), None, policy, act=False).plan)
        assert any(u["state"] == "outdated" for u in record["units"])
        assert_valid(validator, record)


def test_schema_rejects_a_broken_plan(validator: jsonschema.Draft202012Validator) -> None:
    record = plan_record(run_pass(load_desired(FIXTURE_EXPERIMENTS[0]), None, Policy(), act=False).plan)
    record["units"][0]["action"] = "destroy"
    assert not validator.is_valid(json.loads(json.dumps(record)))
