"""The `reconcile` command: parse options, call one library function, render, exit. No logic here."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from reconciler.app.apply import ApplyRequest, Applied, apply_passes, cancel_jobs
from reconciler.app.read import load_checked, plan_only, scaffold_units, status_pass, summarize_pass
from reconciler.backends import BACKEND_NAMES
from reconciler.errors import (
    Interrupted, PreflightFailed, ReconcilerError, SpecError, UsageError, every_problem, os_error_line,
)
from reconciler.engine.gcpause import one_shot_command
from reconciler.plan.planner import Plan
from reconciler.report import hints, plan_render

if TYPE_CHECKING:
    from reconciler.engine.loop import PassResult
    from reconciler.report.progress import Progress
    from reconciler.spec.units import Desired

# The pass machinery (the spec's expansion, observe, apply) is imported by the front door's functions
# that need it, not here: `reconcile plan` recalling a remembered plan needs none of it.

EXP = click.argument("exp", type=click.Path(path_type=Path), default=Path("."), required=False)

BACKEND_HELP = ("The scheduler: local (jobs run on this machine), slurm, or auto (the backend the experiment was "
                "applied with; never applied: SLURM when its controller answers, else local).")
WAIT_HELP = "Wait up to this many seconds for another reconciler's lock on the experiment instead of exiting."
MAX_INTERVAL_HELP = ("Longest wait between passes: a watch waits longer while nothing changes and nothing is due, "
                     "and comes back to --interval when something changes or a job's next epoch or time limit "
                     "approaches (default on SLURM: five times --interval; on the local backend: --interval, "
                     "a fixed interval).")


def _examples(*lines: str) -> str:
    # \b keeps click from re-wrapping the lines.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


EXAMPLES = {
    "main": _examples("scripts/demo                                          # install + the demo, from a clone",
                      "reconcile validate my-sweep                           # what is wrong, every problem",
                      "reconcile plan my-sweep --backend local               # what apply would do",
                      "reconcile apply my-sweep --backend local --watch      # run it until converged",
                      "reconcile status my-sweep --backend local             # where every unit stands"),
    "validate": _examples("reconcile validate examples/capitalization",
                          "reconcile validate my-sweep/with-failure.yaml --max-errors 5"),
    "plan": _examples("reconcile plan examples/capitalization --backend local",
                      "reconcile plan my-sweep --offline --format markdown --detailed-exitcode   # in CI"),
    "diff": _examples("reconcile diff old/experiment_summary.yaml my-sweep/experiment_summary.yaml",
                      "reconcile diff git:main:my-sweep/experiment_summary.yaml my-sweep/experiment_summary.yaml"),
    "status": _examples("reconcile status examples/capitalization --backend local",
                        "reconcile status my-sweep --backend slurm --json"),
    "summarize": _examples("reconcile summarize examples/capitalization --backend local",
                           "reconcile summarize my-sweep --backend slurm --format csv > results.csv"),
    "scaffold": _examples("reconcile scaffold my-sweep --dry-run",
                          "reconcile scaffold my-sweep --force        # re-render scripts of an older spec"),
    "apply": _examples("reconcile apply examples/capitalization --backend local --watch --interval 2",
                       "reconcile apply my-sweep --backend slurm --watch                   # under tmux or nohup",
                       "reconcile apply my-sweep --backend slurm --watch --max-attempts 4  # after fixing a failure"),
    "watch": _examples("reconcile watch examples/capitalization --backend local --interval 2",
                       "nohup reconcile watch my-sweep --backend slurm > watch.log 2>&1 &"),
    "cancel": _examples("reconcile cancel examples/capitalization --backend local",
                        "reconcile cancel my-sweep --backend slurm --wait 60"),
    "schema": _examples("reconcile schema --output experiment_summary.schema.json"),
}


def fail(exc: ReconcilerError | OSError, *, max_errors: int | None = None, every: bool = False,
         answers: bool = False) -> NoReturn:
    """The one error-to-exit map: a user error is one line on stderr and its exit code, never a traceback.

    A ReconcilerError exits with its own code (a spec or usage error 2, Ctrl-C in a pass 130, else 1);
    a file system in trouble (read-only, full, deleted under us) where no narrower handler said more
    is an environment error, exit 1. Preflight problems are listed one a line before the error's line
    (the first `max_errors`). `every` (validate): a spec with several problems lists each, and that is
    all. `answers`: the command's exit codes answer a question (diff: 2 = they differ; plan
    --detailed-exitcode: 2 = actions pending), so an error must not look like an answer: exit 1.
    """
    if every and isinstance(exc, SpecError) and len(every_problem(exc)) > 1:
        _list_errors([str(p) for p in every_problem(exc)], max_errors)
        sys.exit(1 if answers else exc.exit_code)
    if isinstance(exc, PreflightFailed):
        _list_errors(list(exc.problems), max_errors)
    if isinstance(exc, Interrupted):
        click.echo(str(exc), err=True)  # not a mistake: what keeps running, how to resume
    else:
        click.echo(f"error: {os_error_line(exc) if isinstance(exc, OSError) else exc}", err=True)
    sys.exit(1 if answers else exc.exit_code if isinstance(exc, ReconcilerError) else 1)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command's errors go through `fail`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _check_cwd()
            return fn(*args, **kwargs)
        except (ReconcilerError, OSError) as exc:
            fail(exc)
    return wrapper


def _check_cwd() -> None:
    """Relative paths mean nothing once the current directory is deleted: say so, not "file not found"."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists (deleted?): cd to the experiment and run the "
                         "command again") from None


