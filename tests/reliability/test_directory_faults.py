"""The experiment directory read-only, deleted, or on a full disk: every command, no traceback.

issue 16: on a read-only experiment directory `summarize` and `scaffold` died with a raw
PermissionError. Here every command (validate, plan, apply, watch, status, summarize, scaffold,
cancel, diff) is run against an experiment that was never applied and one that has converged:

- read-only: every file and directory made non-writable (`chmod -R a-w`), commands run without
  root's override of permission bits (setpriv, as test_filesystem_faults does);
- deleted: the directory removed, named by its path, or the current directory when it is run
  from inside (`EXP` = `.`);
- full: the experiment on a small tmpfs (root only) filled to the last byte; then space is freed
  and the experiment must still converge.

What must hold: no traceback; an exit code the README documents (1 for the environment, 2 for
input that names nothing); a failing command says why in exactly one `error:` line (warnings may
come before it); commands that only read (validate, plan, status, `summarize --format json`,
diff) still succeed on a read-only or full directory; nothing hangs (a `watch` that cannot write
ends, it does not wait forever); nothing is submitted that was not journaled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import (
    REPO,
    Case,
    Tally,
    command_env,
    converge,
    journal,
    small_experiment,
    unique_name,
)
from tests.reliability.test_filesystem_faults import as_unprivileged, fill

pytestmark = pytest.mark.slow

FAULT_CLASS = "filesystem fault"
LOCAL = ("--backend", "local")


def commands(exp: str) -> dict[str, list[str]]:
    """Every command of the CLI, on the local backend (nothing here may ask the shared SLURM cluster)."""
    spec = exp if exp == "." else f"{exp}/experiment_summary.yaml"
    return {
        "validate": ["validate", exp],
        "plan": ["plan", exp, *LOCAL],
        "plan --offline": ["plan", exp, "--offline", "--format", "markdown"],
        "apply": ["apply", exp, *LOCAL],
        "watch": ["watch", exp, *LOCAL, "--interval", "0.2"],
        "status": ["status", exp, *LOCAL],
        "summarize": ["summarize", exp, *LOCAL],
        "summarize --format json": ["summarize", exp, *LOCAL, "--format", "json"],
        "scaffold": ["scaffold", exp],
        "cancel": ["cancel", exp, *LOCAL],
        "diff": ["diff", spec, spec],
    }


READERS = ("validate", "plan", "plan --offline", "status", "summarize --format json", "diff")


def run(argv: list[str], prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "tests.reliability.runner", *argv], check=False,
                          capture_output=True, text=True, env=command_env(), timeout=120, cwd=REPO)


def from_deleted_cwd(directory: Path) -> list[str]:
    """A prefix that starts the command inside `directory`, deleted just before (as `rm -rf` from another shell)."""
    directory.mkdir(parents=True)
    return ["bash", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(directory)]


def check_one_line(name: str, proc: subprocess.CompletedProcess[str], allowed: set[int]) -> str:
    """No traceback, a documented exit code, and a failure said in one `error:` line; returns that line."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, f"{name}: {out[-3000:]}"
    assert proc.returncode in allowed, f"{name}: exit {proc.returncode}, expected {sorted(allowed)}\n{out[-2000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    if proc.returncode in (1, 2):
        assert len(errors) == 1, f"{name}: {len(errors)} error lines\n{proc.stderr}"
        assert proc.stderr.rstrip().splitlines()[-1] == errors[0], f"{name}: the error is not the last word"
        return errors[0]
    assert not errors, f"{name}: {proc.stderr}"
    return ""


@pytest.fixture(scope="module")
def converged_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp = small_experiment(tmp_path_factory.mktemp("dirfaults") / "exp", unique_name("dir_done"))
    converge(exp, "local")
    return exp


def experiment(kind: str, dst: Path, template: Path) -> Path:
    if kind == "converged":
        shutil.copytree(template, dst, symlinks=True)
        return dst
    return small_experiment(dst, unique_name("dir_fresh"))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("kind", ["fresh", "converged"])
def test_read_only_experiment_directory(tmp_path: Path, converged_template: Path, tally: Tally, kind: str) -> None:
    with Case(tally, FAULT_CLASS, "local", f"read-only experiment directory ({kind}), every command") as case:
        exp = experiment(kind, tmp_path / "exp", converged_template)
        prefix = as_unprivileged()
        before = snapshot(exp)
        subprocess.run(["chmod", "-R", "a-w", str(exp)], check=True)
        try:
            for name, argv in commands(str(exp)).items():
                case.fault()
                proc = case.saw(run(argv, prefix=prefix))
                line = check_one_line(name, proc, {0, 1} if name not in READERS else {0})
                if line:
                    assert "Permission denied" in line or "Read-only" in line, f"{name}: {line}"
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(exp)], check=True)
        assert snapshot(exp) == before, "a read-only directory was written to"
        case.check()


@pytest.mark.parametrize("kind", ["fresh", "converged"])
def test_deleted_experiment_directory(tmp_path: Path, converged_template: Path, tally: Tally, kind: str) -> None:
    with Case(tally, FAULT_CLASS, "local", f"deleted experiment directory ({kind}), every command") as case:
        exp = experiment(kind, tmp_path / "exp", converged_template)
        shutil.rmtree(exp)
        for target in (str(exp), "."):  # named by its path; run from inside it
            for n, (name, argv) in enumerate(commands(target).items()):
                case.fault()
                prefix = from_deleted_cwd(tmp_path / f"cwd{n}") if target == "." else None
                proc = case.saw(run(argv, prefix=prefix))
                line = check_one_line(f"{name} ({target})", proc, {1} if name == "diff" else {2})
                expected = "file not found" if target != "." else "the current directory no longer exists"
                assert expected in line, f"{name}: {line}"
        assert not exp.exists(), "nothing may recreate a deleted experiment"
        case.check()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs to hold the whole experiment (root only)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount)],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.mark.parametrize("kind", ["fresh", "converged"])
def test_experiment_directory_on_a_full_disk(tmp_path: Path, small_disk: Path, converged_template: Path,
                                             tally: Tally, kind: str) -> None:
    with Case(tally, FAULT_CLASS, "local", f"experiment on a full disk ({kind}), every command") as case:
        exp = experiment(kind, small_disk / "exp", converged_template)
        name = experiment_name(exp)
        case.expect(exp, name, "local")
        filler = fill(small_disk)
        for command, argv in commands(str(exp)).items():
            case.fault()
            proc = case.saw(run(argv))
            line = check_one_line(command, proc, {0} if command in READERS else {0, 1})
            if line:
                assert "No space left on device" in line, f"{command}: {line}"
        if kind == "fresh":
            assert not journal(exp, "submitted"), "nothing may be submitted while nothing can be written"
        filler.unlink()
        case.converge(exp, "local")  # space again: the experiment converges, one job per unit
        case.check()


def experiment_name(exp: Path) -> str:
    import yaml

    return str(yaml.safe_load((exp / "experiment_summary.yaml").read_text())["experiment"]["name"])
