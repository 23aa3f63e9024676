"""An experiment remembers its backend: `auto` asks the recorded one; another is refused while it runs jobs."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from reconciler.app import backend as choice
from reconciler.backends.base import Capabilities
from reconciler.jobs import Job, Snapshot
from reconciler.engine.backend_record import RECORD_NAME, record_backend, recorded_backend
from reconciler.app.backend import choose_backend
from reconciler.errors import BackendUnavailable, UsageError
from reconciler.journal import Journal


class FakeBackend:
    def __init__(self, name: str, jobs: list[Job] | None = None, down: bool = False) -> None:
        self.capabilities = Capabilities(name=name, min_poll_seconds=0.0, default_poll_seconds=1.0)
        self.jobs = jobs or []
        self.down = down
        self.asked: list[tuple[str, list[str]]] = []

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        self.asked.append((tag_prefix, sorted(job_ids)))
        if self.down:
            raise BackendUnavailable("squeue: timed out")
        return Snapshot(jobs={j.job_id: j for j in self.jobs if j.job_id in job_ids})


@pytest.fixture
def backends(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeBackend]:
    made = {"local": FakeBackend("local"), "slurm": FakeBackend("slurm")}

    def make(name: str, state_dir: Path) -> tuple[FakeBackend, str]:
        if name == "auto":
            return made["slurm"], "backend: slurm (auto: sbatch found and the controller answers)"
        return made[name], f"backend: {name}"

    monkeypatch.setattr(choice, "make_backend", make)
    return made


def choose(requested: str, state_dir: Path) -> tuple[object, str]:
    return choose_backend(requested, state_dir, lambda: "exp1", "EXP")


def test_the_record_is_written_once_and_read_back(tmp_path: Path) -> None:
    assert recorded_backend(tmp_path) is None
    assert record_backend(tmp_path, "local") is None
    written = (tmp_path / RECORD_NAME).stat().st_mtime_ns
    assert recorded_backend(tmp_path) == "local"
    assert record_backend(tmp_path, "local") is None and (tmp_path / RECORD_NAME).stat().st_mtime_ns == written
    for junk in ("", "{", '{"backend": "pbs"}', "[1]"):
        (tmp_path / RECORD_NAME).write_text(junk)
        assert recorded_backend(tmp_path) is None  # a damaged record is no record: auto decides as before


def test_a_record_that_cannot_be_written_is_a_warning_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    problem = record_backend(tmp_path / "file" / "state", "local")
    assert problem is not None and "--backend local" in problem


def test_auto_asks_the_recorded_backend_even_when_slurm_answers(tmp_path: Path, backends: dict[str, FakeBackend]) -> None:
    assert choose("auto", tmp_path)[0] is backends["slurm"]  # never applied: as before
    record_backend(tmp_path, "local")
    chosen, note = choose("auto", tmp_path)
    assert chosen is backends["local"] and note == "backend: local (recorded: this experiment was applied with it)"


def test_another_backend_is_refused_while_the_recorded_one_runs_jobs(tmp_path: Path,
                                                                     backends: dict[str, FakeBackend]) -> None:
    record_backend(tmp_path, "local")
    journal = Journal(tmp_path)
    journal.append("submitted", unit="finetune/a", job_id="4", fingerprint="f")
    journal.append("submitted", unit="finetune/b", job_id="5", fingerprint="f")
    backends["local"].jobs = [Job("4", "RUNNING"), Job("5", "COMPLETED", exit_code=0)]
    with pytest.raises(UsageError) as refused:
        choose("slurm", tmp_path)
    message = str(refused.value)
    assert "\n" not in message and refused.value.exit_code == 2
    assert "(1 job(s) in flight: 4)" in message
    assert "`reconcile cancel EXP --backend local`" in message and "then use --backend slurm" in message
    assert backends["local"].asked == [("reconciler:exp1:", ["4", "5"])]

    # The recorded backend itself, and `auto`, are never refused.
    assert choose("local", tmp_path)[0] is backends["local"]
    assert choose("auto", tmp_path)[0] is backends["local"]

    # Once its jobs have ended, or were cancelled, the experiment may move.
    backends["local"].jobs = [Job("4", "CANCELLED"), Job("5", "COMPLETED", exit_code=0)]
    chosen, note = choose("slurm", tmp_path)
    assert chosen is backends["slurm"] and "applied with local before" in note
    journal.append("cancelled", unit="finetune/a", job_id="4")
    journal.append("job_state", unit="finetune/b", job_id="5", state="COMPLETED", exit_code=0)
    backends["local"].asked.clear()
    assert choose("slurm", tmp_path)[0] is backends["slurm"]
    assert backends["local"].asked == []  # nothing the journal knows may still run: nothing to ask


def test_refused_when_the_recorded_backend_cannot_say(tmp_path: Path, backends: dict[str, FakeBackend]) -> None:
    record_backend(tmp_path, "slurm")
    Journal(tmp_path).append("submitted", unit="finetune/a", job_id="77", fingerprint="f")
    backends["slurm"].down = True
    with pytest.raises(UsageError) as refused:
        choose("local", tmp_path)
    assert "is unknown (squeue: timed out)" in str(refused.value) and "Ask again when slurm answers" in str(refused.value)
