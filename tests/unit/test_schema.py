"""The published JSON Schema is exactly what `reconcile schema` prints, and it accepts real files."""

from __future__ import annotations

import json

import jsonschema
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.spec.load import load_spec
from tests.conftest import EXPERIMENTS, REPO


def test_published_schema_matches_models() -> None:
    printed = CliRunner().invoke(main, ["schema"]).output
    published = (REPO / "schemas" / "experiment_summary.schema.json").read_text()
    assert printed == published, "run `reconcile schema --output schemas/experiment_summary.schema.json`"


def test_schema_validates_fixture_experiments() -> None:
    schema = json.loads((REPO / "schemas" / "experiment_summary.schema.json").read_text())
    for name in ("sweep8", "v02_sweep"):
        data = load_spec(EXPERIMENTS / name).located.data
        jsonschema.validate(data, schema)
