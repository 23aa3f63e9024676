"""One backend contract, run against every backend: the `contract` fixture is parametrised by backend.

The local backend runs in a fresh state directory; the SLURM backend talks to the real single-node
cluster (the `slurm` param skips, or fails under RECONCILER_REQUIRE_SLURM=1, when no controller
answers). Each test gets a unique tag prefix, so queries by prefix see only its own jobs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.jobs import PENDING, RUNNING, Job
from reconciler.backends.base import Backend, SubmitRequest
from reconciler.backends.local.backend import LocalBackend
from reconciler.backends.local.store import jobs_dir, load_records
from reconciler.backends.slurm.backend import SlurmBackend
from tests.fake_slurm import FAST_RETRY, write_executable
from tests.slurm.conftest import require_slurm, wait_until

T = TypeVar("T")

# A job that outlives any test unless cancelled (every test cancels what it submitted).
FOREVER = "sleep 300"


@dataclass
class Contract:
    """A backend under test, with the few things a test needs that the Backend protocol does not say."""

    backend: Backend
    tag_prefix: str
    workdir: Path
    poll_seconds: float
    # Hold a pending job as a user would (`scontrol hold`); None where the backend has no hold.
    hold: Callable[[str], None] | None
    # A context in which the scheduler cannot answer (an outage, a record being unreadable).
    unavailable: Callable[[], contextlib.AbstractContextManager[None]]
    submitted: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.backend.capabilities.name

    def script(self, name: str, body: str, directives: tuple[str, ...] = ()) -> Path:
        path = self.workdir / "scripts" / f"{name}.sh"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "set -e", body, ""]
        return write_executable(path, "\n".join(lines))

    def submit(
        self, name: str, body: str, *, depends_on: tuple[str, ...] = (), directives: tuple[str, ...] = ()
    ) -> str:
        """Submit a script running `body`, tagged `{prefix}{name}`, stdout to `logs/{id}.out`."""
        request = SubmitRequest(
            script=self.script(name, body, directives),
            name=name.rsplit("/", 1)[-1],
            tag=self.tag_prefix + name,
            workdir=self.workdir,
            depends_on=depends_on,
            stdout=self.workdir / "logs" / "%j.out",
        )
        job_id = self.backend.submit(request)
        self.submitted.append(job_id)
        return job_id

    def job(self, job_id: str) -> Job | None:
        return self.backend.query(self.tag_prefix, [job_id]).jobs.get(job_id)

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
        """Call `probe` until it returns something (a bound on a hang, not a speed claim)."""
        return wait_until(f"{what} ({self.name} backend)", probe, timeout, self.poll_seconds)

    def wait_state(self, job_id: str, *states: str, timeout: float = 120.0) -> Job:
        def probe() -> Job | None:
            job = self.job(job_id)
            return job if job is not None and job.state in states else None

        return self.wait(f"job {job_id} to be {'/'.join(states)}", probe, timeout)

    def wait_started(self, job_id: str) -> Job:
        return self.wait_state(job_id, RUNNING)

    def stdout(self, job_id: str) -> str:
        return (self.workdir / "logs" / f"{job_id}.out").read_text()


def _local(tmp_path: Path, prefix: str) -> Iterator[Contract]:
    state = tmp_path / "state"
    backend = LocalBackend(state, max_concurrent=4)

    @contextlib.contextmanager
    def unavailable() -> Iterator[None]:
        # A record that cannot be parsed could be a live job: the backend must not guess.
        jobs_dir(state).mkdir(parents=True, exist_ok=True)
        garbage = jobs_dir(state) / "999999.json"
        garbage.write_text('{"job_id": "999999", "st')
        try:
            yield
        finally:
            garbage.unlink()

    contract = Contract(backend, prefix, tmp_path / "work", 0.05, None, unavailable)
    yield contract
    live = [job_id for job_id, rec in load_records(state).items() if rec.state in (PENDING, RUNNING)]
    backend.cancel(live)
    # Every supervisor frees its slot by itself, so no process outlives the test.
    contract.wait("every supervisor to end", lambda: None if any(r.active for r in load_records(state).values()) else True)


def _slurm(tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Contract]:
    require_slurm()
    backend = SlurmBackend(FAST_RETRY)
    bin_dir = tmp_path / "outage-bin"

    @contextlib.contextmanager
    def unavailable() -> Iterator[None]:
        # squeue failing as it does when the controller is overloaded: "cannot tell", never "no jobs".
        bin_dir.mkdir(exist_ok=True)
        write_executable(
            bin_dir / "squeue",
            "#!/bin/bash\necho 'slurm_load_jobs error: Socket timed out on send/recv operation' >&2\nexit 1\n",
        )
        with monkeypatch.context() as patch:
            patch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
            yield

    def hold(job_id: str) -> None:
        subprocess.run(["scontrol", "hold", job_id], check=True, capture_output=True)

    contract = Contract(backend, prefix, tmp_path / "work", 0.5, hold, unavailable)
    contract.workdir.mkdir(parents=True)
    yield contract
    if contract.submitted:
        with contextlib.suppress(Exception):  # the test's own result matters more than a failed clean-up
            backend.cancel(contract.submitted)


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def contract(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Contract]:
    prefix = f"conformance-{uuid.uuid4().hex[:10]}/"
    if request.param == "local":
        yield from _local(tmp_path, prefix)
    else:
        yield from _slurm(tmp_path, prefix, monkeypatch)
