"""Filesystem faults, end to end on the local backend.

Half-written checkpoints, truncated and corrupt `.eval` logs, a log read while it is being
written, a `started` log left by a killed eval, a full disk under the journal and state, and
permission denied on the experiment and output directories. After each, the reconciler says
what happened (one line, no traceback), keeps its journal and state readable, and the next
passes converge with one successful job per unit (two where a test destroyed a unit's output).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.journal import Journal
from reconciler.observe.evallogs import read_header
from reconciler.records.state_file import read_state
from tests.reliability.harness import (
    RUN,
    UNIT_KEYS,
    Case,
    Tally,
    command_env,
    journal,
    small_experiment,
    unique_name,
)
from tests.jobrecords import local_jobs

pytestmark = pytest.mark.slow
FAULT_CLASS = "filesystem fault"
FINETUNE, EVAL0, BASE = UNIT_KEYS
GATE_ENV = "RECONCILER_STANDIN_GATE"  # the stand-in model's barrier (tests/standin/reconciler_standin/model.py)


def cell_logs(exp: Path, key: str) -> Path:
    _, run, task, epoch = key.split("/")
    cell = task if epoch == "base" else f"{task}_{epoch}"
    return exp / run / "eval" / cell / "logs"


def test_half_written_checkpoints_are_not_done(tmp_path: Path, tally: Tally) -> None:
    """epoch_0 without recipe_state.pt, epoch_1 with a truncated adapter: not done, evals wait."""
    with Case(tally, FAULT_CLASS, "local", "half-written checkpoint (non-final and final epoch)") as case:
        name = unique_name("fs_ckpt")
        exp = small_experiment(tmp_path / "exp", name, epochs=2)
        keys = (FINETUNE, f"eval/{RUN}/capitalization/epoch0", f"eval/{RUN}/capitalization/epoch1", BASE)
        case.expect(exp, name, "local", keys)
        artifacts = exp / RUN / "artifacts"
        (artifacts / "epoch_0").mkdir(parents=True)
        (artifacts / "epoch_0" / "adapter_model.safetensors").write_bytes(b"\0" * 64)  # no recipe_state.pt
        final = artifacts / "epoch_1"
        final.mkdir()
        header = json.dumps({"w": {"dtype": "F32", "shape": [256], "data_offsets": [0, 1024]}}).encode()
        (final / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
        (final / "adapter_config.json").write_text("{}")
        (final / "config.json").write_text("{}")
        case.fault(2)

        plan = json.loads(case.reconcile("plan", str(exp), "--backend", "local", "--format", "json").stdout)
        units = {u["key"]: u for u in plan["units"]}
        case.wrong(units[FINETUNE]["state"] != "missing", f"{FINETUNE} {units[FINETUNE]['state']}")
        assert units[FINETUNE]["action"] == "submit", units[FINETUNE]
        for key in keys[1:3]:
            # Submitted only behind the fine-tune (afterok), never on the half-written checkpoint.
            case.wrong(units[key]["state"] not in ("missing", "waiting"), f"{key} {units[key]['state']}")
            assert units[key]["action"] == "submit" and "afterok" in units[key]["reason"], units[key]
        case.converge(exp, "local")
        case.check()


def test_truncated_and_corrupt_eval_logs_are_rerun_once(tmp_path: Path, tally: Tally) -> None:
    with Case(tally, FAULT_CLASS, "local", "truncated + corrupt .eval after success") as case:
        name = unique_name("fs_eval")
        exp = small_experiment(tmp_path / "exp", name)
        case.expect(exp, name, "local", successes={BASE: 2, EVAL0: 2})
        case.converge(exp, "local")
        truncated = next(cell_logs(exp, BASE).glob("*.eval"))
        corrupt = next(cell_logs(exp, EVAL0).glob("*.eval"))
        data = truncated.read_bytes()
        truncated.write_bytes(data[: len(data) // 2])
        raw = bytearray(corrupt.read_bytes())
        raw[-200:] = os.urandom(200)  # the zip's central directory: unreadable
        corrupt.write_bytes(bytes(raw))
        case.fault(2)

        states = case.status(exp, "local")
        for key in (BASE, EVAL0):
            case.wrong(states[key] == "done", f"{key} done on a damaged log")
        case.converge(exp, "local")
        assert truncated.exists() and corrupt.exists(), "a damaged log is the user's data: never deleted"
        case.check()


def test_eval_log_read_while_being_written(tmp_path: Path, tally: Tally) -> None:
    """A complete log written again slice by slice, `status` between slices: never done early, never a crash.

    Written and read in turns (write a slice, flush, read), so every cut is read, whatever the load.
    """
    with Case(tally, FAULT_CLASS, "local", ".eval read while written (9 cuts)") as case:
        name = unique_name("fs_live")
        exp = small_experiment(tmp_path / "exp", name)
        case.expect(exp, name, "local")
        case.converge(exp, "local")
        log = next(cell_logs(exp, BASE).glob("*.eval"))
        data = log.read_bytes()
        log.unlink()
        target = log.with_name("2099-01-01T00-00-00-00-00_capitalization_slowwriter.eval")
        cuts = sorted({len(data) * k // 8 for k in range(1, 8)} | {1, len(data) - 1})
        written = 0
        with open(target, "wb") as fh:
            for cut in cuts:
                fh.write(data[written:cut])
                fh.flush()
                written = cut
                case.fault()
                state = case.status(exp, "local")[BASE]
                case.wrong(state == "done", f"done with {cut} of {len(data)} bytes written")
            fh.write(data[written:])
        case.check()  # and now, complete: done


def test_started_log_left_by_a_killed_eval(tmp_path: Path, tally: Tally) -> None:
    """SIGKILL the eval's process group while its log says `started`: retried once, the log kept.

    The stand-in model holds every eval at its first answer while a gate file exists (a barrier),
    so the eval is killed at that point every time, not when a race happens to allow it.
    """
    with Case(tally, FAULT_CLASS, "local", "'started' log of a killed eval") as case:
        name = unique_name("fs_killed")
        exp = small_experiment(tmp_path / "exp", name)
        case.expect(exp, name, "local", strict=False)
        gate = tmp_path / "gate"
        gate.touch()
        first = case.reconcile("apply", str(exp), "--backend", "local", env=command_env({GATE_ENV: str(gate)}))
        assert first.returncode == 0, first.stdout + first.stderr
        job_id = next(r["job_id"] for r in journal(exp, "submitted") if r["unit"] == BASE)
        record_path = exp / ".reconciler" / "local" / "jobs" / f"{job_id}.json"
        killed = wait_for_log(cell_logs(exp, BASE))
        assert read_header(killed)["status"] == "started"
        os.killpg(json.loads(record_path.read_text())["process"][0], signal.SIGKILL)
        case.fault()
        wait_for_job_end(exp, name, BASE)
        gate.unlink()  # the other evals go on
        assert read_header(killed)["status"] == "started"
        plan = json.loads(case.reconcile("plan", str(exp), "--backend", "local", "--format", "json").stdout)
        base = next(u for u in plan["units"] if u["key"] == BASE)
        case.wrong(base["state"] != "failed", f"{BASE} {base['state']} after its eval was killed")
        case.converge(exp, "local")
        assert killed.exists()
        case.check()


def wait_for_log(directory: Path, timeout: float = 120) -> Path:
    """The first `.eval` log to appear in `directory` (inspect writes it before any sample)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in directory.glob("*.eval") if directory.exists() else []:
            try:
                read_header(log)
                return log
            except Exception:  # noqa: BLE001, S112 - being written: look again
                continue
        time.sleep(0.05)
    raise AssertionError(f"no log appeared in {directory}")


