"""Read inspect-ai `.eval` headers (cached by path, size and mtime) and decide which log completes a unit."""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from reconciler.observe.reader import Reader

if sys.version_info < (3, 14):
    import zipfile_zstd  # noqa: F401  (patches zipfile for zstd members; inspect-ai depends on it)

LogState = Literal["complete", "partial", "started", "error", "cancelled", "unreadable"]

READ_TRIES = 3


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What one `.eval` file says, reduced to what the reconciler and the reports need."""

    path: str
    state: LogState
    status: str
    task: str = ""
    created: str = ""
    run: str | None = None
    epoch: int | None = None
    unit: str | None = None
    fingerprint: str | None = None
    completed: int | None = None
    total: int | None = None
    metric: str | None = None
    value: float | None = None
    error: str | None = None
    mtime: float = 0.0
    # What attributes a log nobody tagged (see attribution.py): the model it loaded and how it was named.
    model: str = ""  # --model, e.g. the workflows' hf/{run}_epoch_{N}
    model_path: str | None = None  # -M model_path=...
    checkpoint: str | None = None  # the reconciler's --metadata checkpoint=<epoch dir>
    finetuned: bool | None = None  # cruijff_kit's --metadata is_finetuned (v0.2: finetuned)
    vis_label: str | None = None  # -T vis_label=... (cruijff_kit's tasks name themselves {task}_{vis_label})


def classify(header: dict[str, Any], path: str, mtime: float) -> LogSummary:
    """Complete = success, every sample done, and no --limit / --sample-id (inspect exits 0 on error)."""
    ev = header.get("eval") or {}
    results = header.get("results") or {}
    status = header.get("status", "started")
    config = ev.get("config") or {}
    meta = ev.get("metadata") or {}
    completed, total = results.get("completed_samples"), results.get("total_samples")
    if status == "success":
        full = completed is not None and completed == total and config.get("limit") is None \
            and config.get("sample_id") is None
        state: LogState = "complete" if full else "partial"
    elif status in ("started", "error", "cancelled"):
        state = status
    else:
        state = "unreadable"
    metric, value = _headline(results)
    epoch = meta.get("epoch")
    error = (header.get("error") or {}).get("message") if header.get("error") else None
    model_args = ev.get("model_args") or {}
    task_args = ev.get("task_args") or {}
    finetuned = meta.get("is_finetuned", meta.get("finetuned"))
    return LogSummary(
        path=path, state=state, status=status, task=str(ev.get("task", "")), created=str(ev.get("created", "")),
        run=_str_or_none(meta.get("run")), epoch=_epoch(epoch),
        unit=_str_or_none(meta.get("reconciler_unit")), fingerprint=_fingerprint(meta.get("reconciler_fingerprint")),
        completed=completed, total=total, metric=metric, value=value,
        error=error.splitlines()[0][:300] if error else None, mtime=mtime,
        model=str(ev.get("model") or ""), model_path=_str_or_none(model_args.get("model_path")),
        checkpoint=_str_or_none(meta.get("checkpoint")),
        finetuned=finetuned if isinstance(finetuned, bool) else None,
        vis_label=_str_or_none(task_args.get("vis_label")),
    )


def _epoch(value: Any) -> int | None:
    """An epoch from --metadata: inspect YAML-parses it, so `epoch=0` is 0; a quoted "0" is taken too."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _fingerprint(value: Any) -> str | None:
    """Written as `fp-<hex>`: inspect YAML-parses --metadata, and an all-digit hex would become an int."""
    if value is None:
        return None
    text = str(value)
    return text[3:] if text.startswith("fp-") else text


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _headline(results: dict[str, Any]) -> tuple[str | None, float | None]:
    scores = results.get("scores") or []
    if not scores:
        return None, None
    chosen = scores[0]
    headline = results.get("headline") or {}
    if headline:
        chosen = next((s for s in scores if s.get("name") == headline.get("score")), chosen)
        metric = (chosen.get("metrics") or {}).get(headline.get("metric"))
        if metric:
            return metric.get("name"), metric.get("value")
    metrics = chosen.get("metrics") or {}
    for name in ("accuracy", "mean"):
        if name in metrics:
            return name, metrics[name].get("value")
    if metrics:
        first = next(iter(metrics.values()))
        return first.get("name"), first.get("value")
    return None, None


def read_header(path: Path, reader: Reader | None = None) -> dict[str, Any]:
    """The header of a `.eval` zip; a running log has only `_journal/start.json`.

    Read with the standard zipfile rather than inspect's reader: it opens the file once, so a
    writer replacing the file mid-read cannot make it fail half-way (inspect-ai.md, point 5).
    """
    with (reader or Reader()).open(path) as fh, zipfile.ZipFile(fh) as z:
        names = set(z.namelist())
        if "header.json" in names:
            return json.loads(z.read("header.json"))
        start = json.loads(z.read("_journal/start.json"))
        return {"status": "started", "eval": start.get("eval") or {}, "results": None, "error": None}


# Cache files as a watch last read or wrote them, by path (mtime_ns, size, entries, built): kept by the
# watch from pass to pass (engine.loop.PassMemory) and handed to each pass's HeaderCache, so a watch
# parses its cache once, not every pass (55 MB of JSON at 100k units). Another writer changes mtime and size.
LoadedCaches = dict[str, tuple[int, int, dict[str, list[Any]], dict[str, tuple[list[Any], LogSummary]]]]

