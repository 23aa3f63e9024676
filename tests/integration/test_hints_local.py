"""The commands the reconciler suggests work when pasted into a shell, from the experiment's parent and from
anywhere else: they name the experiment file and the backend its jobs run on."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.integration.demo_env import copy_demo, env, reconcile, start

pytestmark = pytest.mark.slow


def paste(command: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """What a person does with a suggested command: a shell splits it, the `reconcile` on PATH runs it."""
    return subprocess.run(shlex.split(command), cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def next_steps(summary_md: Path) -> list[str]:
    text = summary_md.read_text()
    section = text.split("## Next Steps", 1)[1].split("---", 1)[0]
    return [line for line in section.splitlines() if line.strip()]


def test_ctrl_c_hints_resume_and_cancel_from_anywhere(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "exp", experiment="hints_ctrl_c")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = start("apply", str(exp), "--backend", "local", "--watch", "--interval", "0.5")
    assert proc.stdout is not None
    for line in proc.stdout:
        if " submitted " in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    resume = re.search(r"to resume: (.+)", err)
    stop = re.search(r"to stop them: (.+)", err)
    assert resume and stop, err
    spec = str(exp / "experiment_summary.yaml")
    assert shlex.split(resume[1]) == ["reconcile", "apply", spec, "--backend", "local", "--watch"]
    assert shlex.split(stop[1]) == ["reconcile", "cancel", spec, "--backend", "local"]

    resumed = paste(resume[1], cwd=elsewhere)
    assert resumed.returncode == 0 and "converged" in resumed.stdout, resumed.stdout + resumed.stderr
    stopped = paste(stop[1], cwd=tmp_path)  # from the experiment's parent
    assert stopped.returncode == 0 and "0 job(s) cancelled" in stopped.stdout, stopped.stderr


def test_failure_hints_name_the_experiment_file_and_the_backend(tmp_path: Path) -> None:
    exp = copy_demo(tmp_path / "exp", experiment="hints_failure")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = exp / "with-failure.yaml"
    proc = reconcile("apply", str(spec), "--backend", "local", "--watch", "--interval", "0.5")
    assert proc.returncode == 3, proc.stdout + proc.stderr

    # The CLI's hint on a converged watch with failures.
    status_hint = re.search(r"why, and what to read: (.+)", proc.stderr)
    assert status_hint, proc.stderr
    status = paste(status_hint[1], cwd=elsewhere)
    assert status.returncode == 0 and "failed" in status.stdout and "blocked" in status.stdout, status.stderr
    assert "retry budget used (2 of 2)" in status.stdout, status.stdout  # with-failure.yaml's max_attempts: 2

    # summary.md (in the experiment's output folder, not beside the file): numbered from 1, every command pastes.
    summary_md = Path(re.search(r"results: (\S+)", proc.stdout)[1])  # type: ignore[index]
    steps = next_steps(summary_md)
    assert [int(s.split(".", 1)[0]) for s in steps] == list(range(1, len(steps) + 1)), steps
    commands = [c for s in steps for c in re.findall(r"`([^`]+)`", s) if c.startswith("reconcile ")]
    retry = next(c for c in commands if "--max-attempts" in c)
    words = shlex.split(retry)
    assert words[:6] == ["reconcile", "apply", str(spec), "--backend", "local", "--watch"], words
    assert words[6:] == ["--max-attempts", "3"], words
    # Parsed as the real command would parse it (running it is the engine's own watch test).
    with main.commands["apply"].make_context("apply", words[2:]) as ctx:
        assert Path(ctx.params["exp"]).is_absolute() and Path(ctx.params["exp"]).is_file()
    for command in commands:
        if " summarize " in command:
            done = paste(command, cwd=elsewhere)
            assert done.returncode == 0 and done.stdout.startswith("experiment,run,"), done.stderr
