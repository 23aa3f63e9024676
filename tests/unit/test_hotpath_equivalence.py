"""The fast paths of a pass (journal fold, job order, best log, the built-summary memo) against the
plain code they replaced: the same result for every input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.jobs import LIVE_STATES, TERMINAL_STATES, Job, job_order
from reconciler.journal import JournalView, UnitHistory, _fold
from reconciler.observe.evallogs import HeaderCache, LogSummary, best_log, scan_dir
from reconciler.observe.observation import UNKNOWN, _ordered
from tests.unit.test_observe import eval_log

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_fold(view: JournalView, rec: dict[str, Any]) -> None:
    """_fold as it was before its fast path (a set per record, setdefault per record)."""
    event = rec.get("event")
    key = rec.get("unit")
    if event == "intent" and isinstance(key, str):
        view.units.setdefault(key, UnitHistory()).open_intent = True
    elif event in ("submitted", "adopted") and isinstance(key, str) and rec.get("job_id"):
        h = view.units.setdefault(key, UnitHistory())
        job = str(rec["job_id"])
        if job not in {j for j, _ in h.jobs}:
            h.jobs.append((job, rec.get("fingerprint")))
        h.open_intent = False
    elif event in ("submit_failed", "submit_deferred") and isinstance(key, str):
        h = view.units.setdefault(key, UnitHistory())
        h.open_intent = False
        if event == "submit_failed":
            h.submit_failures.append((rec.get("fingerprint"), str(rec.get("error") or "")))
    elif event == "job_state" and rec.get("job_id") and rec.get("state") in TERMINAL_STATES:
        view.terminal[str(rec["job_id"])] = rec["state"]
        view.exit_codes[str(rec["job_id"])] = rec.get("exit_code")
    elif event == "cancelled" and rec.get("job_id"):
        view.cancelled.add(str(rec["job_id"]))
    elif event == "remedy":
        view.remedies.append(rec)  # every one, whatever its unit: as the summary once read them from the file
        if isinstance(key, str):
            view.units.setdefault(key, UnitHistory()).last_remedy = rec


def optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just("absent"), values)


EVENTS = st.sampled_from(["intent", "submitted", "adopted", "submit_failed", "submit_deferred", "job_state",
                          "cancelled", "remedy", "other"]) | st.none() | st.integers(0, 2)
RECORDS = st.fixed_dictionaries({
    "event": optional(EVENTS),
    "unit": optional(st.sampled_from(["finetune/a", "eval/a/t/epoch0", "eval/b/t/base"]) | st.none() | st.just(3)),
    "job_id": optional(st.sampled_from(["7", "8", "9_1", ""]) | st.integers(0, 9) | st.none()),
    "fingerprint": optional(st.sampled_from(["f", "g"]) | st.none()),
    "state": optional(st.sampled_from(sorted(TERMINAL_STATES) + ["RUNNING", "PENDING"]) | st.none()),
    "exit_code": optional(st.sampled_from([0, 1, None])),
    "error": optional(st.sampled_from(["boom", ""]) | st.none()),
}).map(lambda rec: {k: v for k, v in rec.items() if v != "absent"})


@SETTINGS
@given(st.lists(RECORDS, max_size=30))
def test_fold_matches_the_plain_fold(records: list[dict[str, Any]]) -> None:
    got, want = JournalView(), JournalView()
    for rec in records:
        _fold(got, rec)
        reference_fold(want, rec)
    assert (got.units, got.terminal, got.exit_codes, got.cancelled, got.remedies) == \
        (want.units, want.terminal, want.exit_codes, want.cancelled, want.remedies)
    assert list(got.units) == list(want.units)  # the same order too: reports list units as found


def reference_ordered(jobs: dict[str, Job], journal: JournalView) -> tuple[Job, ...]:
    def ended_cancel(j: Job) -> bool:
        return j.job_id in journal.cancelled and not j.live and j.state != UNKNOWN

    return tuple(sorted((j for j in jobs.values() if not ended_cancel(j)), key=lambda j: job_order(j.job_id)))


JOB_IDS = st.sampled_from(["7", "12", "100", "12_3", "abc", "9_x", "²"])
JOBS = st.builds(Job, job_id=JOB_IDS,
                 state=st.sampled_from(sorted(LIVE_STATES) + sorted(TERMINAL_STATES) + [UNKNOWN, "GONE"]))


def outcome(fn: Any, *args: Any) -> Any:
    """The result, or the type of the exception."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


