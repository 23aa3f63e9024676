"""The JSON Schema of experiment_summary.yaml, generated from the pydantic models."""

from __future__ import annotations

import json

from reconciler.spec.models import ExperimentSpec

SCHEMA_ID = "https://github.com/reconciler/reconciler/schemas/experiment_summary.schema.json"


def experiment_schema() -> dict:
    schema = ExperimentSpec.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "experiment_summary.yaml",
        "description": "A fine-tune + eval experiment (cruijff_kit v0.2 and v0.3.4 dialects) for `reconcile`.",
        **schema,
    }


def experiment_schema_text() -> str:
    return json.dumps(experiment_schema(), indent=2, sort_keys=True) + "\n"
