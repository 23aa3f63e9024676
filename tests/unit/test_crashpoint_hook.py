"""The crash-point hook (reconciler/apply/crashpoints.py) kills exactly where it is told to, and nowhere else.

Run in a child process: a hook that fired by mistake must fail this test, not kill pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from reconciler.apply.crashpoints import ENV
from tests.conftest import REPO

# Reaches each point named on the command line in turn, saying so first; `partial` runs before a kill.
PROBE = """
import sys
from reconciler.apply.crashpoints import crash_point
for name in sys.argv[1:]:
    print(name, flush=True)
    crash_point(name, partial=lambda: print("partial", flush=True))
print("survived", flush=True)
"""
LOGS = ["log-write", "intent-journaled", "log-write", "log-write", "log-write"]


@pytest.mark.parametrize(("wanted", "killed_at"), [
    (None, None),  # unset: costs nothing, changes nothing
    ("state-write", None),  # a point never reached
    ("log-write@9", None),  # reached, but fewer times than named
    ("log-write", 0),  # the first time
    ("log-write@3", 3),  # the third log-write: the fourth call
    ("intent-journaled", 1),
])
def test_a_crash_point_kills_only_where_and_when_named(wanted: str | None, killed_at: int | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = str(REPO)
    if wanted is not None:
        env[ENV] = wanted
    proc = subprocess.run([sys.executable, "-c", PROBE, *LOGS], check=False, capture_output=True, text=True,
                          env=env, timeout=60)
    printed = proc.stdout.split()
    if killed_at is None:
        assert (proc.returncode, printed) == (0, [*LOGS, "survived"]), proc.stderr
    else:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
        assert printed == [*LOGS[: killed_at + 1], "partial"], printed
