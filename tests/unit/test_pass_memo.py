"""`reconcile plan` reuses its last plan while every file it read stats the same, and never a stale one."""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.engine import loop, memo as pass_memo
from reconciler.backends.base import Capabilities
from reconciler.jobs import Job, Snapshot
from reconciler.cli import main
from reconciler.journal import Journal
from reconciler.engine.loop import PassMemory, load_desired, run_pass, watch_pass
from reconciler.engine.planning import plan_pass
from reconciler.observe.checkpoints import epoch_evidence
from reconciler.observe.reader import Reader
from reconciler.plan.planner import Plan, PlannedUnit, Policy
from reconciler.plan.remedies import Remedy, RemedyChoice
from reconciler.spec.units import Desired, tag_for
from tests.unit.converged_fixture import build_converged
from tests.unit.test_observe import eval_log, safetensors

OPTIONS = ("auto", None, ())


def policy_of(desired: Desired) -> Policy:
    return Policy(max_attempts=desired.loaded.spec.reconciler.max_attempts)


def planned(exp: Path, backend_for: Callable[[Path], object] | None = None) -> tuple[Plan, bool]:
    """The plan `reconcile plan` shows, and whether it was recalled rather than planned."""
    the_plan, desired = plan_pass(exp, OPTIONS, policy_for=policy_of, backend_for=backend_for)  # type: ignore[arg-type]
    return the_plan, desired is None


def planned_afresh(exp: Path, presume_empty: bool = True) -> Plan:
    """A pass planned from scratch, offline: as `plan --offline` (presuming an empty scheduler), or not."""
    desired = load_desired(exp)
    return run_pass(desired, None, policy_of(desired), act=False, presume_empty=presume_empty).plan


def age(paths: Collection[Path], seconds_ago: float) -> None:
    """Give paths an mtime in the past: a memo is not written while an input changed within RACY_NS."""
    when = time.time() - seconds_ago
    for path in paths:
        os.utime(path, (when, when), follow_symlinks=False)


def age_tree(root: Path, seconds_ago: float = 1000) -> None:
    age([root, *root.rglob("*")], seconds_ago)


@pytest.fixture(autouse=True)
def trust_settled_inputs_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every change here sets a ctime (utime too): waiting 2 s after each would make this file slow.
    With no window, an input still counts as changed when its ctime is the memo's own tick."""
    monkeypatch.setattr(pass_memo, "RACY_NS", 0)


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    build_converged(tmp_path / "exp")
    age_tree(tmp_path / "exp")
    return tmp_path / "exp"


def a_log(exp: Path, index: int = 0) -> Path:
    logs = sorted((exp).rglob("*.eval"))
    return logs[index % len(logs)]


def test_a_second_plan_is_recalled_and_identical(exp: Path) -> None:
    first, recalled = planned(exp)
    assert not recalled and (exp / ".reconciler" / pass_memo.MEMO_NAME).exists()
    second, recalled = planned(exp)
    assert recalled and second == first
    assert second.state_counts()["done"] == len(second.units)


def test_a_remembered_plan_keeps_the_remedy_a_retry_carries(tmp_path: Path) -> None:
    retry = PlannedUnit(key="finetune/a", kind="finetune", run="a", task=None, epoch=None, state="failed",
                        action="resubmit", reason="retry: out_of_memory", depends_on=(), fingerprint="f" * 16,
                        remedy=RemedyChoice(Remedy(batch_size=4, gradient_accumulation_steps=8, reason="oom"), new=True))
    kept = PlannedUnit(key="eval/a/t/base", kind="eval", run="a", task="t", epoch=None, state="failed",
                       action="resubmit", reason="retry: timeout", depends_on=(), fingerprint="e" * 16,
                       remedy=RemedyChoice(Remedy(time="0:45:00"), new=False))
    plain = PlannedUnit(key="finetune/b", kind="finetune", run="b", task=None, epoch=None, state="missing",
                        action="submit", reason="missing", depends_on=(), fingerprint="d" * 16)
    the_plan = Plan(experiment="x", units=(retry, kept, plain))
    assert pass_memo.remember(tmp_path, "key", {}, the_plan, None, "answer")
    memo = pass_memo.recall(tmp_path, "key")
    assert memo is not None and memo.plan == the_plan


