"""Ties are named in summary.md and visible in the plot: two runs at the same accuracy never hide each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.records.summary import _best
from reconciler.records.summary_model import EvalResult, Summary
from reconciler.records.summary_plot import plot_accuracy
from reconciler.report.summary_render import markdown_text


def cell(run: str, epoch: int | None, value: float, run_type: str = "fine-tuned") -> EvalResult:
    return EvalResult(run=run, run_type=run_type, task="capitalization", epoch=epoch, state="done",
                      metric="accuracy", value=value, samples=16, total_samples=16)


def summary_of(evaluations: list[EvalResult]) -> Summary:
    """The real demo's outcome: random weights, every run and the control at accuracy 0.0."""
    controls = [e.run for e in evaluations if e.run_type == "control"]
    return Summary(experiment="tie", experiment_dir="/x", generated="now", units_done=5, units_total=5,
                   complete=True, evaluations=evaluations, controls=controls,
                   best=_best(evaluations, controls))


ALL_ZERO = [cell("rank4_lr1e-3", 0, 0.0), cell("rank4_lr1e-3", 1, 0.0), cell("rank4_lr3e-3", 0, 0.0),
            cell("rank4_lr3e-3", 1, 0.0), cell("base", None, 0.0, "control")]


def test_a_tie_names_every_cell_that_shares_the_best_score_and_the_control() -> None:
    text = markdown_text(summary_of(ALL_ZERO))
    line = next(line for line in text.splitlines() if line.startswith("**Best performing on capitalization:**"))
    assert "a tie at accuracy 0.0 between `rank4_lr1e-3` (epoch 0), `rank4_lr1e-3` (epoch 1), " \
           "`rank4_lr3e-3` (epoch 0) and `rank4_lr3e-3` (epoch 1)" in line, line
    assert "the control `base` scores the same (0.0)" in line, line


def test_a_single_best_is_not_called_a_tie() -> None:
    text = markdown_text(summary_of([cell("a", 0, 0.5), cell("b", 0, 0.75), cell("base", None, 0.25, "control")]))
    assert "**Best performing on capitalization:** `b` (epoch 0) with accuracy 0.75, +0.5 against the control " \
           "`base` (0.25)" in text


def colour_pixels(png: Path, rgb: tuple[float, float, float], rows: slice) -> int:
    import numpy as np
    from matplotlib.image import imread

    image = imread(png)[rows, :, :3]
    return int((np.abs(image - np.array(rgb)).sum(axis=2) < 0.12).sum())


def test_tied_runs_are_both_visible_in_the_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.colors as mcolors

    png, note = plot_accuracy(summary_of(ALL_ZERO), tmp_path / "plot.png")
    assert png is not None, note
    # The points at 0.0 are in the lowest fifth of the image; the legend is not.
    height = 400
    lowest = slice(int(height * 0.75), int(height * 0.92))
    first, second = mcolors.to_rgb("C0"), mcolors.to_rgb("C1")
    assert colour_pixels(png, first, lowest) > 100, "the first run is hidden behind the second"
    assert colour_pixels(png, second, lowest) > 100