def _warning(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def _list_errors(errors: list[str], max_errors: int | None) -> None:
    """One located line per error, the first `max_errors` of them (all by default), and how many were left out."""
    shown = errors if max_errors is None else errors[:max_errors]
    for error in shown:
        click.echo(f"error: {error}", err=True)
    if len(shown) < len(errors):
        click.echo(f"error: ... and {len(errors) - len(shown)} more (--max-errors {max_errors}; "
                   "without it every one is listed)", err=True)


STAGE = click.option("--stage", type=click.Choice(["finetune", "eval"]), default=None,
                     help="Act only on this stage's units (the rest are reported, untouched).")
TARGET = click.option("--target", "targets", multiple=True, metavar="PATTERN",
                      help="Act only on these units (keys or globs, e.g. 'eval/rank4/*'; repeatable) and "
                           "what they depend on, as Terraform's -target.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES["main"])
@click.version_option(package_name=hints.DISTRIBUTION)
def main() -> None:
    """Take an experiment from experiment_summary.yaml to its results, idempotently.

    EXP is an experiment directory or its experiment_summary.yaml (default: the current directory).
    """
    # Nothing we create (journal, state, logs, job records and the scripts they run) may be
    # world-writable, whatever the caller's umask: keep its group bits, always mask other-write.
    os.umask(os.umask(0o022) | 0o002)
    if own_process():
        _restore_sigpipe()


@main.command(epilog=EXAMPLES["validate"])
@EXP
@click.option("--max-errors", type=click.IntRange(1), default=None, metavar="N",
              help="List at most N errors (default: every one).")
@handle_errors
def validate(exp: Path, max_errors: int | None) -> None:
    """Check the experiment and what its jobs will need; list every problem.

    Checks the file (every error with its file:line:col and field), then what the jobs will need:
    model directories and tokenizers, task files, training and task datasets, the eval environment.
    A path not visible on this machine (meant for a cluster) is a warning. Prints what the
    experiment expands to.
    """
    try:
        desired = load_checked(exp, _warning, environment=True)
    except ReconcilerError as exc:
        fail(exc, max_errors=max_errors, every=True)
    kinds = [u.kind for u in desired.units]
    click.echo(f"{desired.loaded.path}: valid ({desired.loaded.dialect} dialect): "
               f"{kinds.count('finetune')} fine-tunes, {kinds.count('eval')} evals")


@main.command(epilog=EXAMPLES["plan"])
@EXP
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
              help="text for people, json for scripts (schemas/plan.schema.json), markdown for a pull-request comment.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--offline", is_flag=True, help="Do not ask any scheduler (CI): its state is reported unknown.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: nothing to do, 1: error, 2: actions pending.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None,
              help="Submissions per unit, as apply would use (default: the spec's reconciler.max_attempts, else 3).")
@click.option("--replace", multiple=True, help="Unit keys to re-run, or 'outdated'.")
@STAGE
@TARGET
@handle_errors
def plan(exp: Path, fmt: str, backend: str, offline: bool, detailed_exitcode: bool, max_attempts: int | None,
         replace: tuple[str, ...], stage: str | None, targets: tuple[str, ...]) -> None:
    """Show what apply would do, changing nothing."""
    one_shot_command(own_process())
    try:
        # A markdown report names each unit's resources: from the spec, even for a remembered plan.
        the_plan, desired = plan_only(exp, backend, offline, max_attempts, replace, stage, targets, _warning,
                                      need_desired=fmt == "markdown")
    except ReconcilerError as exc:
        # With --detailed-exitcode, 2 means "actions pending" (Terraform): an error must not look like it.
        fail(exc, answers=detailed_exitcode)
    _render_plan(the_plan, desired, fmt)
    if detailed_exitcode and the_plan.has_changes:
        sys.exit(2)


def _render_plan(the_plan: Plan, desired: Desired | None, fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        plan_render.write_json(the_plan, out)
    elif fmt == "markdown":
        from reconciler.report import plan_markdown

        assert desired is not None
        plan_markdown.write_markdown(the_plan, out, desired)
    else:
        plan_render.write_text(the_plan, out)


@main.command(epilog=EXAMPLES["diff"])
@click.argument("old")
@click.argument("new")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
              help="text for people, json for scripts, markdown for a pull-request comment.")
def diff(old: str, new: str, fmt: str) -> None:
    """Compare two experiment files (paths or git:REV:path) as desired states.

    Exit 0 when they are the same, 2 when they differ, 1 on error.
    """
    from reconciler.app.source import diff_sources
    from reconciler.report import diff_render

    try:
        _check_cwd()
        result = diff_sources(old, new)
    except (ReconcilerError, OSError) as exc:  # SpecError too: 2 must only ever mean "they differ"
        fail(exc, answers=True)
    writers = {"text": diff_render.write_text, "json": diff_render.write_json, "markdown": diff_render.write_markdown}
    writers[fmt](result, sys.stdout)
    sys.exit(2 if result.differs else 0)


@main.command(epilog=EXAMPLES["status"])
@EXP
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: units, counts per stage, sources.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--offline", is_flag=True, help="Do not ask any scheduler: its state is reported unknown.")
@handle_errors
def status(exp: Path, as_json: bool, backend: str, offline: bool) -> None:
    """Where every unit stands (changes nothing)."""
    one_shot_command(own_process())
    from reconciler.report import status_render

    result, note, state = status_pass(exp, backend, offline)
    if as_json:
        click.echo(json.dumps(status_render.status_record(result, state), indent=2))
        return
    status_render.write_status(result, sys.stdout, state=state, backend_note=note)


@main.command(epilog=EXAMPLES["summarize"])
@EXP
@click.option("--format", "fmt", type=click.Choice(["markdown", "json", "csv"]), default="markdown",
              show_default=True, help="markdown writes summary.md (and its plot); json and csv go to stdout.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--offline", is_flag=True, help="Do not ask any scheduler (results come from files anyway).")
@click.option("--no-plot", is_flag=True, help="Skip the accuracy plot even when matplotlib is installed.")
@handle_errors
def summarize(exp: Path, fmt: str, backend: str, offline: bool, no_plot: bool) -> None:
    """Write summary.md: run status, training loss, accuracy per run and epoch, best run, next steps."""
    from reconciler.report import summary_render
    from reconciler.records.summary import build_summary, write_summary

    desired, result, named = summarize_pass(exp, backend, offline)
    if fmt == "markdown":
        summary, path = write_summary(desired, result, plot=not no_plot, backend=named)
        click.echo(f"wrote {path} ({summary.units_done}/{summary.units_total} units done"
                   f"{'' if summary.complete else '; partial results'})")
        if summary.plot_note:
            click.echo(f"note: {summary.plot_note}", err=True)
        return
    summary = build_summary(desired, result, backend=named)
    (summary_render.write_json if fmt == "json" else summary_render.write_csv)(summary, sys.stdout)


@main.command(epilog=EXAMPLES["scaffold"])
@EXP
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
@click.option("--force", is_flag=True, help="Re-render our scripts made from an older spec (never a foreign file).")
@handle_errors
def scaffold(exp: Path, dry_run: bool, force: bool) -> None:
    """Render every unit's job script and configs from the spec (apply does this on its own)."""
    reports = scaffold_units(exp, dry_run, force, _warning)
    # A dry run writes nothing: its labels say what a real run would do.
    labels = {"written": "would write", "rerendered": "would rerender"} if dry_run else {}
    width = max([10] + [len(labels.get(r.status, r.status)) for r in reports])
    for report in reports:
        note = f" ({report.note})" if report.note else ""
        click.echo(f"{labels.get(report.status, report.status):<{width}} {report.unit}: {report.path}{note}")
        for warning in report.warnings:
            click.echo(f"warning: {report.unit}: {warning}", err=True)
    counts = {s: sum(1 for r in reports if r.status == s) for s in ("written", "rerendered", "unchanged", "drift", "foreign")}
    verb = "would write" if dry_run else "wrote"
    click.echo(f"{verb} {counts['written'] + counts['rerendered']} script(s); " +
               ", ".join(f"{n} {s}" for s, n in counts.items() if n and s not in ("written", "rerendered")))


@main.command(epilog=EXAMPLES["apply"])
@EXP
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--watch", "watch_", is_flag=True, help="Repeat passes until converged.")
@click.option("--interval", type=click.FloatRange(0.1), default=None, help="Seconds between passes in --watch (default: 2 on local, 60 on SLURM, never under 10 there).")
@click.option("--max-interval", type=click.FloatRange(0.1), default=None, help=MAX_INTERVAL_HELP)
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None, help="Submissions per unit before it is reported failed (default: the spec's reconciler.max_attempts, else 3).")
@click.option("--max-submit", type=click.IntRange(1), default=None,
              help="Cap on live jobs of this experiment (SLURM default 25, like a QoS MaxSubmitJobs).")
