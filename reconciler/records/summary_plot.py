"""Accuracy by epoch for each run against the control, written as a PNG beside summary.md (matplotlib, a dependency
of the reconciler)."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.records.summary_model import Summary
from reconciler.report.summary_render import num


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DODGE_WIDTH = 0.3  # of one epoch: the runs of a panel are spread over this, centred on each epoch


def dodge(i: int, n: int) -> float:
    """The sideways offset of the i-th of n runs, so that tied points stay visible side by side."""
    return 0.0 if n < 2 else DODGE_WIDTH * (i / (n - 1) - 0.5)


def plot_accuracy(summary: Summary, path: Path) -> tuple[Path | None, str]:
    """(the image, "") or (None, why there is none). One panel per task; controls are dashed lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a cluster node
        import matplotlib.pyplot as plt
    except ImportError:
        from reconciler.report.hints import reinstall

        return None, f"matplotlib is not installed in this environment; the reconciler depends on it: `{reinstall()}`"
    tasks = list(dict.fromkeys(e.task for e in summary.evaluations if e.value is not None))
    if not tasks:
        return None, "no evaluation has a score yet"
    # One colour and one marker per run in every panel.
    runs = list(dict.fromkeys(e.run for e in summary.evaluations))
    colours = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    markers = {run: MARKERS[i % len(MARKERS)] for i, run in enumerate(runs)}
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    try:
        for ax, task in zip(axes[0], tasks, strict=True):
            cells = [e for e in summary.evaluations if e.task == task and e.value is not None]
            epochs = sorted({e.epoch for e in cells if e.epoch is not None})
            trained = list(dict.fromkeys(e.run for e in cells if e.epoch is not None))
            for i, run in enumerate(trained):
                points = sorted((e.epoch, e.value) for e in cells if e.run == run and e.epoch is not None)
                # Runs tied at the same value would hide each other: each is drawn a little to the side.
                shift = dodge(i, len(trained))
                ax.plot([p[0] + shift for p in points], [p[1] for p in points], marker=markers[run], label=run,
                        color=colours[run], markersize=7)
            for e in cells:
                if e.epoch is None:
                    style = "--" if e.run in summary.controls else ":"
                    kind = "control" if e.run in summary.controls else "eval-only"
                    ax.axhline(e.value, linestyle=style, color="grey", label=f"{e.run} ({kind})")
            metric = next((e.metric for e in cells if e.metric), "accuracy")
            tie = next((b for b in summary.best if b.task == task and b.ties), None)
            ax.set_title(task if tie is None else f"{task}: {len(tie.ties) + 1} checkpoints tie at "
                                                  f"{num(tie.value)}")
            ax.set_xlabel("checkpoint epoch (epoch_N); runs drawn side by side" if len(trained) > 1
                          else "checkpoint epoch (epoch_N)")
            ax.set_ylabel(metric or "accuracy")
            if epochs:
                ax.set_xticks(epochs)
            if all(0.0 <= e.value <= 1.0 for e in cells):  # type: ignore[operator]
                ax.set_ylim(-0.06, 1.06)  # a point at 0 or 1 is drawn whole
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.suptitle(f"{summary.experiment}: {metric} by epoch")
        fig.tight_layout()
        # Beside the target, then renamed: a reader never sees half an image.
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fig.savefig(tmp, format="png", dpi=100)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return None, f"cannot write {path}: {exc.strerror or exc}"
    finally:
        plt.close(fig)
    return path, ""