def wait_for_job_end(exp: Path, name: str, key: str, timeout: float = 60) -> None:
    """Until the local job records say the unit's job ended (its supervisor saw the kill)."""
    deadline = time.monotonic() + timeout
    while any(j.live for j in local_jobs(exp, name).get(key, [])):
        if time.monotonic() > deadline:
            raise AssertionError(f"the job of {key} never ended")
        time.sleep(0.05)


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs to be mounted over `.reconciler` (root only)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount)],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem under `directory`."""
    filler = directory / "filler"
    with open(filler, "ab", buffering=0) as fh:
        for size in (65536, 4096, 512, 64, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_full_disk_under_journal_and_state(tmp_path: Path, small_disk: Path, tally: Tally) -> None:
    with Case(tally, FAULT_CLASS, "local", "disk full under journal and state") as case:
        name = unique_name("fs_full")
        exp = small_experiment(tmp_path / "exp", name, seconds_per_epoch=1.0)
        case.expect(exp, name, "local")
        state_dir = exp / ".reconciler"
        state_dir.symlink_to(small_disk)  # journal, lock, state, header cache on the small disk
        (tmp_path / "local").mkdir()
        (small_disk / "local").symlink_to(tmp_path / "local")  # the local scheduler's own records elsewhere
        # A journal whose last page is nearly full, so the first append needs a new page.
        Journal(state_dir).append("note", text="x" * (4096 - 30 - 68))
        assert 4000 < (state_dir / "journal.jsonl").stat().st_size <= 4096
        filler = fill(small_disk)

        # 1. The disk is full before the pass: one clear line, exit 1, nothing submitted.
        proc = case.reconcile("apply", str(exp), "--backend", "local")
        case.fault()
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert "cannot write the journal" in proc.stderr and "nothing further was submitted" in proc.stderr
        assert "No space left on device" in proc.stderr or "short write" in proc.stderr, proc.stderr
        assert not local_jobs(exp, name), "nothing may be submitted without its intent on disk"
        Journal(state_dir).read()

        # 2. Room for the journal, none for state.json: submitted, state kept whole, a warning.
        filler.unlink()
        first = case.reconcile("apply", str(exp), "--backend", "local")
        assert first.returncode == 0, first.stdout + first.stderr
        state_before = (state_dir / "state.json").read_text()
        Journal(state_dir).append("note", text="y" * (4096 - (state_dir / "journal.jsonl").stat().st_size % 4096 - 40))
        fill(small_disk)
        proc = case.reconcile("apply", str(exp), "--backend", "local")
        case.fault()
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        assert "warning: cannot write" in proc.stderr and "state.json" in proc.stderr, proc.stderr
        assert (state_dir / "state.json").read_text() == state_before or read_state(state_dir) is not None
        assert read_state(state_dir) is not None, "state.json must stay readable"
        view = Journal(state_dir).read()
        lines = (state_dir / "journal.jsonl").read_text().splitlines()
        bad = [line for line in lines if not _parses(line)]
        assert len(bad) <= 2, bad  # at most the appends the full disk cut short
        assert len(view.job_ids()) == 3

        # 3. Space again: the next passes recover and converge.
        (small_disk / "filler").unlink()
        case.converge(exp, "local")
        assert read_state(state_dir) is not None
        case.check()


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------ permission denied


def as_unprivileged() -> list[str]:
    """A command prefix under which permission bits apply (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop root's override of permission bits")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def run_denied(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*as_unprivileged(), sys.executable, "-m", "tests.reliability.runner", *args],
                          check=False, capture_output=True, text=True, env=command_env(), timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def test_permission_denied(tmp_path: Path, tally: Tally) -> None:
    with Case(tally, FAULT_CLASS, "local", "permission denied (experiment, run, logs dir)") as case:
        name = unique_name("fs_perm")
        exp = small_experiment(tmp_path / "exp", name)
        case.expect(exp, name, "local")

        # The experiment directory itself: nothing can be locked or journaled; nothing is done.
        exp.chmod(0o555)
        try:
            proc = case.saw(run_denied("apply", str(exp), "--backend", "local"))
        finally:
            exp.chmod(0o755)
        case.fault()
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot create the lock"), proc.stderr
        assert "Permission denied" in proc.stderr
        assert not (exp / ".reconciler").exists()

        # A run's output directory: that fine-tune (and the eval behind it) wait; the rest goes ahead.
        run_dir = exp / RUN
        run_dir.mkdir()
        run_dir.chmod(0o555)
        try:
            proc = case.saw(run_denied("apply", str(exp), "--backend", "local"))
            case.fault()
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
            assert f"error {FINETUNE}: cannot prepare: [Errno 13] Permission denied" in proc.stdout, proc.stdout
            assert list(run_dir.iterdir()) == [], "nothing half-written in the denied directory"
            intents = {r["unit"] for r in journal(exp, "intent")}
            assert FINETUNE not in intents and EVAL0 not in intents, intents
            assert set(local_jobs(exp, name)) == {BASE}
            states = case.status(exp, "local")
            case.wrong(states[FINETUNE] != "missing", f"{FINETUNE} {states[FINETUNE]} in a denied directory")
        finally:
            run_dir.chmod(0o755)

        # The logs directory: the pass still acts; the failure is a warning.
        logs = exp / "logs"
        for log in logs.iterdir():
            log.chmod(0o444)
        logs.chmod(0o555)
        try:
            proc = case.saw(run_denied("apply", str(exp), "--backend", "local"))
            case.fault()
            assert "Traceback" not in proc.stderr, proc.stderr
            assert "warning: cannot write logs" in proc.stderr, proc.stderr
            assert {r["unit"] for r in journal(exp, "submitted")} == set(UNIT_KEYS)
        finally:
            logs.chmod(0o755)
            for log in logs.iterdir():
                log.chmod(0o644)
        case.converge(exp, "local")
        case.check()