@click.option("--replace", multiple=True, help="Re-run these unit keys (comma-separated), or 'outdated'.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(0), default=0.0, help=WAIT_HELP)
@STAGE
@TARGET
@handle_errors
def apply(exp: Path, backend: str, watch_: bool, interval: float | None, max_interval: float | None,
          max_attempts: int | None, max_submit: int | None, replace: tuple[str, ...], wait_seconds: float,
          stage: str | None, targets: tuple[str, ...]) -> None:
    """Submit what is missing (one pass; --watch repeats until converged)."""
    _apply(ApplyRequest(exp, backend, watch_, interval, max_interval, max_attempts, max_submit, replace, wait_seconds,
                        stage, targets))


@main.command(name="watch", epilog=EXAMPLES["watch"])
@EXP
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--interval", type=click.FloatRange(0.1), default=None,
              help="Seconds between passes (default: 2 on local, 60 on SLURM, which is never polled more often than "
                   "every 10).")
@click.option("--max-interval", type=click.FloatRange(0.1), default=None, help=MAX_INTERVAL_HELP)
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None,
              help="Submissions per unit before it is reported failed (default: the spec's reconciler.max_attempts, "
                   "else 3).")
@click.option("--max-submit", type=click.IntRange(1), default=None,
              help="Cap on live jobs of this experiment (SLURM default 25, like a QoS MaxSubmitJobs).")
