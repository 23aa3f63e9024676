"""Real inspect-ai `.eval` logs for the benchmarks: one made by a real `inspect eval` run, then copied.

`make_template` runs `inspect eval` once on `assets/sleep_task.py` (8 samples, no sleep) and keeps
the log. `EvalCopier` writes copies of it under other names, with the header fields the reconciler
reads set per unit (`eval.task`, `eval.created`, `eval.metadata.run/epoch/reconciler_unit/
reconciler_fingerprint`, `status`, `error`). Every other member (samples, summaries, reductions) is
copied byte for byte, still zstd-compressed, so a copy has the size and the zip directory of the
original and costs a header read exactly what a real log costs.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import zstandard

if sys.version_info < (3, 14):
    import zipfile_zstd  # noqa: F401  (zstd members, as inspect writes them)

ASSETS = Path(__file__).resolve().parent / "assets"
SLEEP_TASK = ASSETS / "sleep_task.py"

ZSTD = 93  # the zip method id inspect-ai writes

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")


def write_task_data(path: Path, eval_seconds: float, samples: int = 8) -> None:
    """The JSON the sleep task (and the sleep trainer) read: train/validation/test splits."""
    records = [{"input": f"word{i}", "output": f"Word{i}"} for i in range(samples)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"eval_seconds": eval_seconds, "train": records, "validation": records[:2],
                                "test": records}, indent=1) + "\n")


def make_template(workdir: Path) -> Path:
    """Run `inspect eval` once (about 4 s) and return its log; reused while it exists."""
    logs = workdir / "logs"
    found = sorted(logs.glob("*.eval")) if logs.is_dir() else []
    if found:
        return found[-1]
    data = workdir / "data.json"
    write_task_data(data, eval_seconds=0.0)
    argv = [
        str(Path(sys.executable).parent / "inspect"), "eval", f"{SLEEP_TASK}@sleepy",
        "--model", "mockllm/model", "-M", "model_path=/placeholder/epoch_0",
        "-T", f"data_path={data}", "-T", "config_path=/placeholder/eval.yaml", "-T", "vis_label=template",
        "--metadata", "run=template", "--metadata", "epoch=0", "--metadata", "is_finetuned=true",
        "--metadata", "source_model=template", "--metadata", "reconciler_unit=eval/template/sleepy/epoch0",
        "--metadata", "reconciler_fingerprint=fp-0000000000000000", "--seed", "14", "--log-dir", str(logs),
    ]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    found = sorted(logs.glob("*.eval"))
    if done.returncode != 0 or not found:
        raise RuntimeError(f"inspect eval failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with zipfile.ZipFile(found[-1]) as z:
        header = json.loads(z.read("header.json"))
    if header.get("status") != "success":
        raise RuntimeError(f"the template log says {header.get('status')}: {header.get('error')}")
    return found[-1]


class EvalCopier:
    """Writes copies of one real `.eval` log with per-unit header fields (a raw zip copy)."""

    def __init__(self, template: Path):
        self.template = template
        self.members: list[tuple[zipfile.ZipInfo, bytes]] = []
        with zipfile.ZipFile(template) as z, open(template, "rb") as fh:
            self.header: dict[str, Any] = json.loads(z.read("header.json"))
            self.start: dict[str, Any] = json.loads(z.read("_journal/start.json"))
            for info in z.infolist():
                fh.seek(info.header_offset)
                local = fh.read(_LOCAL.size)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + _LOCAL.size + name_len + extra_len)
                self.members.append((info, fh.read(info.compress_size)))
        self.size = template.stat().st_size
        self._zstd = zstandard.ZstdCompressor(level=3)

    def _compress(self, compress_type: int, data: bytes) -> bytes:
        if compress_type == ZSTD:
            return self._zstd.compress(data)  # one frame, as zipfile_zstd's reader expects
        if compress_type == zipfile.ZIP_DEFLATED:
            co = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            return co.compress(data) + co.flush()
        if compress_type == zipfile.ZIP_STORED:
            return data
        raise ValueError(f"{self.template}: compression type {compress_type} is not supported by the copier")

    def header_for(self, *, task: str, created: str, eval_id: str, metadata: dict[str, Any],
                   model_path: str, status: str = "success") -> tuple[dict[str, Any], dict[str, Any]]:
        # Shallow copies down to what changes: the rest is shared with the template, never mutated.
        header, start = dict(self.header), dict(self.start)
        for doc in (header, start):
            ev = doc["eval"] = dict(doc["eval"])
            ev["task"] = task
            ev["created"] = created
            ev["eval_id"] = eval_id
            ev["metadata"] = dict(metadata)
            ev["model_args"] = {**(ev.get("model_args") or {}), "model_path": model_path}
        if status == "error":
            header["status"] = "error"
            header["results"] = None
            header["error"] = {"message": "RuntimeError: CUDA error: an illegal memory access was encountered",
                               "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error",
                               "traceback_ansi": ""}
        return header, start

    def write(self, path: Path, header: dict[str, Any], start: dict[str, Any]) -> int:
        replaced = {
            "header.json": json.dumps(header).encode(),
            "_journal/start.json": json.dumps(start).encode(),
        }
        out = bytearray()
        central = bytearray()
        for info, raw in self.members:
            flags = info.flag_bits & ~0x08  # sizes go in the local header: no data descriptor
            crc, file_size = info.CRC, info.file_size
            data = replaced.get(info.filename)
            if data is not None:
                crc, file_size = zlib.crc32(data), len(data)
                raw = self._compress(info.compress_type, data)
            name = info.filename.encode("utf-8")
            dostime = info.date_time[3] << 11 | info.date_time[4] << 5 | info.date_time[5] // 2
            dosdate = (info.date_time[0] - 1980) << 9 | info.date_time[1] << 5 | info.date_time[2]
            offset = len(out)
            out += _LOCAL.pack(b"PK\x03\x04", info.extract_version, info.reserved, flags, info.compress_type,
                               dostime, dosdate, crc, len(raw), file_size, len(name), 0)
            out += name
            out += raw
            central += _CENTRAL.pack(b"PK\x01\x02", info.create_version, info.create_system, info.extract_version,
                                     info.reserved, flags, info.compress_type, dostime, dosdate, crc, len(raw),
                                     file_size, len(name), 0, 0, 0, info.internal_attr, info.external_attr, offset)
            central += name
        cd_offset = len(out)
        out += central
        out += _END.pack(b"PK\x05\x06", 0, 0, len(self.members), len(self.members), len(central), cd_offset, 0)
        with open(path, "wb") as fh:
            fh.write(out)
        return len(out)
