"""Hostile input: names and paths that try to escape or inject, symlinks out of the experiment,
YAML bombs, huge and tagged files, permissive umasks, and the shell.

Names (runs, tasks, models, the experiment) become paths, job names and script words, so they
are refused unless they are plain. Paths are the user's to choose and may hold anything: they
must then be quoted so that no character of them is ever run. Files the reconciler writes are
never world-writable, and nothing is written through a symlink that leads out of the experiment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.spec.load import is_safe_name
from reconciler.spec.yamlpos import MAX_FILE_BYTES, load_yaml
from tests.conftest import EXPERIMENTS, REPO
from tests.jobrecords import record_files
from tests.reliability.harness import (
    RUN,
    Case,
    Tally,
    command_env,
    has_traceback,
    journal,
    local_jobs,
    reconcile,
    small_experiment,
    unique_name,
)
from tests.yaml_probe import probe

FAULT_CLASS = "security"
GOOD = load_yaml(EXPERIMENTS / "sweep8" / "experiment_summary.yaml").data
LOCATED = re.compile(r"^error: .+?:\d+(:\d+)?: \S")

HOSTILE_NAMES = [
    "../escape", "../../etc/passwd", "/abs/path", "a/b", "..", ".", ".hidden", "-rf", "a b", "a;touch PWNED",
    "$(touch PWNED)", "`touch PWNED`", "a|b", "a&b", "a>b", "a'b", 'a"b', "a\\b", "a*", "a?", "a\nb", "a\rb",
    "name\n", "a\tb", "a\x00b", "\u0430bc",  # Cyrillic а
    "r\u0430nk4", "ｒａｎｋ", "rank4\u2215lr",  # fullwidth, division slash
    "rank\u200b4", "rank4\u0301", "é", "a%jb", "",
]
# Where a name goes, as (path into the document, how to set it).
NAME_SLOTS = {
    "run": ("runs", 0, "name"),
    "task": ("evaluation", "tasks", 0, "name"),
    "model": ("models", "base", 0, "name"),
    "experiment": ("experiment", "name"),
}


def mutate(doc: dict, path: tuple, value: object) -> dict:
    doc = json.loads(json.dumps(doc))
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


def run_cli(tmp_path: Path, doc: dict | str, command: str = "validate") -> tuple[int, list[str], str]:
    path = tmp_path / "experiment_summary.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    args = [command, str(path)] + (["--backend", "local"] if command == "apply" else [])
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stderr.strip().splitlines(), result.output


@pytest.mark.parametrize("slot", sorted(NAME_SLOTS))
def test_hostile_names_are_refused_with_a_located_line(tmp_path: Path, slot: str, tally: Tally) -> None:
    with Case(tally, FAULT_CLASS, "-", f"hostile {slot} names") as case:
        problems = []
        for i, name in enumerate(HOSTILE_NAMES):
            directory = tmp_path / f"c{i}"
            directory.mkdir()
            command = ("validate", "plan", "apply")[i % 3]
            code, lines, output = run_cli(directory, mutate(GOOD, NAME_SLOTS[slot], name), command)
            case.fault()
            case.record.runs += 1
            case.record.tracebacks += has_traceback(output)
            case.record.duplicates += len(record_files(directory))  # no job may exist at all
            written = sorted(p.name for p in directory.iterdir())
            # One located line; validate may list every problem, one located line each.
            refused = code == 2 and bool(lines) and (len(lines) == 1 or command == "validate") \
                and all(LOCATED.match(line) for line in lines)
            case.wrong(not refused or written != ["experiment_summary.yaml"], f"{name!r} ({command})")
            if not refused:
                problems.append(f"{name!r} ({command}): exit {code}: {lines}")
            if written != ["experiment_summary.yaml"]:
                problems.append(f"{name!r} ({command}): wrote {written}")
        pwned = list(Path.cwd().glob("PWNED*"))
        case.wrong(len(pwned), f"shell syntax ran: {pwned}")
        assert not problems, "\n".join(problems)
        case.check()


def test_safe_name_check_has_no_trailing_newline_hole() -> None:
    # Python's `$` matches before a final newline: the check must not.
    assert not is_safe_name("rank4\n") and not is_safe_name("rank4\n\n") and is_safe_name("rank4")


# ------------------------------------------------------------------ paths with metacharacters


def stub_bin(directory: Path, log: Path) -> Path:
    """`python` and `inspect` stubs that record their arguments (one JSON list per call) and exit 0."""
    directory.mkdir()
    for name in ("python", "inspect"):
        path = directory / name
        path.write_text(f"#!{sys.executable} -S\nimport json, sys\n"
                        f"open({str(log)!r}, 'a').write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n")
        path.chmod(0o755)
    return directory


def test_metacharacters_in_paths_and_values_are_quoted(tmp_path: Path, tally: Tally) -> None:
    """Model, data, task-script paths and an experiment directory full of shell syntax: nothing of it runs.

    The job scripts run for real (local backend) with stub `python`/`inspect` that record their
    argv: each hostile value must arrive as one literal argument, and no PWNED file may appear.
    """
    with Case(tally, FAULT_CLASS, "local", "shell syntax in paths and values") as case:
        run_quoted(tmp_path, case)


def run_quoted(tmp_path: Path, case: Case) -> None:
    evil = "x $(touch PWNED1) `touch PWNED2` ; touch PWNED3 & 'q' \"d\" $HOME * ?"
    root = tmp_path / f"exp {evil[:40].replace('/', '_')}"
    name = unique_name("sec_meta")
    exp = small_experiment(root, name)
    case.expect(exp, name, "local", done=False)  # the stubs write no output: jobs are counted, not states
    spec = exp / "experiment_summary.yaml"
    doc = yaml.safe_load(spec.read_text())
    model_dir = exp / f"model {evil}"
    shutil.copytree(exp / "base_model", model_dir)
    data_file = exp / "data" / f"words {evil}.json"
    shutil.copy(exp / "data" / "words.json", data_file)
    task_file = exp / f"task {evil}.py"
    shutil.copy(exp / "inspect_task.py", task_file)
    doc["models"]["base"][0]["path"] = model_dir.name
    doc["data"]["training"]["path"] = f"data/{data_file.name}"
    doc["evaluation"]["tasks"][0]["script"] = task_file.name
    doc["controls"]["prompt"] = "Capitalize $(touch PWNED4) `id` {input}\nthen stop"
    doc["controls"]["system_prompt"] = "You 'quote' \"things\"; $(touch PWNED5)"
    doc["evaluation"]["matrix"][0]["vis_label"] = "r4 $(touch PWNED6)"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    case.fault(9)  # a model dir, a data file, a task file and an experiment dir full of it; 2 prompts; a label
    calls = tmp_path / "calls.jsonl"
    stubs = stub_bin(tmp_path / "stubs", calls)

    env = command_env()
    env["PATH"] = f"{stubs}{os.pathsep}{env['PATH']}"
    proc = case.reconcile("apply", str(exp), "--backend", "local", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for script in [exp / RUN / "finetune.slurm", *exp.glob("*/eval/*/cell.slurm")]:
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0, script
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
            j.state in ("COMPLETED", "FAILED") for js in local_jobs(exp, name).values() for j in js):
        time.sleep(0.3)
    case.measure()
    argv = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    pwned = [p for p in tmp_path.rglob("PWNED*")] + list(REPO.glob("PWNED*"))
    inspect_calls = [a for a in argv if a[0] == "inspect"]
    problems = []
    if pwned:
        problems.append(f"shell syntax ran: {pwned}")
        case.wrong(len(pwned), f"shell syntax ran: {pwned}")
    if len(inspect_calls) < 1:
        problems.append(f"no eval ran: {argv}")
    model_paths = set()
    for call in inspect_calls:
        if f"{task_file}@capitalization" not in call:
            problems.append(f"task script not one literal word: {call}")
        # -M/-T values are YAML (inspect parses them): decoded, each must be the path itself.
        values = dict(call[i + 1].split("=", 1) for i, word in enumerate(call) if word in ("-M", "-T"))
        model_paths.add(yaml.safe_load(values["model_path"]))
        if yaml.safe_load(values["data_path"]) != str(data_file):
            problems.append(f"data path mangled: {values['data_path']}")
    if str(model_dir) not in model_paths:
        problems.append(f"base model path mangled: {model_paths}")
    trainer = [a for a in argv if a[0] == "python"]
    if not trainer or str(exp / RUN / "setup_finetune.yaml") not in trainer[0]:
        problems.append(f"trainer config path mangled: {trainer}")
    case.wrong(len(problems) - bool(pwned), "; ".join(problems))
    assert not problems, "\n".join(problems)
    case.check()


def test_values_inspect_would_split_are_refused_cleanly(tmp_path: Path) -> None:
    """A comma or a newline in a path inspect receives by -M/-T: refused with a message, nothing submitted."""
    name = unique_name("sec_comma")
    exp = small_experiment(tmp_path / "exp", name)
    spec = exp / "experiment_summary.yaml"
    doc = yaml.safe_load(spec.read_text())
    (exp / "base,model").symlink_to(exp / "base_model")
    doc["models"]["base"][0]["path"] = "base,model"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = reconcile("apply", str(exp), "--backend", "local")
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "comma" in proc.stdout + proc.stderr
    assert "eval/base/capitalization/base" not in local_jobs(exp, name), "no eval may run with a mangled path"
    reconcile("cancel", str(exp), "--backend", "local")


# ------------------------------------------------------------------ symlinks out of the experiment


def test_symlinks_out_of_the_experiment_are_not_written_through(tmp_path: Path, tally: Tally) -> None:
    with Case(tally, FAULT_CLASS, "local", "symlinks out of the experiment") as case:
        name = unique_name("sec_link")
        exp = small_experiment(tmp_path / "exp", name)
        outside = tmp_path / "outside"
        outside.mkdir()
        victim = outside / "victim.txt"
        victim.write_text("precious\n")
        (outside / "rundir").mkdir()
        (exp / RUN).symlink_to(outside / "rundir")  # a run directory leading out
        (exp / "logs").mkdir()
        (exp / "logs" / "run-experiment.log").symlink_to(victim)  # a log file leading out
        state_dir = exp / ".reconciler"
        state_dir.mkdir()
        (state_dir / "lock").symlink_to(victim)  # the lock: opened, truncated, written
        case.fault(3)
        proc = case.reconcile("apply", str(exp), "--backend", "local")
        problems = []
        if victim.read_text() != "precious\n":
            problems.append(f"wrote through a symlink: {victim.read_text()!r}")
        if list((outside / "rundir").iterdir()):
            problems.append(f"wrote into a run directory outside the experiment: {list((outside / 'rundir').iterdir())}")
        if proc.returncode == 0:
            problems.append("exit 0 although it could not act safely")
        # Symlinked logs only: the pass acts and warns.
        (state_dir / "lock").unlink()
        (exp / RUN).unlink()
        proc2 = case.reconcile("apply", str(exp), "--backend", "local")
        if victim.read_text() != "precious\n":
            problems.append(f"second pass: {proc2.stderr} {victim.read_text()!r}")
        if not journal(exp, "submitted"):
            problems.append(f"nothing submitted once the run directory was plain: {proc2.stdout} {proc2.stderr}")
        if "warning: cannot write logs" not in proc2.stderr:
            problems.append(f"a symlinked log was not reported: {proc2.stderr}")
        # The whole logs directory leading out: nothing created there.
        shutil.rmtree(exp / "logs")
        (outside / "logdir").mkdir()
        (exp / "logs").symlink_to(outside / "logdir")
        case.fault()
        proc3 = case.reconcile("apply", str(exp), "--backend", "local")
        if list((outside / "logdir").iterdir()):
            problems.append(f"third pass wrote logs out of the experiment: {proc3.stderr} "
                            f"{list((outside / 'logdir').iterdir())}")
        reconcile("cancel", str(exp), "--backend", "local")
        case.wrong(len(problems), "; ".join(problems))
        assert not problems, "\n".join(problems)
        case.check()


# ------------------------------------------------------------------ YAML bombs, huge files, tags


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    lines = ['a0: &a0 ["lol"' + ', "lol"' * (width - 1) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_FILES = {
    "billion laughs": billion_laughs(),
    # Inside an otherwise valid experiment, under a key of the user's own (kept, not validated).
    "billion laughs in a valid file": yaml.safe_dump(GOOD, sort_keys=False) + "notes:\n"
    + "".join(f"  {line}\n" for line in billion_laughs().splitlines()),
    "mapping bomb": "a: &a {x: 1, y: 1}\n" + "".join(f"b{i}: &b{i} {{p: *{'a' if i == 0 else f'b{i - 1}'}, "
                                                      f"q: *{'a' if i == 0 else f'b{i - 1}'}}}\n" for i in range(40)),
    "wide list (1.8 MB)": "x: [" + ",".join(["1"] * 900_000) + "]\n",
    "deep brackets": "x: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "deep mappings": "x: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n",
    "long string (1.9 MB)": 'x: "' + "a" * 1_900_000 + '"\n',
    "oversized file (6 MB)": "# " + "a" * 6_000_000 + "\n",
    "python/object/apply": 'experiment: !!python/object/apply:os.system ["touch PWNED"]\n',
    "python/name": "experiment: !!python/name:os.system\n",
    "python/object/new": "experiment: !!python/object/new:subprocess.Popen [[touch, PWNED]]\n",
    "custom tag": "experiment: !include /etc/passwd\n",
    "binary tag": "experiment: !!binary aGVsbG8=\n",
    "set tag": "experiment: !!set {a, b}\n",
    "not UTF-8": "experiment: \xff\xfe\n",
}

@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_yaml_is_refused_with_bounded_work_and_memory(tmp_path: Path, case: str, tally: Tally) -> None:
    """Counted, not timed (tests/yaml_probe.py); the time is benchmarks/hostile_yaml.py's."""
    with Case(tally, FAULT_CLASS, "-", f"yaml: {case}") as counted:
        path = tmp_path / "experiment_summary.yaml"
        text = HOSTILE_FILES[case]
        path.write_bytes(text.encode("latin-1") if case == "not UTF-8" else text.encode())
        counted.fault()
        found = probe(path)
        counted.record.runs += 1
        cli = counted.saw(subprocess.run([sys.executable, "-m", "reconciler", "validate", str(path)], check=False,
                                         capture_output=True, text=True, timeout=60, cwd=tmp_path))
        problems = []
        if found["message"] is None and found["unbounded"] is None:
            problems.append("accepted")
        if found["unbounded"] is not None:
            problems.append(f"work past the bounds: {found['unbounded']} {found['counts']} (limits {found['limits']})")
        if found["rss_growth_kb"] > 100_000:
            problems.append(f"memory grew by {found['rss_growth_kb'] / 1024:.0f} MB")
        lines = cli.stderr.strip().splitlines()  # validate may list every problem: one `error:` line each
        if cli.returncode != 2 or not lines or not all(line.startswith("error: ") for line in lines):
            problems.append(f"CLI exit {cli.returncode}: {cli.stderr[-400:]}")
        if list(tmp_path.glob("PWNED*")):
            problems.append("a tag ran code")
        counted.wrong(len(problems), "; ".join(problems))
        assert not problems, (case, found, problems)
        assert os.path.getsize(path) > MAX_FILE_BYTES or found["message"]
        counted.check()


