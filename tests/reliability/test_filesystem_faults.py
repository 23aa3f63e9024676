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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.journal import Journal
from reconciler.observe.evallogs import read_header
from reconciler.report.state_file import read_state
from tests.reliability.harness import (
    RUN,
    UNIT_KEYS,
    Record,
    Tally,
    command_env,
    converge,
    journal,
    local_jobs,
    reconcile,
    small_experiment,
    status_states,
    unique_name,
    verdict,
)

pytestmark = pytest.mark.slow
FINETUNE, EVAL0, BASE = UNIT_KEYS


def cell_logs(exp: Path, key: str) -> Path:
    _, run, task, epoch = key.split("/")
    cell = task if epoch == "base" else f"{task}_{epoch}"
    return exp / run / "eval" / cell / "logs"


def record(tally: Tally, case: str, faults: int, runs: int, exp: Path, name: str, started: float,
           successes: dict[str, int] | None = None, wrong: int = 0, keys: tuple[str, ...] = UNIT_KEYS,
           strict: bool = True) -> None:
    states = status_states(exp, "local")
    wrong += sum(1 for k in keys if states.get(k) != "done")
    result = verdict(local_jobs(exp, name), keys, successes, strict=strict)
    tally.add(Record("filesystem fault", "local", case, faults, runs + 1, result.units, result.duplicates,
                     result.lost, wrong, time.monotonic() - started))
    assert result.duplicates == 0 and result.lost == 0, result.detail
    assert wrong == 0, states