def test_the_cli_prints_the_same_plan_from_memory(exp: Path) -> None:
    runner = CliRunner()
    outputs = [runner.invoke(main, ["plan", str(exp), "--offline", "--format", fmt]) for fmt in ("text", "json") * 2]
    assert all(o.exit_code == 0 for o in outputs), outputs[0].output
    assert outputs[0].output == outputs[2].output and outputs[1].output == outputs[3].output
    assert "10 done" in outputs[2].output


def test_inputs_changed_within_the_racy_window_are_not_trusted(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pass_memo, "RACY_NS", 2_000_000_000)
    exp = tmp_path / "exp"
    build_converged(exp)
    age_tree(exp, 0)  # every file written just now
    planned(exp)
    assert not (exp / ".reconciler" / pass_memo.MEMO_NAME).exists()
    assert not planned(exp)[1]


# Each change a user or a job makes; the paths it touched (they get a new mtime, as a later write would).
def rewrite_log_as_failure(exp: Path, rng: random.Random) -> list[Path]:
    log = a_log(exp, rng.randrange(100))
    eval_log(log, status="error")  # in place: same name, same inode
    return [log]


def add_a_log(exp: Path, rng: random.Random) -> list[Path]:
    log = a_log(exp, rng.randrange(100))
    new = log.with_name(f"2027-01-01T00-00-00_extra_{rng.randrange(10**6)}.eval")
    eval_log(new, status=rng.choice(["error", "success"]))
    return [new, new.parent]


def remove_a_log(exp: Path, rng: random.Random) -> list[Path]:
    log = a_log(exp, rng.randrange(100))
    log.unlink()
    return [log.parent]


def final_epochs(exp: Path) -> list[Path]:
    """The last epoch directory of each run (no epoch_{N+1} beside it)."""
    epochs = sorted(exp.rglob("epoch_*"))
    return [d for d in epochs if not (d.parent / f"epoch_{int(d.name.split('_')[1]) + 1}").exists()]


def remove_a_final_epoch(exp: Path, rng: random.Random) -> list[Path]:
    """An earlier epoch is then proven by the recipe state alone, and the fine-tune is no longer done."""
    finals = final_epochs(exp)
    if not finals:
        return []
    final = finals[rng.randrange(len(finals))]
    shutil.rmtree(final)
    return [final.parent]


def a_final_epoch_file(exp: Path, name: str, rng: random.Random) -> Path | None:
    """One of the final epochs' `name` files."""
    found = [d / name for d in final_epochs(exp) if (d / name).exists()]
    return found[rng.randrange(len(found))] if found else None


def garble_a_final_adapter_config(exp: Path, rng: random.Random) -> list[Path]:
    config = a_final_epoch_file(exp, "adapter_config.json", rng)
    if config is None:
        return []
    config.write_text('{"r": ')
    return [config]


def truncate_a_final_adapter(exp: Path, rng: random.Random) -> list[Path]:
    adapter = a_final_epoch_file(exp, "adapter_model.safetensors", rng)
    if adapter is None:
        return []
    safetensors(adapter, truncate=4)
    return [adapter]


def journal_a_failure(exp: Path, rng: random.Random) -> list[Path]:
    desired = load_desired(exp)
    unit = desired.units[rng.randrange(len(desired.units))]
    job = str(1000 + rng.randrange(10**6))
    journal = Journal(desired.layout.state_dir)
    journal.append("submitted", unit=unit.key, job_id=job, fingerprint=unit.fingerprint, after=[])
    journal.append("job_state", unit=unit.key, job_id=job, state="FAILED", exit_code=1)
    return [journal.path]


def rewrite_a_final_adapter_config_keeping_its_mtime(exp: Path, rng: random.Random) -> list[Path]:
    """As `cp -p` over it would: same size, same mtime; only the ctime tells."""
    config = a_final_epoch_file(exp, "adapter_config.json", rng)
    if config is None:
        return []
    st = config.stat()
    text = config.read_text()
    config.write_text(text[:-1] + " ")  # no longer parses
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    return []


