"""Scheduler fault injection: wrappers placed before the real sbatch, squeue, sacct, scontrol, scancel.

Each wrapper logs its call, looks up the fault planned for this call of this command, and
either runs the real binary or misbehaves the way a sick controller does:

    pass           run the real command
    error          print `text` on stderr, exit `rc` (nothing reaches the controller)
    timeout        hang (the backend's per-command timeout kills it)
    slow           wait `seconds`, then run the real command
    garbage        print noise, exit 0
    partial        run the real command, print only the first part of its output, exit 0
    after-error    run the real command (it acts!), then print `text` and exit `rc`
    after-timeout  run the real command (it acts!), then hang
    after-garbage  run the real command (it acts!), print noise instead of its answer, exit 0
    hold           sbatch only: submit with --hold (a live job that stays PENDING until released)

Faults are planned per command as a list of modes by call number, plus a mode for every
other call (`Faults.plan`). The wrapper state lives in files, so the plan can change between
reconciler runs without touching their environment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.reliability.harness import real_command

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")

# Real SLURM error texts (slurm 22-23), as the commands print them.
SOCKET_TIMEOUT = "slurm_load_jobs error: Socket timed out on send/recv operation"
NO_CONTROLLER = "squeue: error: Unable to contact slurm controller (connect failure)"
SBATCH_TIMEOUT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
SBATCH_NO_CONTROLLER = ("sbatch: error: Batch job submission failed: "
                        "Unable to contact slurm controller (connect failure)")
DBD_DOWN = "sacct: error: Problem talking to the database: Connection refused"
SCANCEL_TIMEOUT = "scancel: error: Kill job error on job id 1: Socket timed out on send/recv operation"

WRAPPER = r'''
import fcntl, json, os, random, subprocess, sys, time
NAME, REAL, DIR = {name!r}, {real!r}, {dir!r}

def plan_for(n):
    try:
        with open(os.path.join(DIR, NAME + ".json")) as fh:
            plan = json.load(fh)
    except FileNotFoundError:
        return {{"mode": "pass"}}
    calls = plan.get("calls", [])
    return calls[n - 1] if n <= len(calls) else plan.get("rest", {{"mode": "pass"}})

def count():
    with open(os.path.join(DIR, NAME + ".count"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        n = int(fh.read() or 0) + 1
        fh.seek(0); fh.truncate(); fh.write(str(n))
    return n

def noise():
    rnd = random.Random(os.getpid())
    lines = ["JOBID PARTITION NAME USER ST TIME", "\x1f\x1f\x1f", "12345\x1fRUNN", "%%%% banner %%%%",
             "".join(chr(rnd.randrange(32, 0x2FF)) for _ in range(80)), "-1\x1fPENDING\x1fNone"]
    return "\n".join(rnd.choice(lines) for _ in range(6)) + "\n"

def real(args):
    return subprocess.run([REAL, *args], check=False, capture_output=True, text=True, errors="replace")

n = count()
fault = plan_for(n)
mode = fault.get("mode", "pass")
with open(os.path.join(DIR, "calls.log"), "a") as fh:
    fh.write(json.dumps([NAME, n, mode, sys.argv[1:]]) + "\n")
args = sys.argv[1:]
if mode == "pass":
    os.execv(REAL, [REAL, *args])
if mode == "hold":
    os.execv(REAL, [REAL, "--hold", *args])
if mode == "slow":
    time.sleep(fault.get("seconds", 1.0))
    os.execv(REAL, [REAL, *args])
if mode == "error":
    sys.stderr.write(fault.get("text", "error") + "\n")
    sys.exit(fault.get("rc", 1))
if mode == "timeout":
    time.sleep(3600)
if mode == "garbage":
    sys.stdout.write(noise())
    sys.exit(0)
if mode == "partial":
    out = real(args).stdout
    sys.stdout.write(out[: max(0, int(len(out) * fault.get("fraction", 0.6)))])
    sys.exit(0)
done = real(args)
if mode == "after-error":
    sys.stderr.write(fault.get("text", "error") + "\n")
    sys.exit(fault.get("rc", 1))
if mode == "after-timeout":
    time.sleep(3600)
if mode == "after-garbage":
    sys.stdout.write(noise())
    sys.exit(0)
sys.stderr.write("faultbin: unknown mode " + mode + "\n")
sys.exit(99)
'''


class Faults:
    """The wrapper directory (put it first on PATH) and the fault plan of each command."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "fault-bin"
        self.state = root / "fault-state"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        for name in COMMANDS:
            code = WRAPPER.format(name=name, real=real_command(name), dir=str(self.state))
            path = self.bin / name
            path.write_text(f"#!{sys.executable} -S\n{code}")
            path.chmod(0o755)

    def plan(self, command: str, *calls: dict[str, Any], rest: dict[str, Any] | None = None) -> None:
        """The next calls of `command` (counted from now) misbehave as listed; later ones as `rest`."""
        assert command in COMMANDS
        (self.state / f"{command}.count").write_text("0")
        (self.state / f"{command}.json").write_text(json.dumps({"calls": list(calls),
                                                                 "rest": rest or {"mode": "pass"}}))

    def always(self, command: str, **fault: Any) -> None:
        self.plan(command, rest=fault)

    def clear(self, *commands: str) -> None:
        for name in commands or COMMANDS:
            (self.state / f"{name}.json").unlink(missing_ok=True)

    def calls(self) -> list[tuple[str, int, str, list[str]]]:
        path = self.state / "calls.log"
        if not path.exists():
            return []
        return [tuple(json.loads(line)) for line in path.read_text().splitlines()]  # type: ignore[misc]

    def mark(self) -> int:
        """A position in the call log: `since(mark)` gives the calls made after it."""
        return len(self.calls())

    def since(self, mark: int, command: str | None = None,
              mode: str | None = None) -> list[tuple[str, int, str, list[str]]]:
        return [c for c in self.calls()[mark:]
                if (command is None or c[0] == command) and (mode is None or c[2] == mode)]

    def faults_injected(self, mark: int = 0) -> int:
        return sum(1 for c in self.calls()[mark:] if c[2] not in ("pass", "hold"))


def env_path(faults: Faults) -> str:
    return f"{faults.bin}{os.pathsep}{os.environ.get('PATH', '')}"
