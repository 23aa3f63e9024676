"""Plans of fixture experiments in each format against golden files; `plan --detailed-exitcode` exit codes.

Regenerate the golden files with `UPDATE_GOLDEN=1 pytest tests/unit/test_plan_golden.py`.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pytest
from click.testing import CliRunner

from reconciler.backends.local.backend import LocalBackend
from reconciler.cli import main
from reconciler.engine.loop import PassResult, load_desired, run_pass
from reconciler.plan.planner import Policy
from reconciler.report import plan_markdown, plan_render
from reconciler.spec.units import Desired
from tests.conftest import EXPERIMENTS, FIXTURES
from tests.unit.converged_fixture import DEMO, build_converged, copy_demo

GOLDEN = FIXTURES / "golden" / "plan"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN_EXPERIMENTS = ("sweep8", "v02_sweep")


def _markdown(result: PassResult, desired: Desired, out: TextIO) -> None:
    plan_markdown.write_markdown(result.plan, out, desired)


RENDERERS: dict[str, Callable[[PassResult, Desired, TextIO], None]] = {
    "txt": lambda result, desired, out: plan_render.write_text(result.plan, out),
    "json": lambda result, desired, out: plan_render.write_json(result.plan, out),
    "md": _markdown,
}
CLI_FORMAT = {"txt": "text", "json": "json", "md": "markdown"}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept the change)"


@pytest.mark.parametrize("ext", sorted(RENDERERS))
@pytest.mark.parametrize("name", GOLDEN_EXPERIMENTS)
def test_fresh_offline_plan_matches_golden(name: str, ext: str) -> None:
    desired = load_desired(EXPERIMENTS / name)
    result = run_pass(desired, None, Policy(), act=False, presume_empty=True)  # as `plan --offline`
    out = io.StringIO()
    RENDERERS[ext](result, desired, out)
    check_golden(f"{name}.{ext}", out.getvalue())


@pytest.mark.parametrize("ext", sorted(RENDERERS))
def test_fresh_plan_with_a_scheduler_matches_golden(tmp_path: Path, ext: str) -> None:
    """The demo, nothing run yet, an empty local scheduler: everything to submit, evals afterok their fine-tune."""
    desired = load_desired(copy_demo(tmp_path / "exp"))
    result = run_pass(desired, LocalBackend(desired.layout.state_dir / "local"), Policy(), act=False)
    out = io.StringIO()
    RENDERERS[ext](result, desired, out)
    check_golden(f"demo_fresh.{ext}", out.getvalue())


@pytest.mark.slow
@pytest.mark.parametrize("ext", sorted(RENDERERS))
def test_outdated_plan_matches_golden(tmp_path: Path, ext: str) -> None:
    """The converged demo after one run's learning rate changed: that run's fine-tune and evals are outdated."""
    desired = build_converged(tmp_path / "exp")
    spec = desired.loaded.path
    spec.write_text(spec.read_text().replace("lora_rank: 8, lr: 1e-4", "lora_rank: 8, lr: 3e-4"))
    desired = load_desired(spec)
    result = run_pass(desired, None, Policy(), act=False, presume_empty=True)
    out = io.StringIO()
    RENDERERS[ext](result, desired, out)
    check_golden(f"demo_outdated.{ext}", out.getvalue())


@pytest.mark.parametrize("ext", sorted(CLI_FORMAT))
def test_cli_plan_offline_prints_the_golden_plan(ext: str) -> None:
    """What `reconcile plan --offline --format F` prints is what the renderers make (cli.py adds nothing)."""
    if UPDATE:
        pytest.skip("golden files are being regenerated")
    exp = EXPERIMENTS / GOLDEN_EXPERIMENTS[0]
    result = CliRunner().invoke(main, ["plan", str(exp), "--offline", "--format", CLI_FORMAT[ext]])
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / f"{exp.name}.{ext}").read_text()


def test_golden_json_is_the_documented_format() -> None:
    record = json.loads((GOLDEN / "sweep8.json").read_text())
    assert record["format_version"] == 3
    assert record["scheduler"] == {"backend": None, "known": False, "note": "offline: the scheduler was not asked",
                                   "presumed_empty": True}
    # Offline, a fresh sweep is presumed to need everything: 8 fine-tunes and 17 evals, each marked so.
    assert record["summary"]["submit"] == 25 and record["has_changes"]
    assert all(u["presumed"] and u["reason"].startswith("scheduler not asked") for u in record["units"])
    assert record["summary_line"].endswith("; 25 presumed (scheduler not asked)")


def test_offline_presumes_nothing_the_journal_says_is_in_flight(tmp_path: Path) -> None:
    """Units the journal knows a live job of stay unknown offline; the rest are presumed."""
    from reconciler.journal import Journal

    desired = load_desired(copy_demo(tmp_path / "exp"))
    ft = next(u for u in desired.units if u.kind == "finetune")
    Journal(desired.layout.state_dir).append("submitted", unit=ft.key, job_id="7", fingerprint=ft.fingerprint)
    plan = run_pass(desired, None, Policy(), act=False, presume_empty=True).plan
    states = {p.key: (p.state, p.action, p.presumed) for p in plan.units}
    assert states[ft.key] == ("unknown", "none", False)
    assert {v for k, v in states.items() if k != ft.key and ft.key not in desired.by_key()[k].depends_on} == \
        {("missing", "submit", True)}
    # `apply` asks the scheduler: nothing it plans is presumed.
    asked = run_pass(desired, LocalBackend(desired.layout.state_dir / "local"), Policy(), act=False).plan
    assert asked.presumed == 0 and not asked.presumed_empty and asked.backend == "local"


# --- exit codes (Terraform's -detailed-exitcode: 0 no changes, 1 error, 2 changes) ---------------------------


def plan_exit(exp: Path, *extra: str) -> int:
    result = CliRunner().invoke(main, ["plan", str(exp), "--detailed-exitcode", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code


def test_fresh_experiment_has_changes_exit_2(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "exp")
    assert plan_exit(exp, "--backend", "local") == 2
    assert plan_exit(exp, "--offline") == 2  # presumed actions are actions: a CI check must not pass on them
    # Without the flag, pending actions are a success.
    assert CliRunner().invoke(main, ["plan", str(exp), "--backend", "local"]).exit_code == 0


@pytest.mark.slow
def test_converged_experiment_exit_0(tmp_path: Path) -> None:
    desired = build_converged(tmp_path / "exp")
    exp = desired.layout.experiment_dir
    assert plan_exit(exp, "--backend", "local") == 0
    assert plan_exit(exp, "--offline") == 0  # every unit is settled by files and the journal
    result = CliRunner().invoke(main, ["plan", str(exp), "--offline", "--format", "json"])
    record = json.loads(result.stdout)
    assert record["converged"] and {u["state"] for u in record["units"]} == {"done"}


@pytest.mark.parametrize("case", ["missing", "invalid"])
def test_error_exit_1(tmp_path: Path, case: str) -> None:
    """An error must not read as "changes pending" (hashicorp/setup-terraform#328)."""
    exp = tmp_path / "exp"
    if case == "invalid":
        exp = copy_demo(exp)
        spec = exp / "experiment_summary.yaml"
        spec.write_text(spec.read_text().replace('run: "base"', 'run: "nosuchrun"'))
    assert plan_exit(exp, "--offline") == 1


# --- the GPU-hours estimate ----------------------------------------------------------------------------------


def test_model_size_and_gpus_from_the_name() -> None:
    # The scaffold's size table: the estimate asks for the GPUs the job scripts ask for.
    assert [plan_markdown.model_gpus(m) for m in ("Llama-3.2-1B", "Qwen-3B", "Llama-3.1-8B", "Llama-3.3-70B")] == \
        [1, 1, 1, 4]
    assert plan_markdown.model_gpus("capdemo-tiny") == 1  # no size in the name: the 1B row
    assert plan_markdown.model_gpus("Llama-3.1-405B") == 4  # larger than the table: its largest row


def test_fallback_cost_uses_compute_overrides(tmp_path: Path) -> None:
    spec = (EXPERIMENTS / "v02_sweep" / "experiment_summary.yaml").read_text()
    spec = spec.replace('parameters: {lora_rank: 4}', 'parameters: {lora_rank: 4}\n    compute: {time: "3:00:00", gpus: 2}')
    spec = spec.replace("  temperature: 0.0", '  temperature: 0.0\n  compute: {time: "45"}')
    (tmp_path / "experiment_summary.yaml").write_text(spec)
    desired = load_desired(tmp_path)
    units = desired.by_key()
    costs = {k: plan_markdown.fallback_cost(desired, u) for k, u in units.items()}
    assert (costs["finetune/rank4"].gpus, costs["finetune/rank4"].seconds) == (2, 3 * 3600)
    assert (costs["eval/base/capitalization/base"].gpus, costs["eval/base/capitalization/base"].seconds) == (1, 45 * 60)
    assert costs["finetune/rank4"].gpu_hours == 6.0


def test_estimate_counts_submissions_and_bounds_unknown_units(tmp_path: Path) -> None:
    # The demo asks for one CPU and no GPU (its `compute` blocks); without them, the size table's GPUs.
    spec = re.sub(r",?\s*compute: \{[^}]*\}", "", (DEMO / "experiment_summary.yaml").read_text())
    desired = load_desired(copy_demo(tmp_path / "exp", spec))
    known = run_pass(desired, LocalBackend(desired.layout.state_dir / "local"), Policy(), act=False)
    est = plan_markdown.estimate_record(known.plan, desired)
    # 3 fine-tunes x 1 GPU x 2 h + 7 evals x 1 GPU x 0.5 h (capdemo-tiny has no size: the 1B row).
    assert est["submit"] == {"units": 10, "jobs": 10, "gpu_hours": 9.5, "presumed": 0} and est["unknown"]["units"] == 0
    offline = run_pass(desired, None, Policy(), act=False)
    est = plan_markdown.estimate_record(offline.plan, desired)
    assert est["submit"]["units"] == 0 and est["unknown"] == {"units": 10, "gpu_hours": 9.5}
    presumed = run_pass(desired, None, Policy(), act=False, presume_empty=True)  # `plan --offline`
    est = plan_markdown.estimate_record(presumed.plan, desired)
    assert est["submit"] == {"units": 10, "jobs": 10, "gpu_hours": 9.5, "presumed": 10} and est["unknown"]["units"] == 0
