"""Loading both dialects, locating errors, warning on unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand
from tests.conftest import EXPERIMENTS


def test_v03_sweep_loads_and_detects_dialect() -> None:
    loaded = load_spec(EXPERIMENTS / "sweep8")
    assert loaded.dialect == "v0.3"
    assert loaded.experiment_dir == (EXPERIMENTS / "sweep8").resolve()
    assert loaded.warnings == ()
    # YAML 1.1 reads 1e-5 as a string; users mean a number.
    assert loaded.spec.runs[0].parameters["lr"] == pytest.approx(1e-5)


def test_a_run_is_found_by_its_name() -> None:
    spec = load_spec(EXPERIMENTS / "sweep8").spec
    assert [spec.run_named(r.name) for r in reversed(spec.runs)] == list(reversed(spec.runs))
    with pytest.raises(KeyError, match="no run named 'nope'"):
        spec.run_named("nope")


def test_v02_sweep_loads_with_its_own_layout() -> None:
    loaded = load_spec(EXPERIMENTS / "v02_sweep" / "experiment_summary.yaml")
    assert loaded.dialect == "v0.2"
    desired = expand(loaded)
    keys = [u.key for u in desired.units]
    assert keys == ["finetune/rank4", "eval/rank4/capitalization/epoch0", "eval/rank4/capitalization/epoch2",
                    "eval/base/capitalization/base"]
    root = EXPERIMENTS / "v02_sweep"
    ev = desired.by_key()["eval/rank4/capitalization/epoch2"]
    assert ev.model_path == (root / "out" / "ck-out-rank4" / "epoch_2").resolve()
    assert ev.script == (root / "exp" / "rank4" / "eval" / "capitalization_epoch2.slurm").resolve()
    assert desired.by_key()["eval/base/capitalization/base"].script.name == "capitalization.slurm"  # cruijff_kit v0.2's name
    assert ev.log_dir == (root / "exp" / "rank4" / "eval" / "logs").resolve()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment_summary.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_warn_with_location(tmp_path: Path) -> None:
    text = (EXPERIMENTS / "sweep8" / "experiment_summary.yaml").read_text()
    text = text.replace('  wandb_project: "cap_sweep"', '  wandb_project: "cap_sweep"\n  my_note: "mine"')
    loaded = load_spec(write(tmp_path, text))
    assert len(loaded.warnings) == 1
    assert "output.my_note: unknown key" in loaded.warnings[0]
    assert ":41:3:" in loaded.warnings[0]


def test_error_names_file_line_column_and_field(tmp_path: Path) -> None:
    text = (EXPERIMENTS / "sweep8" / "experiment_summary.yaml").read_text()
    text = text.replace('- {run: "r8_lr1e-5", tasks', '- {run: "rank16", tasks')
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text))
    message = str(err.value)
    assert message.endswith(":64:13: evaluation.matrix[2].run: 'rank16' is not a run defined under runs")
    assert message.startswith(str(tmp_path))


def test_templates_with_type_names_are_rejected(cruijff: Path) -> None:
    for template in (cruijff / "head-72a4ace/templates/experiment_summary.yaml",
                     cruijff / "v0.2.2-419e6bb/templates/experiment_summary.yaml"):
        with pytest.raises(SpecError) as err:
            load_spec(template)
        assert err.value.line is not None and err.value.field
