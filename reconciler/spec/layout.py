"""Where each unit's files live, one small object per dialect. Nothing else knows path patterns."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from reconciler.spec.load import LoadedSpec


# CPython 3.11's `parent / name` parses the parent's text again (~1 us): expanding 100k units
# joins 500k paths that way. 3.12 rewrote pathlib (joins are lazy there) and dropped these names.
_JOIN_PARSED = sys.version_info[:2] == (3, 11) and hasattr(PurePath, "_from_parsed_parts")


def child(parent: Path, name: str) -> Path:
    """`parent / name` for one path segment, built from the parent's already parsed parts."""
    if _JOIN_PARSED and name and "/" not in name and name not in (".", ".."):
        return parent._from_parsed_parts(parent._drv, parent._root,  # type: ignore[attr-defined]
                                         [*parent._parts, name])  # type: ignore[attr-defined]
    return parent / name


@dataclass(frozen=True)
class Layout:
    """Path conventions of one dialect, rooted at one experiment."""

    dialect: str
    experiment_dir: Path
    checkpoint_base: Path | None = None  # v0.2 only: output.base_directory
    checkpoint_pattern: str = "ck-out-{run_name}/epoch_{N}"
    # Directories already built: expanding 100k units would otherwise join the same Paths millions of times.
    _memo: dict[tuple[object, ...], Path] = field(default_factory=dict, compare=False, repr=False)

    # The reconciler's own files.
    @property
    def state_dir(self) -> Path:
        return self.experiment_dir / ".reconciler"

    @property
    def logs_dir(self) -> Path:
        return self.experiment_dir / "logs"

    def run_dir(self, run: str) -> Path:
        found = self._memo.get(("run", run))
        if found is None:
            found = self._memo[("run", run)] = self.experiment_dir / run
        return found

    # Fine-tune.
    def finetune_script(self, run: str) -> Path:
        return self.run_dir(run) / "finetune.slurm"

    def finetune_config(self, run: str) -> Path:
        return self.run_dir(run) / "finetune.yaml"

    def setup_config(self, run: str) -> Path:
        return self.run_dir(run) / "setup_finetune.yaml"

    def output_dir(self, run: str) -> Path:
        """Where the trainer writes: epoch_N/ directories and its SLURM stdout."""
        if self.dialect == "v0.2":
            assert self.checkpoint_base is not None
            return self.epoch_dir(run, 0).parent
        return self.run_dir(run) / "artifacts"

    def epoch_dir(self, run: str, epoch: int) -> Path:
        found = self._memo.get(("epoch", run, epoch))
        if found is None:
            found = self._memo[("epoch", run, epoch)] = self._epoch_dir(run, epoch)
        return found

    def _epoch_dir(self, run: str, epoch: int) -> Path:
        if self.dialect == "v0.2":
            assert self.checkpoint_base is not None
            return self.checkpoint_base / self.checkpoint_pattern.format(run_name=run, N=epoch)
        return self.run_dir(run) / "artifacts" / f"epoch_{epoch}"

    def finetune_stdout(self, run: str) -> Path:
        return self.output_dir(run) / "slurm-%j.out"

    # Eval.
    def eval_dir(self, run: str) -> Path:
        found = self._memo.get(("eval", run))
        if found is None:
            found = self._memo[("eval", run)] = child(self.run_dir(run), "eval")
        return found

    @staticmethod
    def cell(task: str, epoch: int | None) -> str:
        return f"{task}_epoch{epoch}" if epoch is not None else task

    def cell_dir(self, run: str, task: str, epoch: int | None) -> Path:
        """v0.3.4: one directory per cell. v0.2: the run's eval/ directory, shared."""
        found = self._memo.get(("cell", run, task, epoch))
        if found is None:
            found = self.eval_dir(run)
            if self.dialect != "v0.2":
                found = child(found, self.cell(task, epoch))
            self._memo[("cell", run, task, epoch)] = found
        return found

    def eval_script(self, run: str, task: str, epoch: int | None) -> Path:
        if self.dialect == "v0.2":
            # cruijff_kit v0.2 names: `{task}_epoch{N}.slurm`, and `{task}.slurm` for a run without epochs
            name = f"{task}_epoch{epoch}.slurm" if epoch is not None else f"{task}.slurm"
            return child(self.eval_dir(run), name)
        return child(self.cell_dir(run, task, epoch), "cell.slurm")

    def eval_config(self, run: str, task: str, epoch: int | None) -> Path:
        if self.dialect == "v0.2":
            return self.eval_dir(run) / f"{self.cell(task, epoch)}_config.yaml"
        return self.cell_dir(run, task, epoch) / "eval.yaml"

    def eval_model_view(self, run: str, task: str, epoch: int | None) -> Path:
        """The directory of links through which an eval job loads its checkpoint (see scaffold/render.py)."""
        if self.dialect == "v0.2":
            return child(self.eval_dir(run), f"{self.cell(task, epoch)}_model")
        return child(self.cell_dir(run, task, epoch), "model")

    def eval_log_dir(self, run: str, task: str, epoch: int | None) -> Path:
        return child(self.cell_dir(run, task, epoch), "logs")

    # A job that evaluates several tasks on one checkpoint (scaffold/group.py): its files sit in
    # the run's eval directory, beside the cells, named by the checkpoint.
    @staticmethod
    def checkpoint_name(epoch: int | None) -> str:
        return f"checkpoint_epoch{epoch}" if epoch is not None else "checkpoint_base"

    def eval_group_script(self, run: str, epoch: int | None) -> Path:
        return child(self.eval_dir(run), f"{self.checkpoint_name(epoch)}.slurm")

    def eval_group_model_view(self, run: str, epoch: int | None) -> Path:
        return child(self.eval_dir(run), f"{self.checkpoint_name(epoch)}_model")

    def eval_group_stdout(self, run: str, epoch: int | None) -> Path:
        return child(self.eval_dir(run), f"slurm-{self.checkpoint_name(epoch)}-%j.out")

    def eval_stdout(self, run: str, task: str, epoch: int | None) -> Path:
        if self.dialect == "v0.2":
            return child(self.eval_dir(run), f"slurm-{self.cell(task, epoch)}-%j.out")
        return child(self.cell_dir(run, task, epoch), "slurm-%j.out")


def layout_for(loaded: LoadedSpec) -> Layout:
    spec = loaded.spec
    if loaded.dialect == "v0.2":
        assert spec.output is not None and spec.output.base_directory is not None
        return Layout(
            dialect="v0.2",
            experiment_dir=loaded.experiment_dir,
            checkpoint_base=loaded.resolve(spec.output.base_directory),
            checkpoint_pattern=spec.output.checkpoint_pattern or "ck-out-{run_name}/epoch_{N}",
        )
    return Layout(dialect="v0.3", experiment_dir=loaded.experiment_dir)
