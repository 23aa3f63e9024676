#!/usr/bin/env python3
"""The floor-plan codemod of issue 19: move modules with `git mv`, rewrite every user of the old paths.

    python scripts/restructure.py                 # git mv what is still at its old place, then rewrite
    python scripts/restructure.py --rewrite-only  # rewrite only (e.g. files a merged branch added)
    python scripts/restructure.py --check         # list files that still use an old path; exit 1 if any

Rewriting is idempotent: a name that already points at its new place is left alone, so the script
can be re-run after merging a branch that still imports the old paths. It rewrites, in every .py file
under reconciler/, tests/, benchmarks/, scripts/ (and the mutant patches):
  - `from reconciler.X import a, b` (split across modules when a name moved on its own),
  - `from reconciler import X` (kept under its old local name with `as` when the module was renamed),
  - dotted names anywhere, including strings for mock.patch / monkeypatch and `python -m`,
  - repository paths `reconciler/x.py` (mutant patches, test docstrings).

Ambiguity it cannot resolve: a bare `reconciler.plan` / `reconciler.apply` / `reconciler.backends.local`
(the old module, now a package) is read as the old module. Files written for the new layout that
name those packages on their own carry the mark "restructure: new layout" and are skipped.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Old module -> new module. Order does not matter: the longest old prefix wins.
MODULE_MOVES: dict[str, str] = {
    "reconciler.plan": "reconciler.plan.planner",
    "reconciler.plan_notes": "reconciler.engine.annotate",
    "reconciler.loop": "reconciler.engine.loop",
    "reconciler.pass_memo": "reconciler.engine.memo",
    "reconciler.gcpause": "reconciler.engine.gcpause",
    "reconciler.polling": "reconciler.engine.polling",
    "reconciler.apply": "reconciler.apply.apply",
    "reconciler.operations": "reconciler.apply.prepare",
    "reconciler.artifacts": "reconciler.apply.artifacts",
    "reconciler.crashpoints": "reconciler.apply.crashpoints",
    "reconciler.diff": "reconciler.spec.diff",
    "reconciler.selection": "reconciler.spec.selection",
    "reconciler.backends.timefmt": "reconciler.timefmt",
    "reconciler.backends.choice": "reconciler.app",
    "reconciler.backends.local": "reconciler.backends.local.backend",
    "reconciler.backends.local_procs": "reconciler.backends.local.procs",
    "reconciler.backends.local_runner": "reconciler.backends.local.runner",
    "reconciler.backends.local_store": "reconciler.backends.local.store",
    # What a pass leaves for people on disk (state.json, the workflow logs) and their models.
    "reconciler.report.state_file": "reconciler.records.state_file",
    "reconciler.report.workflow_logs": "reconciler.records.workflow_logs",
    "reconciler.report.summary_model": "reconciler.records.summary_model",
    # summary.md is written from the pass's result; report/ keeps the pure renderers.
    "reconciler.report.summary": "reconciler.records.summary",
    "reconciler.report.summary_sources": "reconciler.records.summary_sources",
    "reconciler.report.summary_plot": "reconciler.records.summary_plot",
}

# Names that left their module on their own: (module, as named after MODULE_MOVES) -> new module.
JOB_VOCABULARY = (
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE", "LIVE_STATES", "TERMINAL_STATES", "GONE", "UNKNOWN",
    "DEPENDENCY_NEVER_SATISFIED", "FAILURE_CLASSES", "normalise_state", "Job", "Snapshot", "unit_of_tag",
    "job_order",
)
SYMBOL_MOVES: dict[tuple[str, str], str] = {
    **{("reconciler.backends.base", name): "reconciler.jobs" for name in JOB_VOCABULARY},
    ("reconciler.apply.prepare", "cancel_all"): "reconciler.apply.cancel",
    ("reconciler.engine.memo", "plan_pass"): "reconciler.engine.planning",
    ("reconciler.engine.annotate", "remedy_for"): "reconciler.scaffold.remedies",
    ("reconciler.observe.observation", "FINGERPRINT_MARK"): "reconciler.spec.fingerprint",
    ("reconciler.observe.observation", "read_script_fingerprint"): "reconciler.spec.fingerprint",
    ("reconciler.backends", "ask"): "reconciler.observe.scheduler",
    ("reconciler.backends", "Question"): "reconciler.observe.scheduler",
    **{("reconciler.app", name): "reconciler.engine.backend_record"
       for name in ("RECORD_NAME", "NAMES", "recorded_backend", "record_backend")},
    # The front door became a package, a module per command (reconciler/app/__init__.py).
    **{(old, name): "reconciler.app.source" for old in ("reconciler.app", "reconciler.spec.diff")
       for name in ("load_source", "GIT_PREFIX", "GIT_TIMEOUT")},
    **{("reconciler.app", name): "reconciler.app.backend" for name in ("choose_backend", "make_backend")},
    **{(old, name): "reconciler.app.options" for old in ("reconciler.app", "reconciler.cli")
       for name in ("poll_floor", "poll_policy", "submit_cap")},
    ("reconciler.cli", "os_error_line"): "reconciler.errors",
    # The workflow logs: a module per job (records/workflow_logs.py says which).
    **{("reconciler.records.workflow_logs", name): "reconciler.records.log_append"
       for name in ("append_entries", "ENTRY_START", "TAIL_BYTES")},
    **{("reconciler.records.workflow_logs", name): "reconciler.records.log_format"
       for name in ("Entry", "LogName", "block", "unit_name")},
    ("reconciler.records.workflow_logs", "pass_entries"): "reconciler.records.pass_entries",
    # The remedy choice is pure (plan/); scaffold/ keeps the spec's values it starts from (baseline).
    **{("reconciler.scaffold.remedies", name): "reconciler.plan.remedies"
       for name in ("Remedy", "failure_cause", "next_remedy", "TIME_FACTOR", "MIN_BATCH_SIZE")},
    **{("reconciler.observe.observation", name): "reconciler.jobs" for name in ("OOM_MARKERS", "shows_oom")},
}

# New packages (each gets an empty __init__.py if it has none).
NEW_PACKAGES = ("reconciler.plan", "reconciler.engine", "reconciler.apply", "reconciler.backends.local",
                "reconciler.records")

SCAN_DIRS = ("reconciler", "tests", "benchmarks", "scripts")
EXTRA_FILES = ("scripts/mutants.d/*.patch",)
SELF = Path(__file__).resolve()
# A file written for the new layout that names a new package which was an old module (`reconciler.apply`,
# `reconciler.plan`, `reconciler.backends.local`) as a bare string carries this mark and is left alone.
SKIP_MARK = "restructure: " + "new layout"


def module_file(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def new_modules() -> set[str]:
    """Every module and package that exists after the moves (named ones and what is on disk)."""
    names = set(MODULE_MOVES.values()) | set(SYMBOL_MOVES.values()) | set(NEW_PACKAGES)
    for path in (ROOT / "reconciler").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.add(".".join(parts))
    return names


class Rewriter:
    def __init__(self) -> None:
        self.news = new_modules()
        self.olds = sorted(MODULE_MOVES, key=len, reverse=True)

    def _is_new_child(self, package: str, child: str) -> bool:
        return f"{package}.{child}" in self.news

    def resolve(self, dotted: str) -> str:
        """The dotted name at its new place (a module, or an attribute of one)."""
        moved = self._resolve_module(dotted)
        module, _, name = moved.rpartition(".")
        new = SYMBOL_MOVES.get((module, name))
        return f"{new}.{name}" if new else moved

    def _resolve_module(self, dotted: str) -> str:
        for old in self.olds:
            if dotted != old and not dotted.startswith(old + "."):
                continue
            rest = dotted[len(old) + 1:]
            # The old module is now a package: a name through one of its new modules is already new.
            if rest and self._is_new_child(old, rest.split(".")[0]):
                return dotted
            return MODULE_MOVES[old] + ("." + rest if rest else "")
        return dotted

    def from_import(self, match: re.Match[str]) -> str:
        indent, module, body = match.group("indent"), match.group("module"), match.group("names")
        names, comment = _parse_names(body)
        if names is None:
            return match.group(0)
        if all(self._is_new_child(module, n) for n, _ in names) and module in self.news:
            new_module = module  # `from reconciler.apply import prepare`: already the new layout
        else:
            new_module = self._resolve_module(module)
        targets: list[tuple[str, str, str | None]] = []
        for name, alias in names:
            old_sub = f"{module}.{name}"
            if old_sub in MODULE_MOVES and not self._is_new_child(module, name):
                parent, _, leaf = MODULE_MOVES[old_sub].rpartition(".")
                local = alias or name
                targets.append((parent, leaf, None if leaf == local else local))
            else:
                targets.append((SYMBOL_MOVES.get((new_module, name), new_module), name, alias))
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for mod, name, alias in targets:
            groups.setdefault(mod, []).append((name, alias))
        if list(groups) == [new_module] and [n for n, _ in groups[new_module]] == [n for n, _ in names]:
            if new_module == module:
                return match.group(0)
            return match.group(0).replace(f"from {module} import", f"from {new_module} import", 1)
        lines = []
        for i, (mod, items) in enumerate(groups.items()):
            text = ", ".join(f"{n} as {a}" if a else n for n, a in items)
            line = f"{indent}from {mod} import {text}"
            if len(line) > 110:
                inner = "".join(f"{indent}    {n} as {a},\n" if a else f"{indent}    {n},\n" for n, a in items)
                line = f"{indent}from {mod} import (\n{inner}{indent})"
            if i == 0 and comment:
                line += "  " + comment
            lines.append(line)
        return "\n".join(lines)

    def dotted(self, match: re.Match[str]) -> str:
        return self.resolve(match.group(0))

    def path(self, match: re.Match[str]) -> str:
        module = match.group(1).replace("/", ".")
        new = self._resolve_module(module)
        if new == module:
            return match.group(0)
        return new.replace(".", "/") + ".py"

    def rewrite(self, text: str) -> str:
        text = FROM_IMPORT.sub(lambda m: self.from_import(m) if m.group("module") else self.dotted(m), text)
        return PATH.sub(self.path, text)


FROM_IMPORT = re.compile(
    r"(?P<indent>^[ \t]*)from[ \t]+(?P<module>reconciler(?:\.\w+)*)[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)[^\n]*|[^\n]*)"
    r"|(?<![\w.])reconciler(?:\.\w+)+",
    re.MULTILINE,
)
PATH = re.compile(r"(?<![\w.])(reconciler(?:/\w+)+)\.py\b")


def _parse_names(body: str) -> tuple[list[tuple[str, str | None]] | None, str]:
    """[(name, alias)] and a trailing comment, or None when the statement is not a plain list."""
    comment = ""
    if body.startswith("("):
        inner, _, after = body[1:].partition(")")
        comment = after.strip()
        inner = "\n".join(line.split("#", 1)[0] for line in inner.splitlines())
    else:
        inner, _, tail = body.partition("#")
        comment = ("#" + tail).strip() if tail or body.rstrip().endswith("#") else ""
        if inner.rstrip().endswith("\\") or ";" in inner:
            return None, ""
    names = []
    for part in inner.replace("\n", " ").split(","):
        words = part.split()
        if not words:
            continue
        if len(words) == 1 and words[0].isidentifier():
            names.append((words[0], None))
        elif len(words) == 3 and words[1] == "as":
            names.append((words[0], words[2]))
        else:
            return None, ""
    return (names or None), comment


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


def move_files() -> None:
    for package in NEW_PACKAGES:
        init = module_file(package).with_suffix("") / "__init__.py"
        old_file = module_file(package)
        if old_file.exists():  # the old module takes its place inside the new package first
            new_file = module_file(MODULE_MOVES[package])
            tmp = old_file.with_name(f"_{old_file.stem}_moving.py")
            git("mv", str(old_file), str(tmp))
            new_file.parent.mkdir(parents=True, exist_ok=True)
            git("mv", str(tmp), str(new_file))
        if not init.exists():
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text("")
            git("add", str(init))
    for old, new in MODULE_MOVES.items():
        src, dst = module_file(old), module_file(new)
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            git("mv", str(src), str(dst))


def files() -> list[Path]:
    found = [p for d in SCAN_DIRS for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts]
    found += [p for pattern in EXTRA_FILES for p in ROOT.glob(pattern)]
    return sorted(p for p in found if p.resolve() != SELF)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewrite-only", action="store_true", help="do not move files; rewrite users only")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file uses an old path")
    args = parser.parse_args()
    if not args.rewrite_only and not args.check:
        move_files()
    rewriter = Rewriter()
    stale = []
    for path in files():
        text = path.read_text()
        if SKIP_MARK in text:
            continue
        new = rewriter.rewrite(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    for rel in stale:
        print(("stale: " if args.check else "rewrote: ") + str(rel))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