def test_half_written_checkpoints_are_not_done(tmp_path: Path, tally: Tally) -> None:
    """epoch_0 without recipe_state.pt, epoch_1 with a truncated adapter: not done, evals wait."""
    started = time.monotonic()
    name = unique_name("fs_ckpt")
    exp = small_experiment(tmp_path / "exp", name, epochs=2)
    artifacts = exp / RUN / "artifacts"
    (artifacts / "epoch_0").mkdir(parents=True)
    (artifacts / "epoch_0" / "adapter_model.safetensors").write_bytes(b"\0" * 64)  # no recipe_state.pt
    final = artifacts / "epoch_1"
    final.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [256], "data_offsets": [0, 1024]}}).encode()
    (final / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
    (final / "adapter_config.json").write_text("{}")
    (final / "config.json").write_text("{}")

    plan = json.loads(reconcile("plan", str(exp), "--backend", "local", "--format", "json").stdout)
    units = {u["key"]: u for u in plan["units"]}
    wrong = 0
    assert units[FINETUNE]["state"] == "missing" and units[FINETUNE]["action"] == "submit"
    for key in (f"eval/{RUN}/capitalization/epoch0", f"eval/{RUN}/capitalization/epoch1"):
        # Submitted only behind the fine-tune (afterok), never on the half-written checkpoint.
        wrong += units[key]["state"] not in ("missing", "waiting")
        assert units[key]["action"] == "submit" and "afterok" in units[key]["reason"], units[key]
    converge(exp, "local")
    keys = (FINETUNE, f"eval/{RUN}/capitalization/epoch0", f"eval/{RUN}/capitalization/epoch1", BASE)
    record(tally, "half-written checkpoint (non-final and final epoch)", 2, 2, exp, name, started, wrong=wrong,
           keys=keys)


def test_truncated_and_corrupt_eval_logs_are_rerun_once(tmp_path: Path, tally: Tally) -> None:
    started = time.monotonic()
    name = unique_name("fs_eval")
    exp = small_experiment(tmp_path / "exp", name)
    converge(exp, "local")
    truncated = next(cell_logs(exp, BASE).glob("*.eval"))
    corrupt = next(cell_logs(exp, EVAL0).glob("*.eval"))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    raw = bytearray(corrupt.read_bytes())
    raw[-200:] = os.urandom(200)  # the zip's central directory: unreadable
    corrupt.write_bytes(bytes(raw))

    states = status_states(exp, "local")
    wrong = sum(1 for k in (BASE, EVAL0) if states[k] == "done")
    converge(exp, "local")
    assert truncated.exists() and corrupt.exists(), "a damaged log is the user's data: never deleted"
    record(tally, "truncated + corrupt .eval after success", 2, 3, exp, name, started,
           successes={BASE: 2, EVAL0: 2}, wrong=wrong)


def test_eval_log_read_while_being_written(tmp_path: Path, tally: Tally) -> None:
    """A writer copies a complete log in 40 slices; status polls all along: never done early, never a crash."""
    started = time.monotonic()
    name = unique_name("fs_live")
    exp = small_experiment(tmp_path / "exp", name)
    converge(exp, "local")
    log = next(cell_logs(exp, BASE).glob("*.eval"))
    data = log.read_bytes()
    log.unlink()
    target = log.with_name("2099-01-01T00-00-00-00-00_capitalization_slowwriter.eval")
    done = threading.Event()
    last_byte_at = [float("inf")]

    def writer() -> None:
        step = max(1, len(data) // 40)
        with open(target, "wb") as fh:
            for i in range(0, len(data), step):
                fh.write(data[i: i + step])
                fh.flush()
                if i + step >= len(data):
                    last_byte_at[0] = time.monotonic()
                time.sleep(0.06)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    polls = wrong = 0
    while not done.is_set():
        proc = reconcile("status", str(exp), "--json", "--backend", "local")
        ended = time.monotonic()
        polls += 1
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        state = {u["key"]: u["state"] for u in json.loads(proc.stdout)["units"]}[BASE]
        if state == "done" and ended < last_byte_at[0]:
            wrong += 1  # done, and the read ended before the last byte was written: a wrong state
    thread.join()
    assert polls >= 2, "the writer finished before the first poll: nothing was tested"
    assert status_states(exp, "local")[BASE] == "done"
    record(tally, f".eval read while written ({polls} reads)", 1, polls + 1, exp, name, started, wrong=wrong)


def test_started_log_left_by_a_killed_eval(tmp_path: Path, tally: Tally) -> None:
    """SIGKILL the eval's process group while its log says `started`: retried once, the log kept."""
    started = time.monotonic()
    name = unique_name("fs_killed")
    exp = small_experiment(tmp_path / "exp", name)
    first = reconcile("apply", str(exp), "--backend", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    job_id = next(r["job_id"] for r in journal(exp, "submitted") if r["unit"] == BASE)
    record_path = exp / ".reconciler" / "local" / "jobs" / f"{job_id}.json"
    deadline = time.monotonic() + 60
    killed = None
    while time.monotonic() < deadline and killed is None:
        for log in cell_logs(exp, BASE).glob("*.eval") if cell_logs(exp, BASE).exists() else []:
            try:
                status = read_header(log)["status"]
            except Exception:  # noqa: BLE001, S112 - being written: look again
                continue
            assert status == "started", f"the eval ended before it could be killed ({status})"
            pid = json.loads(record_path.read_text())["process"][0]
            os.killpg(pid, signal.SIGKILL)
            killed = log
        time.sleep(0.02)
    assert killed is not None, "no log appeared"
    time.sleep(0.5)
    assert read_header(killed)["status"] == "started"
    plan = json.loads(reconcile("plan", str(exp), "--backend", "local", "--format", "json").stdout)
    base = next(u for u in plan["units"] if u["key"] == BASE)
    wrong = base["state"] not in ("failed", "running")  # running: the supervisor has not recorded the end yet
    converge(exp, "local")
    assert killed.exists()
    record(tally, "'started' log of a killed eval", 1, 3, exp, name, started, wrong=wrong, strict=False)


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
    started = time.monotonic()
    name = unique_name("fs_full")
    exp = small_experiment(tmp_path / "exp", name, seconds_per_epoch=1.0)
    state_dir = exp / ".reconciler"
    state_dir.symlink_to(small_disk)  # journal, lock, state, header cache on the small disk
    (tmp_path / "local").mkdir()
    (small_disk / "local").symlink_to(tmp_path / "local")  # the local scheduler's own records elsewhere
    # A journal whose last page is nearly full, so the first append needs a new page.
    Journal(state_dir).append("note", text="x" * (4096 - 30 - 68))
    assert 4000 < (state_dir / "journal.jsonl").stat().st_size <= 4096
    filler = fill(small_disk)
    runs, faults, wrong = 0, 0, 0

    # 1. The disk is full before the pass: one clear line, exit 1, nothing submitted.
    proc = reconcile("apply", str(exp), "--backend", "local")
    runs += 1
    faults += 1
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "cannot write the journal" in proc.stderr and "nothing further was submitted" in proc.stderr
    assert "No space left on device" in proc.stderr or "short write" in proc.stderr, proc.stderr
    assert not local_jobs(exp, name), "nothing may be submitted without its intent on disk"
    Journal(state_dir).read()

    # 2. Room for the journal, none for state.json: submitted, state kept whole, a warning.
    filler.unlink()
    first = reconcile("apply", str(exp), "--backend", "local")
    runs += 1
    assert first.returncode == 0, first.stdout + first.stderr
    state_before = (state_dir / "state.json").read_text()
    Journal(state_dir).append("note", text="y" * (4096 - (state_dir / "journal.jsonl").stat().st_size % 4096 - 40))
    fill(small_disk)
    proc = reconcile("apply", str(exp), "--backend", "local")
    runs += 1
    faults += 1
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
    converge(exp, "local")
    runs += 1
    assert read_state(state_dir) is not None
    record(tally, "disk full under journal and state", faults, runs, exp, name, started, wrong=wrong)


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
    import sys

    return subprocess.run([*as_unprivileged(), sys.executable, "-m", "tests.reliability.runner", *args],
                          check=False, capture_output=True, text=True, env=command_env(), timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def test_permission_denied(tmp_path: Path, tally: Tally) -> None:
    started = time.monotonic()
    name = unique_name("fs_perm")
    exp = small_experiment(tmp_path / "exp", name)
    faults = runs = wrong = 0

    # The experiment directory itself: nothing can be locked or journaled; nothing is done.
    exp.chmod(0o555)
    try:
        proc = run_denied("apply", str(exp), "--backend", "local")
    finally:
        exp.chmod(0o755)
    runs += 1
    faults += 1
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot create the lock"), proc.stderr
    assert "Permission denied" in proc.stderr
    assert not (exp / ".reconciler").exists()

    # A run's output directory: that fine-tune (and the eval behind it) wait; the rest goes ahead.
    run_dir = exp / RUN
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        proc = run_denied("apply", str(exp), "--backend", "local")
        runs += 1
        faults += 1
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert f"error {FINETUNE}: cannot prepare: [Errno 13] Permission denied" in proc.stdout, proc.stdout
        assert list(run_dir.iterdir()) == [], "nothing half-written in the denied directory"
        intents = {r["unit"] for r in journal(exp, "intent")}
        assert FINETUNE not in intents and EVAL0 not in intents, intents
        assert set(local_jobs(exp, name)) == {BASE}
        states = status_states(exp, "local")
        wrong += states[FINETUNE] != "missing"
    finally:
        run_dir.chmod(0o755)

    # The logs directory: the pass still acts; the failure is a warning.
    logs = exp / "logs"
    for log in logs.iterdir():
        log.chmod(0o444)
    logs.chmod(0o555)
    try:
        proc = run_denied("apply", str(exp), "--backend", "local")
        runs += 1
        faults += 1
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "warning: cannot write logs" in proc.stderr, proc.stderr
        assert {r["unit"] for r in journal(exp, "submitted")} == set(UNIT_KEYS)
    finally:
        logs.chmod(0o755)
        for log in logs.iterdir():
            log.chmod(0o644)
    converge(exp, "local")
    runs += 1
    record(tally, "permission denied (experiment, run, logs dir)", faults, runs, exp, name, started, wrong=wrong)