# The cache file: {"format": 2, "fields": [...], "logs": {path: [size, mtime_ns, [field values]]}}.
# Values by position, the path only as the key: half the size of named fields, half the time to
# parse (a new process parses it whole). A file of another format or field list is not read.
CACHE_FORMAT = 2
_CACHED_FIELDS = [f.name for f in fields(LogSummary) if f.name != "path"]


class HeaderCache:
    """Headers keyed by path, valid while size and mtime are unchanged: a re-plan stats, not reads.

    The cache's own file is read directly, not through a pass's Reader: every entry is checked
    against its log's stat, which the Reader records, so what the file holds cannot change a plan."""

    def __init__(self, path: Path | None, loaded: LoadedCaches | None = None):
        """`loaded`: the cache files as the caller (a watch) last saw them; None: parse the file afresh."""
        self.path = path
        self.loaded: LoadedCaches = {} if loaded is None else loaded
        self.entries: dict[str, list[Any]] = {}
        # The LogSummary made from each entry, with the entry it was made from: building one costs
        # more than the stat that validates it, and a watch's passes hit the same entries every time.
        self.built: dict[str, tuple[list[Any], LogSummary]] = {}
        self.dirty = False
        self.reads = 0
        if path is not None:
            try:
                st = os.stat(path)
                known = self.loaded.get(str(path))
                if known is not None and known[:2] == (st.st_mtime_ns, st.st_size):
                    # a watch's next pass: the file is as this process left it
                    self.entries, self.built = known[2], known[3]
                else:
                    self.entries = _entries_of(json.loads(path.read_text()))
                    self.loaded[str(path)] = (st.st_mtime_ns, st.st_size, self.entries, self.built)
            except (OSError, ValueError):
                self.entries = {}

    def summary(self, path: Path | str, st: os.stat_result, reader: Reader) -> LogSummary:
        # Keyed by the path string: a warm pass never builds a Path (parsing one costs more than the stat).
        key = str(path)
        hit = self.entries.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            built = self.built.get(key)
            if built is not None and built[0] is hit:
                return built[1]
            try:
                cached = LogSummary(key, *hit[2])
            except TypeError:
                cached = None  # an entry damaged by hand: read the header again
            if cached is not None:
                self.built[key] = (hit, cached)
                return cached
        summary = _read_with_retry(Path(key), st.st_mtime, reader)
        self.reads += 1
        # Unreadable now may be readable in a moment (being written): do not cache it.
        if summary.state != "unreadable":
            self.entries[key] = [st.st_size, st.st_mtime_ns, [getattr(summary, name) for name in _CACHED_FIELDS]]
            self.dirty = True
        return summary

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from reconciler.fsutil import atomic_write_text

        document = {"format": CACHE_FORMAT, "fields": _CACHED_FIELDS, "logs": self.entries}
        try:
            atomic_write_text(self.path, json.dumps(document, separators=(",", ":")))
            st = os.stat(self.path)
        except OSError:
            return  # a full disk or a read-only dir: only a cache, the next pass reads the headers again
        self.loaded[str(self.path)] = (st.st_mtime_ns, st.st_size, self.entries, self.built)
        self.dirty = False


def _entries_of(document: Any) -> dict[str, list[Any]]:
    """The entries of a cache file this version wrote; none from any other (they are read again)."""
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT \
            or document.get("fields") != _CACHED_FIELDS or not isinstance(document.get("logs"), dict):
        return {}
    return {key: entry for key, entry in document["logs"].items()
            if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], list)}


def _read_with_retry(path: Path, mtime: float, reader: Reader) -> LogSummary:
    last = ""
    for attempt in range(READ_TRIES):
        try:
            return classify(read_header(path, reader), str(path), mtime)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, TypeError, AttributeError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            if attempt < READ_TRIES - 1:
                time.sleep(0.05)
    return LogSummary(path=str(path), state="unreadable", status="unreadable", error=last[:300], mtime=mtime)


def scan_dir(log_dir: Path | str, cache: HeaderCache, reader: Reader | None = None) -> list[LogSummary]:
    """Every `.eval` log in a directory (inspect's `.inspect_tmp_*` files are skipped)."""
    out = []
    read = reader or Reader()
    try:
        entries = read.scandir(log_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    summary, entry_stat = cache.summary, read.entry_stat
    for entry in entries:
        name = entry.name
        if name.endswith(".eval") and not name.startswith("."):
            try:
                st = entry_stat(entry)
            except FileNotFoundError:
                continue
            out.append(summary(entry.path, st, read))
    return out


# How a log that is not complete ranks against another (a complete log always wins).
_RANK = {"complete": 3, "partial": 1, "started": 2, "error": 1, "cancelled": 1, "unreadable": 0}


def _best_key(s: LogSummary) -> tuple[bool, int, str, float]:
    return s.state == "complete", _RANK[s.state] if s.state != "complete" else 0, s.created, s.mtime


def best_log(logs: list[LogSummary]) -> LogSummary | None:
    """A complete log wins over any failed one, whatever their order; then the newest."""
    if not logs:
        return None
    if len(logs) == 1 and logs[0].state in _RANK:
        return logs[0]  # the usual case; a state outside _RANK still raises below, as it always did
    return max(logs, key=_best_key)