def edit_the_spec(exp: Path, rng: random.Random) -> list[Path]:
    spec = exp / "experiment_summary.yaml"
    spec.write_text(spec.read_text() + f"# edited {rng.randrange(10**6)}\n")
    return [spec]


CHANGES = [rewrite_log_as_failure, add_a_log, remove_a_log, remove_a_final_epoch, garble_a_final_adapter_config,
           rewrite_a_final_adapter_config_keeping_its_mtime, truncate_a_final_adapter, journal_a_failure,
           edit_the_spec]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__)
def test_each_change_is_seen(exp: Path, change: Callable[[Path, random.Random], list[Path]]) -> None:
    before, _ = planned(exp)
    touched = change(exp, random.Random(0))
    age(touched, 500)  # older than the racy window, newer than the memo's inputs
    after, recalled = planned(exp)
    assert not recalled
    assert after == planned_afresh(exp)
    if change not in (add_a_log, edit_the_spec):  # a complete log still wins; a comment plans the same
        assert after != before
    assert planned(exp) == (after, True)  # and the new plan is remembered in turn


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from([None, *CHANGES]), st.integers(0, 10**6)), min_size=1, max_size=5))
def test_any_sequence_of_changes_plans_as_a_fresh_pass(tmp_path_factory: pytest.TempPathFactory,
                                                       steps: list[tuple[Callable[..., list[Path]] | None, int]]) -> None:
    exp = tmp_path_factory.mktemp("seq") / "exp"
    build_converged(exp)
    age_tree(exp, 10_000)
    recalls = 0
    for n, (change, seed) in enumerate(steps):
        if change is not None:
            age(change(exp, random.Random(seed)), 9_000 - n)  # a distinct mtime for every step
        the_plan, recalled = planned(exp)
        recalls += recalled
        assert the_plan == planned_afresh(exp), [c and c.__name__ for c, _ in steps[: n + 1]]
        if change is None and n > 0:
            assert recalled  # nothing changed since the last plan
    shutil.rmtree(exp.parent, ignore_errors=True)


def test_a_torn_or_foreign_memo_is_planned_again(exp: Path) -> None:
    first, _ = planned(exp)
    memo = exp / ".reconciler" / pass_memo.MEMO_NAME
    for damage in (memo.read_bytes()[:-7], b"", b"\0" * 40, b"not a memo at all"):
        memo.write_bytes(damage)
        assert planned(exp) == (first, False)
    assert planned(exp) == (first, True)