# ------------------------------------------------------------------ what we write, and how we run things


@pytest.mark.slow
def test_files_written_are_never_world_writable_even_with_umask_0(tmp_path: Path, tally: Tally) -> None:
    with Case(tally, FAULT_CLASS, "local", "umask 0: world-writable files") as case:
        name = unique_name("sec_umask")
        exp = small_experiment(tmp_path / "exp", name)
        case.expect(exp, name, "local")
        before = {p for p in exp.rglob("*")}
        case.fault()
        proc = case.saw(subprocess.run([sys.executable, "-m", "tests.reliability.runner", "apply", str(exp), "--watch",
                                        "--interval", "0.5", "--backend", "local"], check=False, capture_output=True,
                                       text=True, env=command_env(), cwd=REPO, timeout=180,
                                       preexec_fn=lambda: os.umask(0)))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        loose = [f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p.relative_to(exp)}" for p in sorted(exp.rglob("*"))
                 if p not in before and not p.is_symlink() and p.lstat().st_mode & stat.S_IWOTH]
        case.wrong(len(loose), f"world-writable: {loose}")
        assert not loose, loose
        case.check()


def package_lines_matching(pattern: re.Pattern[str]) -> list[str]:
    """`file:line: text` of every line of the package whose code (comments cut) matches."""
    offenders = []
    for path in sorted((REPO / "reconciler").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return offenders


def test_no_shell_true_or_os_system_in_the_package() -> None:
    pattern = re.compile(r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|subprocess\.getoutput|"
                         r"subprocess\.getstatusoutput|commands\.getoutput")
    offenders = package_lines_matching(pattern)
    assert not offenders, offenders


def test_no_unsafe_yaml_or_eval_in_the_package() -> None:
    pattern = re.compile(r"yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|Loader=yaml\.(Full|Unsafe)?Loader\b|"
                         r"(?<![\w.])eval\(|(?<![\w.])exec\(|pickle\.loads?\(")
    offenders = package_lines_matching(pattern)
    assert not offenders, offenders
