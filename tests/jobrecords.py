"""The local backend's jobs read straight from its record files, for tests that check that backend.

`reconciler.backends.local.backend.LocalBackend.query` is what the reconciler believes; a test that counts
jobs through it would check the backend against itself. This reader opens
`{experiment}/.reconciler/local/jobs/{id}.json` with `json` and nothing of the backend's: the files a
job's supervisor wrote are the evidence. A record that cannot be read is reported as a job in the
state UNREADABLE (so it is counted, never skipped).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from reconciler.jobs import Job

UNREADABLE = "UNREADABLE"


def record_files(exp: Path) -> list[Path]:
    jobs = exp / ".reconciler" / "local" / "jobs"
    return sorted(jobs.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0) if jobs.is_dir() else []


def local_jobs(exp: Path, experiment: str) -> dict[str, list[Job]]:
    """Every job of this experiment the local scheduler ever recorded, by unit key (from the tag), oldest first."""
    prefix = f"reconciler:{experiment}:"
    out: dict[str, list[Job]] = defaultdict(list)
    for path in record_files(exp):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out[f"<unreadable {path.name}>"].append(Job(job_id=path.stem, state=UNREADABLE))
            continue
        tag = rec.get("tag") or ""
        if not tag.startswith(prefix):
            continue
        out[tag[len(prefix):]].append(Job(
            job_id=str(rec["job_id"]), state=rec["state"], name=rec.get("name", ""), tag=tag,
            reason=rec.get("reason"), exit_code=rec.get("exit_code"), submitted_at=rec.get("submitted_at"),
            started_at=rec.get("started_at"), ended_at=rec.get("ended_at"),
            depends_on=tuple(rec.get("depends_on") or ()),
        ))
    return dict(out)