@SETTINGS
@given(st.lists(JOBS, max_size=4), st.sets(JOB_IDS, max_size=3))
def test_job_order_matches_the_plain_sort(jobs: list[Job], cancelled: set[str]) -> None:
    by_id = {j.job_id: j for j in jobs}
    view = JournalView(cancelled=cancelled)
    assert outcome(_ordered, by_id, view) == outcome(reference_ordered, by_id, view)


def test_a_job_id_with_non_ascii_digits_is_ordered_not_a_crash() -> None:
    # "²".isdigit() is true and int("²") raises: such an id (a corrupt journal) once failed every pass.
    jobs = {"²": Job(job_id="²", state="COMPLETED"), "7": Job(job_id="7", state="FAILED")}
    assert [j.job_id for j in _ordered(jobs, JournalView())] == ["²", "7"]
    assert _ordered({"²": jobs["²"]}, JournalView()) == (jobs["²"],)


def reference_best(logs: list[LogSummary]) -> LogSummary | None:
    if not logs:
        return None
    rank = {"complete": 3, "partial": 1, "started": 2, "error": 1, "cancelled": 1, "unreadable": 0}
    return max(logs, key=lambda s: (s.state == "complete", rank[s.state] if s.state != "complete" else 0,
                                    s.created, s.mtime))


LOGS = st.builds(LogSummary, path=st.sampled_from(["/a.eval", "/b.eval"]),
                 state=st.sampled_from(["complete", "partial", "started", "error", "cancelled", "unreadable", "odd"]),
                 status=st.just("x"), created=st.sampled_from(["", "2026-01-01", "2026-01-02"]),
                 mtime=st.sampled_from([0.0, 1.0]))


@SETTINGS
@given(st.lists(LOGS, max_size=4))
def test_best_log_matches_the_plain_max(logs: list[LogSummary]) -> None:
    got, want = outcome(best_log, logs), outcome(reference_best, logs)
    assert got == want
    if isinstance(want, LogSummary):
        assert got is want  # the very log, not an equal one: its position decides ties


def test_a_rewritten_log_is_not_answered_from_the_built_summary(tmp_path: Path) -> None:
    """A watch's passes share the cache's entries and the summaries built from them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    eval_log(logs / "0.eval")
    cache_file = tmp_path / "cache.json"
    first = HeaderCache(cache_file)
    scan_dir(logs, first)
    first.save()
    for _ in range(2):  # the second pass builds the summary from the entry, the third reuses it
        again = HeaderCache(cache_file)
        assert scan_dir(logs, again) == scan_dir(logs, HeaderCache(None)) and again.reads == 0
    eval_log(logs / "0.eval", status="error")  # size and mtime change
    rewritten = HeaderCache(cache_file)
    assert [s.state for s in scan_dir(logs, rewritten)] == ["error"] and rewritten.reads == 1
    rewritten.save()
    after = HeaderCache(cache_file)
    assert scan_dir(logs, after) == scan_dir(logs, HeaderCache(None)) and after.reads == 0


@pytest.mark.parametrize("state", ["complete", "odd"])
def test_a_single_log_is_best_unless_its_state_is_unknown(state: str) -> None:
    log = LogSummary(path="/a.eval", state=state, status="x")  # type: ignore[arg-type]
    assert outcome(best_log, [log]) == outcome(reference_best, [log])
