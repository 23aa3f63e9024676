"""`reconcile diff`: a spec pair with an added run, a changed lr, a removed task and reordered lists."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.spec.diff import describe_units, diff_specs, field_path, input_changes
from reconciler.app.source import load_source
from reconciler.errors import ReconcilerError
from reconciler.report import diff_render
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand
from tests.conftest import EXPERIMENTS

OLD = EXPERIMENTS / "diff_old"
NEW = EXPERIMENTS / "diff_new"
REORDERED = EXPERIMENTS / "diff_reordered"


@pytest.fixture(scope="module")
def pair_diff():  # type: ignore[no-untyped-def]
    return diff_specs(load_spec(OLD), load_spec(NEW), "old", "new")


def test_changed_lr_names_the_field_and_exactly_the_units_it_changes(pair_diff) -> None:  # type: ignore[no-untyped-def]
    assert [f.path for f in pair_diff.fields] == ["runs[rank8].parameters.lr"]
    field = pair_diff.fields[0]
    assert (field.change, field.old, field.new) == ("changed", 1e-5, 5e-5)
    assert field.units == ("finetune/rank8", "eval/rank8/capitalization/epoch0", "eval/rank8/capitalization/epoch1")
    assert field.described == "finetune/rank8 and its 2 evals"
    assert [c.key for c in pair_diff.changed] == list(field.units)
    assert all(c.old_fingerprint != c.new_fingerprint and c.fields == (field.path,) for c in pair_diff.changed)


def test_added_run_and_removed_task(pair_diff) -> None:  # type: ignore[no-untyped-def]
    assert pair_diff.added == ("finetune/rank16", "eval/rank16/capitalization/epoch0",
                               "eval/rank16/capitalization/epoch1")
    assert pair_diff.removed == ("eval/base/reverse/base", "eval/rank4/reverse/epoch0", "eval/rank4/reverse/epoch1")
    # rank4 and the control's capitalization eval are untouched, although their list positions moved.
    assert pair_diff.unchanged == 4
    assert pair_diff.differs and not pair_diff.notes


def test_reordering_lists_alone_changes_nothing() -> None:
    diff = diff_specs(load_spec(OLD), load_spec(REORDERED))
    assert not diff.differs
    assert (diff.added, diff.removed, diff.changed, diff.fields) == ((), (), (), ())
    assert diff.unchanged == len(expand(load_spec(OLD)).units)
    assert diff.summary_line().startswith("Diff: no changes")


def test_same_file_is_equal() -> None:
    assert not diff_specs(load_spec(NEW), load_spec(NEW)).differs


def test_text_render_has_one_line_per_field(pair_diff) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    diff_render.write_text(pair_diff, out)
    text = out.getvalue()
    assert "  runs[rank8].parameters.lr: 1e-05 -> 5e-05 changes finetune/rank8 and its 2 evals\n" in text
    assert "  + finetune/rank16\n" in text and "  - eval/rank4/reverse/epoch0\n" in text
    assert text.rstrip().endswith("Diff: 3 to add, 3 to remove, 3 changed by 1 field(s); 4 unchanged")


def test_json_and_markdown_are_built_from_one_record(pair_diff) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    diff_render.write_json(pair_diff, out)
    record = json.loads(out.getvalue())
    assert record["format_version"] == 1 and record["differs"] is True
    assert record["summary"] == {"added": 3, "removed": 3, "changed": 3, "unchanged": 4}
    assert record["fields"][0]["path"] == "runs[rank8].parameters.lr"
    assert (record["fields"][0]["old"], record["fields"][0]["new"]) == (1e-5, 5e-5)
    md = io.StringIO()
    diff_render.write_markdown(pair_diff, md)
    assert "| `runs[rank8].parameters.lr` | `1e-05` | `5e-05` | finetune/rank8 and its 2 evals |" in md.getvalue()
    assert record["summary_line"] in md.getvalue()


def test_nested_and_added_input_paths() -> None:
    old = {"evaluation.scorers": [{"name": "match"}], "runs[a].parameters.lr": 1e-5}
    new = {"evaluation.scorers": [{"name": "includes"}, {"name": "f1"}], "runs[a].parameters.lr": 1e-5,
           "runs[a].dataset_path": "d.json"}
    assert input_changes(old, new) == [
        ("evaluation.scorers[0].name", "changed", "match", "includes"),
        ("evaluation.scorers[1]", "added", None, {"name": "f1"}),
        ("runs[a].dataset_path", "added", None, "d.json"),
    ]
    assert field_path(["evaluation.scorers", 0, "params", "x"]) == "evaluation.scorers[0].params.x"


def test_units_are_named_up_to_three_then_counted() -> None:
    loaded = load_spec(NEW)
    units = sorted((u for u in expand(loaded).units if u.run != "base"), key=lambda u: u.key)
    assert describe_units(units) == "finetune/rank16, finetune/rank4, finetune/rank8 and their 6 evals"
    controls = [u for u in expand(loaded).units if u.run == "base"]
    assert describe_units(controls) == "eval/base/capitalization/base"
    sweep = expand(load_spec(EXPERIMENTS / "sweep8")).units
    assert describe_units(list(sweep)) == "8 fine-tunes and their 16 evals; eval/base/capitalization/base"


def test_git_source_reads_the_committed_file(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "exp").mkdir(parents=True)
    spec = repo / "exp" / "experiment_summary.yaml"
    shutil.copy(OLD / "experiment_summary.yaml", spec)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "exp"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "old"], check=True)
    shutil.copy(NEW / "experiment_summary.yaml", spec)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        for source in ("git:HEAD:exp/experiment_summary.yaml", "git:HEAD:exp"):
            diff = diff_specs(load_source(source), load_source("exp"))
            assert [f.path for f in diff.fields] == ["runs[rank8].parameters.lr"]
            assert not diff.notes  # same place in the tree: no "directory changed" note
        assert not diff_specs(load_source("git:HEAD:exp"), load_source("git:HEAD:exp")).differs
        with pytest.raises(ReconcilerError, match="git:nosuchrev:exp"):
            load_source("git:nosuchrev:exp")
        with pytest.raises(ReconcilerError, match="expected git:REV:path"):
            load_source("git:HEAD")


@pytest.mark.parametrize(("new", "code"), [(NEW, 2), (REORDERED, 0), (EXPERIMENTS / "nosuch", 1)])
def test_cli_exit_codes(new: Path, code: int) -> None:
    """0 same desired state, 2 differ, 1 error (a spec error too: 2 must only ever mean "differ")."""
    from click.testing import CliRunner

    from reconciler.cli import main

    assert "diff" in main.commands, "`reconcile diff` is gone from the CLI"
    for fmt in ("text", "json", "markdown"):
        result = CliRunner().invoke(main, ["diff", str(OLD), str(new), "--format", fmt])
        assert result.exit_code == code, result.output
    if code == 2:
        result = CliRunner().invoke(main, ["diff", str(OLD), str(new), "--format", "json"])
        assert json.loads(result.stdout)["fields"][0]["path"] == "runs[rank8].parameters.lr"
