"""Evidence from files: checkpoint completeness, .eval headers (cached), the journal and its lock."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from reconciler.errors import LockHeld
from reconciler.journal import Journal, experiment_lock
from reconciler.observe.checkpoints import epoch_evidence
from reconciler.observe.evallogs import HeaderCache, best_log, scan_dir


def safetensors(path: Path, n_floats: int = 4, truncate: int = 0) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats)
    path.write_bytes(data[: len(data) - truncate])


def final_epoch(d: Path, truncate: int = 0) -> Path:
    d.mkdir(parents=True)
    safetensors(d / "adapter_model.safetensors", truncate=truncate)
    (d / "adapter_config.json").write_text('{"r": 4}')
    (d / "config.json").write_text("{}")
    return d


def test_bare_epoch_directory_is_not_done(tmp_path: Path) -> None:
    (tmp_path / "epoch_0").mkdir()
    assert epoch_evidence(tmp_path / "epoch_0", final=False).state == "partial"
    assert epoch_evidence(tmp_path / "epoch_0", final=True).state == "partial"
    assert epoch_evidence(tmp_path / "epoch_9", final=False).state == "absent"


def test_non_final_epoch_is_done_when_recipe_state_is_written(tmp_path: Path) -> None:
    d = final_epoch(tmp_path / "epoch_0")
    assert epoch_evidence(d, final=False).state == "partial"
    (d / "recipe_state.pt").write_bytes(b"x")
    assert epoch_evidence(d, final=False).state == "complete"


def test_final_epoch_needs_whole_adapter_files(tmp_path: Path) -> None:
    assert epoch_evidence(final_epoch(tmp_path / "a"), final=True).state == "complete"
    half = final_epoch(tmp_path / "b", truncate=5)
    ev = epoch_evidence(half, final=True)
    assert ev.state == "partial" and "shorter" in ev.detail
    bad = final_epoch(tmp_path / "c")
    (bad / "adapter_config.json").write_text('{"r": ')
    assert epoch_evidence(bad, final=True).state == "partial"


def test_final_epoch_with_the_adapter_config_in_adapter_weights_is_complete(tmp_path: Path) -> None:
    d = final_epoch(tmp_path / "epoch_1")
    (d / "adapter_weights").mkdir()
    (d / "adapter_config.json").rename(d / "adapter_weights" / "adapter_config.json")
    ev = epoch_evidence(d, final=True)
    assert ev.state == "complete"
    # When torchtune wrote the epoch: its own files, not the copies of the base model's.
    assert ev.mtime == max((d / "adapter_weights" / "adapter_config.json").stat().st_mtime,
                           (d / "adapter_model.safetensors").stat().st_mtime)


def eval_log(path: Path, status: str = "success", completed: int = 20, total: int = 20, limit: int | None = None,
             created: str = "2026-01-01T00:00:00+00:00", value: float = 0.5, header: bool = True) -> Path:
    ev = {"task": "capitalization", "created": created, "config": {"limit": limit},
          "metadata": {"epoch": 0, "reconciler_unit": "eval/r/t/epoch0", "reconciler_fingerprint": "fp-0123"}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("_journal/start.json", json.dumps({"eval": ev}))
        if header:
            z.writestr("header.json", json.dumps({
                "status": status, "eval": ev,
                "results": {"completed_samples": completed, "total_samples": total,
                            "scores": [{"name": "match", "metrics": {"accuracy": {"name": "accuracy", "value": value}}}],
                            "headline": {"score": "match", "metric": "accuracy"}},
                "error": {"message": "boom\ntrace"} if status == "error" else None}))
    return path


def test_eval_log_states(tmp_path: Path) -> None:
    eval_log(tmp_path / "a.eval")
    eval_log(tmp_path / "b.eval", limit=2, completed=2, total=2)
    eval_log(tmp_path / "c.eval", status="error")
    eval_log(tmp_path / "d.eval", header=False)
    (tmp_path / "e.eval").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / ".inspect_tmp_x.eval.writing").write_bytes(b"")
    logs = {Path(s.path).name: s for s in scan_dir(tmp_path, HeaderCache(None))}
    assert logs["a.eval"].state == "complete" and logs["a.eval"].value == 0.5
    assert logs["a.eval"].fingerprint == "0123"  # the fp- prefix keeps YAML from reading it as a number
    assert logs["b.eval"].state == "partial"  # --limit is never a complete eval
    assert logs["c.eval"].state == "error" and logs["c.eval"].error == "boom"
    assert logs["d.eval"].state == "started"
    assert logs["e.eval"].state == "unreadable"
    assert len(logs) == 5


def test_successful_log_wins_whatever_the_order(tmp_path: Path) -> None:
    old_ok = eval_log(tmp_path / "1.eval", created="2026-01-01T00:00:00+00:00")
    eval_log(tmp_path / "2.eval", status="error", created="2026-01-02T00:00:00+00:00")
    best = best_log(scan_dir(tmp_path, HeaderCache(None)))
    assert best is not None and best.path == str(old_ok)
    for p in tmp_path.iterdir():
        p.unlink()
    eval_log(tmp_path / "1.eval", status="error", created="2026-01-01T00:00:00+00:00")
    new_ok = eval_log(tmp_path / "2.eval", created="2026-01-02T00:00:00+00:00")
    best = best_log(scan_dir(tmp_path, HeaderCache(None)))
    assert best is not None and best.path == str(new_ok)


def test_header_cache_reads_each_log_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(5):
        eval_log(logs / f"{i}.eval")
    cache_file = tmp_path / "cache.json"
    cache = HeaderCache(cache_file)
    scan_dir(logs, cache)
    cache.save()
    assert cache.reads == 5
    warm = HeaderCache(cache_file)
    assert len(scan_dir(logs, warm)) == 5
    assert warm.reads == 0
    eval_log(logs / "0.eval", status="error")  # rewritten: size/mtime change, read again
    scan_dir(logs, warm)
    assert warm.reads == 1


def test_header_cache_file_read_by_a_new_process_gives_the_same_summaries(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    eval_log(logs / "a.eval", value=0.75)
    eval_log(logs / "b.eval", status="error")
    cache_file = tmp_path / "cache.json"
    cache = HeaderCache(cache_file)
    first = sorted(scan_dir(logs, cache), key=lambda s: s.path)
    cache.save()
    again = HeaderCache(cache_file)
    assert sorted(scan_dir(logs, again), key=lambda s: s.path) == first
    assert again.reads == 0


def test_header_cache_of_another_format_or_damaged_is_read_again(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    eval_log(logs / "a.eval")
    st = (logs / "a.eval").stat()
    cache_file = tmp_path / "cache.json"
    # The first format: named fields under each path.
    cache_file.write_text(json.dumps({str(logs / "a.eval"): {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                             "summary": {"state": "error"}}}))
    old = HeaderCache(cache_file)
    assert [s.state for s in scan_dir(logs, old)] == ["complete"] and old.reads == 1
    old.save()
    document = json.loads(cache_file.read_text())
    document["logs"][str(logs / "a.eval")][2] = ["complete"] * 40  # damaged by hand
    cache_file.write_text(json.dumps(document))
    damaged = HeaderCache(cache_file)
    assert [s.state for s in scan_dir(logs, damaged)] == ["complete"] and damaged.reads == 1


def test_journal_survives_a_line_cut_short(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("intent", unit="finetune/a", fingerprint="f", tag="t")
    journal.append("submitted", unit="finetune/a", job_id="7", fingerprint="f")
    with open(journal.path, "a") as fh:
        fh.write('{"event": "submitted", "unit": "finetune/b", "job_')  # a crash mid-write
    journal.append("submitted", unit="finetune/c", job_id="9", fingerprint="f")
    view = journal.read()
    assert view.history("finetune/a").jobs == [("7", "f")]
    assert view.history("finetune/c").jobs == [("9", "f")]
    assert "finetune/b" not in view.units


def test_open_intent_without_job_id_is_visible(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("intent", unit="finetune/a", fingerprint="f", tag="t")
    assert journal.read().history("finetune/a").open_intent


def test_lock_refuses_a_second_reconciler(tmp_path: Path) -> None:
    with experiment_lock(tmp_path):
        import subprocess
        import sys

        code = ("from pathlib import Path; from reconciler.journal import experiment_lock\n"
                f"with experiment_lock(Path({str(tmp_path)!r})): pass")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0 and "another reconciler" in proc.stderr
    with experiment_lock(tmp_path):
        pass  # released with its holder


def test_lock_error_names_the_holder(tmp_path: Path) -> None:
    import multiprocessing

    ready = multiprocessing.Event()
    done = multiprocessing.Event()

    def hold() -> None:
        with experiment_lock(tmp_path):
            ready.set()
            done.wait(10)

    proc = multiprocessing.get_context("fork").Process(target=hold)
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockHeld, match=r"pid \d+"):
            with experiment_lock(tmp_path):
                pass
    finally:
        done.set()
        proc.join()