@click.option("--wait", "wait_seconds", type=click.FloatRange(0), default=0.0, help=WAIT_HELP)
@STAGE
@TARGET
@handle_errors
def watch_cmd(exp: Path, backend: str, interval: float | None, max_interval: float | None,
              max_attempts: int | None, max_submit: int | None, wait_seconds: float, stage: str | None,
              targets: tuple[str, ...]) -> None:
    """Same as `apply --watch`."""
    _apply(ApplyRequest(exp, backend, True, interval, max_interval, max_attempts, max_submit, (), wait_seconds,
                        stage, targets))


class _ApplyScreen:
    """What apply shows as it goes: progress on stdout, warnings and notes on stderr."""

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def warn(self, text: str) -> None:
        _warning(text)

    def note(self, text: str) -> None:
        click.echo(text, err=True)

    def start(self, desired: Desired, backend_note: str) -> None:
        from reconciler.report.progress import Progress

        self.progress = Progress(sys.stdout, desired, backend_note)

    def on_pass(self, result: PassResult) -> None:
        assert self.progress is not None
        self.progress.on_pass(result)

    def on_interval(self, seconds: float) -> None:
        assert self.progress is not None
        self.progress.on_interval(seconds)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _apply(request: ApplyRequest) -> None:
    applied = apply_passes(request, _ApplyScreen())
    if applied.summary is not None:
        click.echo(f"results: {applied.summary}")
    if applied.summary_warning is not None:
        _warning(applied.summary_warning)
    _say_how_it_ended(applied)
    if applied.watch or applied.exit_code:
        sys.exit(applied.exit_code)


