"""Plant realistic bugs one at a time in a temporary copy of the repository and run the tests that guard against each.

Usage: scripts/mutants [--list] [--slurm|--no-slurm] [NAME ...]

Each mutant is a small patch in scripts/mutants.d/ (unified diff), with a header naming what it
breaks (an invariant of the design, or a bug no test caught before), the tests that must catch it
(pytest arguments) and whether those need the SLURM cluster. For each one: the patch is applied to
a copy of the working tree (tracked and untracked files, `.venv` left out), the tests run against
the copy (PYTHONPATH first, so jobs and child processes import the mutated code too), and the
patch is reversed. A failing test run kills the mutant; a passing one means it survived. The tests
are first run once on the unmutated copy: a mutant only counts as killed if they pass there.

Mutants that need the cluster run when its controller answers (`scontrol ping`), or with --slurm;
with --no-slurm, or without a cluster, they are reported as not run. Exit 0 when every mutant
run was killed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATCHES = REPO / "scripts" / "mutants.d"


@dataclass(frozen=True)
class Mutant:
    name: str
    guards: str
    bug: str
    tests: list[str]  # pytest arguments
    needs_slurm: bool
    patch: Path


def load(path: Path) -> Mutant:
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(": ")
        header[key.lower()] = value.strip()
    return Mutant(name=header["mutant"], guards=header["guards"], bug=header["bug"],
                  tests=shlex.split(header["tests"]), needs_slurm=header.get("needs", "-") == "slurm", patch=path)


def copy_tree(dst: Path) -> None:
    """The working tree as it is (uncommitted edits included), without .venv or caches."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if rel.startswith(".venv/") or not src.is_file():
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def pytest(copy: Path, args: list[str]) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args], cwd=copy,
                          env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout[-1500:] + proc.stderr[-500:]


def git_apply(copy: Path, patch: Path, reverse: bool = False) -> None:
    """`git apply` outside any repository works as `patch -p1` does, on the files under `copy`."""
    subprocess.run(["git", "apply", *(["-R"] if reverse else []), str(patch)], check=True, cwd=copy,
                   capture_output=True, text=True, env=dict(os.environ, GIT_CEILING_DIRECTORIES=str(copy.parent)))


def slurm_up() -> bool:
    try:
        done = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return " is UP" in done.stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutants", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutants (names or their number prefixes)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--slurm", action="store_true", help="run the mutants that need the cluster")
    group.add_argument("--no-slurm", action="store_true", help="never run them")
    args = parser.parse_args(argv)

    mutants = [load(p) for p in sorted(PATCHES.glob("*.patch"))]
    if args.names:
        mutants = [m for m in mutants if any(m.name == n or m.name.startswith(f"{n}-") for n in args.names)]
    if args.list:
        for m in mutants:
            print(f"{m.name}{'  [needs SLURM]' if m.needs_slurm else ''}\n    guards: {m.guards}\n    bug: {m.bug}\n"
                  f"    tests: {shlex.join(m.tests)}")
        return 0
    with_slurm = args.slurm or (not args.no_slurm and slurm_up())

    started = time.monotonic()
    results: list[tuple[Mutant, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="reconciler-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(copy)
        runnable = [m for m in mutants if with_slurm or not m.needs_slurm]
        for m in runnable:  # the guards must pass on the code as it is, or a kill means nothing
            code, output = pytest(copy, m.tests)
            if code != 0:
                print(f"{m.name}: its tests fail without the mutant ({shlex.join(m.tests)}):\n{output}")
                return 2
        for m in mutants:
            if m not in runnable:
                results.append((m, "not run (needs the SLURM cluster)", 0.0))
                continue
            began = time.monotonic()
            git_apply(copy, m.patch)
            try:
                code, output = pytest(copy, m.tests)
            finally:
                git_apply(copy, m.patch, reverse=True)
            verdict = "killed" if code == 1 else "SURVIVED" if code == 0 else f"error (pytest exit {code})"
            results.append((m, verdict, time.monotonic() - began))
            print(f"{verdict:<10} {m.name} ({time.monotonic() - began:.0f} s)", flush=True)
            if code not in (0, 1):
                print(output)

    print()
    print("| mutant | guards | tests | result |")
    print("|---|---|---|---|")
    for m, verdict, _ in results:
        print(f"| {m.name} | {m.guards} | `{shlex.join(m.tests)}` | {verdict} |")
    killed = sum(v == "killed" for _, v, _ in results)
    not_run = sum(v.startswith("not run") for _, v, _ in results)
    print(f"\n{killed} killed, {len(results) - killed - not_run} survived or failed, {not_run} not run "
          f"(need the SLURM cluster); {time.monotonic() - started:.0f} s")
    return 0 if killed + not_run == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
