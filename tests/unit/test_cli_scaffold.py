"""`reconcile scaffold`: what it would write, what it wrote, and that a second run changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import EXPERIMENTS


@pytest.fixture
def exp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECONCILER_CONFIG", str(tmp_path / "none.yaml"))
    target = tmp_path / "exp"
    shutil.copytree(EXPERIMENTS / "scaffold_1b", target)
    return target


def scripts(exp: Path) -> list[Path]:
    return sorted(exp.rglob("*.slurm"))


def test_dry_run_writes_nothing_then_scaffold_writes_then_nothing_changes(exp: Path) -> None:
    runner = CliRunner()
    dry = runner.invoke(main, ["scaffold", str(exp), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would write" in dry.output and scripts(exp) == []
    rows = [line for line in dry.stdout.splitlines() if ": " in line and not line.startswith("would write ")]
    assert rows == [], rows  # every unit's row says what would happen; none claims it was written
    assert "written" not in dry.stdout
    wrote = runner.invoke(main, ["scaffold", str(exp)])
    assert wrote.exit_code == 0, wrote.output
    written = scripts(exp)
    assert written and f"wrote {len(written)} script(s)" in wrote.output
    again = runner.invoke(main, ["scaffold", str(exp)])
    assert "wrote 0 script(s)" in again.output and f"{len(written)} unchanged" in again.output


def test_an_edited_script_is_foreign_and_kept(exp: Path) -> None:
    runner = CliRunner()
    runner.invoke(main, ["scaffold", str(exp)])
    mine = next(p for p in scripts(exp) if p.name == "finetune.slurm")
    mine.write_text("#!/bin/bash\necho my own script\n")
    out = runner.invoke(main, ["scaffold", str(exp), "--force"])
    assert out.exit_code == 0
    assert "foreign" in out.output and mine.read_text() == "#!/bin/bash\necho my own script\n"
