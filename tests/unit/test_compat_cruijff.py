"""The real experiment files of our users validate and plan to what they describe."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import main
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand

REAL = ["v0.2.1-e76b921/fixtures/design/experiment_summary.yaml",
        "head-72a4ace/fixtures/design/experiment_summary.yaml"]


def test_real_files_expand_to_two_finetunes_and_two_evals(cruijff: Path) -> None:
    for rel in REAL:
        desired = expand(load_spec(cruijff / rel))
        kinds = [u.kind for u in desired.units]
        assert kinds.count("finetune") == 2 and kinds.count("eval") == 2, rel
        for unit in desired.units:
            if unit.kind == "eval":
                assert unit.depends_on == (f"finetune/{unit.run}",)


def test_real_files_plan_two_finetunes_and_two_gated_evals(cruijff: Path, tmp_path: Path) -> None:
    for rel in REAL:
        # Copy so the plan's (absent) experiment directory lands in a scratch place.
        src = cruijff / rel
        dst = tmp_path / rel.split("/")[0] / "experiment_summary.yaml"
        dst.parent.mkdir(parents=True)
        dst.write_text(src.read_text())
        before = sorted(tmp_path.rglob("*"))
        result = CliRunner().invoke(main, ["plan", str(dst), "--backend", "local", "--format", "json"])
        assert result.exit_code == 0, result.output
        import json

        plan = json.loads(result.stdout)  # warnings (paths not visible here) go to stderr
        assert plan["summary"]["submit"] == 4
        evals = [u for u in plan["units"] if u["kind"] == "eval"]
        assert all(u["after"] == [f"finetune/{u['run']}"] for u in evals)
        # The files' experiment dir is `__SCRATCH__/...`, relative to the spec: beside it, under tmp_path.
        assert sorted(tmp_path.rglob("*")) == before, "plan must write nothing (not even the experiment directory)"


def test_real_file_dialects(cruijff: Path) -> None:
    assert load_spec(cruijff / REAL[0]).dialect == "v0.2"
    assert load_spec(cruijff / REAL[1]).dialect == "v0.3"