def test_a_new_code_version_plans_again(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = planned(exp)
    monkeypatch.setattr(pass_memo, "code_signature", lambda: "another version")
    assert planned(exp) == (first, False)


class CountingScheduler:
    """Answers as a scheduler with the given jobs would, and counts the questions."""

    capabilities = Capabilities(name="counting", min_poll_seconds=0.0, default_poll_seconds=0.0)

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.queries = 0

    def query(self, tag_prefix: str, job_ids: Collection[str]) -> Snapshot:
        self.queries += 1
        return Snapshot(jobs={j.job_id: j for j in self.jobs if (j.tag or "").startswith(tag_prefix)})


def test_online_plan_asks_the_scheduler_once_and_sees_its_new_answer(exp: Path) -> None:
    log = a_log(exp)
    log.unlink()
    age([log.parent], 500)
    scheduler = CountingScheduler([])
    first, recalled = planned(exp, lambda _: scheduler)
    assert (scheduler.queries, recalled) == (1, False)
    assert planned(exp, lambda _: scheduler) == (first, True) and scheduler.queries == 2
    missing = next(u for u in first.units if u.state != "done")  # its job ended, its log is gone
    scheduler.jobs = [Job(job_id="77", state="RUNNING", tag=tag_for(first.experiment, missing.key))]
    third, recalled = planned(exp, lambda _: scheduler)
    assert not recalled and scheduler.queries == 3  # one question for the check and the pass together
    assert next(u for u in third.units if u.key == missing.key).state == "running"


def test_converged_online_plan_asks_nothing(exp: Path) -> None:
    scheduler = CountingScheduler([])
    planned(exp, lambda _: scheduler)
    assert planned(exp, lambda _: scheduler)[1] and scheduler.queries == 0


@pytest.mark.parametrize("layout", ["top", "adapter_weights", "merged"])
def test_epoch_inputs_hold_every_file_the_final_epoch_check_opens(tmp_path: Path, layout: str) -> None:
    d = tmp_path / "epoch_2"
    d.mkdir()
    (d / "config.json").write_text("{}")
    if layout == "merged":
        (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}')
        safetensors(d / "m-1.safetensors")
        safetensors(d / "m-2.safetensors")
    sub = d / "adapter_weights" if layout == "adapter_weights" else d
    sub.mkdir(exist_ok=True)
    safetensors(sub / "adapter_model.safetensors")
    (sub / "adapter_config.json").write_text('{"r": 4}')
    opened: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith(str(tmp_path)):
            opened.append(args[0])

    sys.addaudithook(hook)  # hooks cannot be removed: this one only records paths under tmp_path
    reader = Reader({})
    assert epoch_evidence(d, final=True, reader=reader).state == "complete"
    assert reader.record is not None and opened and set(opened) <= set(reader.record)


def test_a_pass_opens_and_lists_only_what_its_reader_records(exp: Path) -> None:
    """By construction: every file a pass opens and every directory it lists is in its Reader's record,
    but for the two caches the pass keeps for itself (a header cache entry holds only while its log stats
    as recorded; a job's name, the scheduler's answer, never changes)."""
    a_log(exp).unlink()  # an eval to submit: the plan's notes read its script too
    seen: list[str] = []
    listening = [False]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if listening[0] and event in ("open", "os.scandir", "os.listdir") and args \
                and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]).startswith(str(exp)):
            seen.append(os.fspath(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: this one listens only while `listening`
    desired = load_desired(exp)
    reader = Reader({})
    listening[0] = True
    try:
        result = run_pass(desired, None, policy_of(desired), act=False, presume_empty=True, reader=reader)
    finally:
        listening[0] = False
    assert result.plan.has_changes and reader.record is not None
    state = exp / ".reconciler"
    # The caches' own files, read and then written (a temporary file, its stale siblings swept first).
    own = {p for p in seen if p == str(state) or any(name in p for name in (loop.HEADER_CACHE, loop.JOB_NAMES))}
    assert seen and set(seen) - own <= set(reader.record)


def test_memo_file_is_written_atomically_beside_the_journal(exp: Path) -> None:
    state = exp / ".reconciler"
    killed = state / ".plan-memo.k1ll3dXy.tmp"  # a writer killed before its rename, long ago
    killed.write_bytes(b"half a memo")
    age([killed], 3600)
    running = state / ".plan-memo.runn1ngX.tmp"  # another writer's, now
    running.write_bytes(b"being written")
    planned(exp)
    names = sorted(p.name for p in state.iterdir())
    assert pass_memo.MEMO_NAME in names and [n for n in names if n.endswith(".tmp")] == [running.name]
    assert oct((state / pass_memo.MEMO_NAME).stat().st_mode & 0o777) == "0o644"


def counting_observe(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many passes observed the files (a kept pass is returned without observing)."""
    calls = [0]
    real = loop.observe_files

    def observe_files(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "observe_files", observe_files)
    return calls


def test_a_watch_pass_with_nothing_new_returns_the_last_result(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    observed = counting_observe(monkeypatch)
    desired = load_desired(exp)
    memory = PassMemory()  # the watch's
    scheduler = CountingScheduler([])
    passes = [watch_pass(desired, scheduler, policy_of(desired), act=True, memory=memory) for _ in range(3)]  # type: ignore[arg-type]
    assert observed[0] == 1 and all(p.plan == passes[0].plan for p in passes)
    assert passes[-1].converged and not passes[-1].events
    add_a_log(exp, random.Random(1))
    after = [watch_pass(desired, scheduler, policy_of(desired), act=True, memory=memory) for _ in range(2)]  # type: ignore[arg-type]
    assert observed[0] == 2 and after[0].plan == passes[0].plan  # a complete log still wins


def test_a_watch_pass_keeps_nothing_while_its_inputs_are_racy(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pass_memo, "RACY_NS", 10**18)  # every input changed "just now"
    observed = counting_observe(monkeypatch)
    desired = load_desired(exp)
    memory = PassMemory()  # the watch's
    for _ in range(3):
        watch_pass(desired, None, policy_of(desired), act=False, memory=memory)
    assert observed[0] == 3


def test_a_watch_pass_sees_a_changed_log(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    observed = counting_observe(monkeypatch)
    desired = load_desired(exp)
    memory = PassMemory()  # the watch's
    first = watch_pass(desired, None, policy_of(desired), act=False, memory=memory)
    age(rewrite_log_as_failure(exp, random.Random(2)), 500)
    second = watch_pass(desired, None, policy_of(desired), act=False, memory=memory)
    assert observed[0] == 2 and second.plan != first.plan and second.plan == planned_afresh(exp, presume_empty=False)


def test_a_watch_pass_that_would_act_is_never_kept(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    age(remove_a_log(exp, random.Random(3)), 500)
    observed = counting_observe(monkeypatch)
    desired = load_desired(exp)
    memory = PassMemory()  # the watch's
    scheduler = CountingScheduler([])  # the job of the unit whose log is gone has ended: it is resubmitted
    for _ in range(2):
        result = watch_pass(desired, scheduler, policy_of(desired), act=False, memory=memory)  # type: ignore[arg-type]
        assert result.plan.has_changes
    assert observed[0] == 2


def test_a_watch_pass_asks_again_and_follows_the_answer(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    age(remove_a_log(exp, random.Random(4)), 500)
    desired = load_desired(exp)
    memory = PassMemory()  # the watch's
    journal = Journal(desired.layout.state_dir)
    unit = next(u for u in desired.units if u.kind == "eval" and not (u.log_dir and any(u.log_dir.glob("*.eval"))))
    journal.append("submitted", unit=unit.key, job_id="88", fingerprint=unit.fingerprint, after=[])
    age([journal.path], 400)
    scheduler = CountingScheduler([Job(job_id="88", state="RUNNING", tag=tag_for(desired.experiment, unit.key))])
    observed = counting_observe(monkeypatch)
    first = watch_pass(desired, scheduler, policy_of(desired), act=False, memory=memory)  # type: ignore[arg-type]
    again = watch_pass(desired, scheduler, policy_of(desired), act=False, memory=memory)  # type: ignore[arg-type]
    assert (observed[0], scheduler.queries) == (1, 2) and again.plan == first.plan
    scheduler.jobs = [Job(job_id="88", state="PENDING", tag=tag_for(desired.experiment, unit.key))]
    third = watch_pass(desired, scheduler, policy_of(desired), act=False, memory=memory)  # type: ignore[arg-type]
    assert (observed[0], scheduler.queries) == (2, 3)
    assert next(u for u in third.plan.units if u.key == unit.key).state == "queued"


def test_a_recalled_plan_with_pending_actions_still_exits_2(exp: Path) -> None:
    age(remove_a_log(exp, random.Random(5)), 500)  # its job ended: the eval is resubmitted
    runner = CliRunner()
    memo = exp / ".reconciler" / pass_memo.MEMO_NAME
    argv = ["plan", str(exp), "--backend", "local", "--detailed-exitcode", "--format", "json"]
    first = runner.invoke(main, argv)
    written = memo.stat().st_mtime_ns
    second = runner.invoke(main, argv)
    assert (first.exit_code, second.exit_code) == (2, 2), first.output
    assert second.stdout == first.stdout and '"resubmit"' in second.stdout  # warnings go to stderr
    assert memo.stat().st_mtime_ns == written  # recalled, not planned and written again