def _say_how_it_ended(applied: Applied) -> None:
    result, spec, backend = applied.result, applied.spec, applied.backend
    if not applied.watch:
        errors = result.applied.errors if result.applied is not None else []
        if errors:
            more = f" (and {len(errors) - 1} more above)" if len(errors) > 1 else ""
            click.echo(f"error: {errors[0]}{more}", err=True)
        return
    if result.stalled:
        click.echo(f"error: the watch cannot go on: {result.stalled}. Free some space (or fix the file system) "
                   f"and run again: {hints.reconcile('apply', spec, backend, '--watch')}", err=True)
    if applied.exit_code == 3:
        click.echo("some units failed or are blocked; why, and what to read: "
                   f"{hints.reconcile('status', spec, backend)}", err=True)


@main.command(epilog=EXAMPLES["cancel"])
@EXP
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--wait", "wait_seconds", type=click.FloatRange(0), default=0.0, help=WAIT_HELP)
@handle_errors
def cancel(exp: Path, backend: str, wait_seconds: float) -> None:
    """Cancel every in-flight job of the experiment (found by tag)."""
    cancelled = cancel_jobs(exp, backend, wait_seconds)
    for unit, job_id in cancelled:
        click.echo(f"cancelled {unit} (job {job_id})")
    click.echo(f"{len({job_id for _, job_id in cancelled})} job(s) cancelled")


@main.command(epilog=EXAMPLES["schema"])
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Write to this file instead of stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of experiment_summary.yaml."""
    from reconciler.spec.schema import experiment_schema_text

    text = experiment_schema_text()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


def _restore_sigpipe() -> None:
    # `reconcile plan | head` should end quietly, like other Unix tools.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def own_process() -> bool:
    """Started as `reconcile ...` (the console script) or `python -m reconciler ...`, not called in-process
    (click's CliRunner in tests): only then may a command change process-wide settings (signals, the collector)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return argv0.name == "reconcile" or (argv0.name == "__main__.py" and argv0.parent.name == "reconciler")
