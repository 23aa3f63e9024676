"""Read and write float32 tensors in the safetensors format with the standard library only."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tensor:
    """A dense row-major float32 tensor: its shape and its flat values."""

    shape: tuple[int, ...]
    values: list[float]

    def __post_init__(self) -> None:
        if math.prod(self.shape) != len(self.values):
            raise ValueError(f"shape {self.shape} does not hold {len(self.values)} values")

    def rows(self) -> list[list[float]]:
        """The tensor as a list of rows (2-D tensors only)."""
        if len(self.shape) != 2:
            raise ValueError(f"rows() needs a 2-D tensor, not shape {self.shape}")
        n_rows, n_cols = self.shape
        return [self.values[r * n_cols : (r + 1) * n_cols] for r in range(n_rows)]

    @classmethod
    def from_rows(cls, rows: list[list[float]]) -> Tensor:
        """A 2-D tensor from a list of equally long rows."""
        n_cols = len(rows[0]) if rows else 0
        return cls((len(rows), n_cols), [v for row in rows for v in row])


def encode(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes: u64 LE header length, JSON header, then raw LE float32 data."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        data = struct.pack(f"<{len(tensor.values)}f", *tensor.values)
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    # the reference writer pads the header with spaces so the data starts 8-byte aligned
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def decode(blob: bytes, source: str = "<bytes>") -> tuple[dict[str, Tensor], dict[str, str]]:
    """Parse safetensors bytes into (tensors, metadata); ValueError if anything is off."""
    if len(blob) < 8:
        raise ValueError(f"{source}: too short for a safetensors file ({len(blob)} bytes)")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise ValueError(f"{source}: header length {header_len} exceeds the file size")
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}: header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{source}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = blob[8 + header_len :]
    tensors: dict[str, Tensor] = {}
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: bad header entry for {name!r}") from exc
        if dtype != "F32":
            raise ValueError(f"{source}: {name} has dtype {dtype}; only F32 is supported")
        count = math.prod(shape)
        if not 0 <= start <= end <= len(data) or end - start != 4 * count:
            raise ValueError(f"{source}: {name} data offsets {start}..{end} do not fit {shape}")
        tensors[name] = Tensor(shape, list(struct.unpack(f"<{count}f", data[start:end])))
    return tensors, metadata


def save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> int:
    """Write tensors to a .safetensors file; returns the number of bytes written."""
    blob = encode(tensors, metadata)
    path.write_bytes(blob)
    return len(blob)


def load(path: Path) -> dict[str, Tensor]:
    """Read every tensor from a .safetensors file."""
    return decode(path.read_bytes(), str(path))[0]
