"""Safe YAML loading that keeps each node's line and column, keyed by its field path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import SpecError

# Bounds that keep a hostile file (anchor bombs, huge documents, deep nesting) cheap to refuse:
# under a second and a few MB whatever the file (tests/reliability/test_security.py). Real
# experiment files are 3-20 KB and about 300 values; a synthetic 100,000-unit one is about 1 MB
# and 40,000 values. The pure-Python parser reads about 4 MB or 60,000 values a second.
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_NODES = 50_000
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `1e-5` (users write lr that way).

    Composing counts nodes and nesting as it goes: a flat list of millions of values or a
    thousand nested brackets stops at the bound instead of taking minutes, gigabytes, or
    Python's recursion limit (aliases are counted once here, then expanded by `_build`).
    """

    _composed = 0
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._composed += 1
        if self._composed > MAX_NODES or self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            what = f"more than {MAX_NODES} values" if self._composed > MAX_NODES else \
                f"values nested more than {MAX_DEPTH} deep"
            raise yaml.composer.ComposerError(None, None, f"the document holds {what}", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",
}


@dataclass(frozen=True)
class Located:
    """A loaded document plus where each of its values stands in the file."""

    data: Any
    positions: dict[PathKey, tuple[int, int]]
    path: Path
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def where(self, key: PathKey) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the value at `key`, or of its nearest located parent."""
        probe = tuple(key)
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), (None, None))

    def where_key(self, key: PathKey) -> tuple[int | None, int | None]:
        """Where a mapping key itself stands (for warnings about the key, not its value)."""
        return self.key_positions.get(tuple(key)) or self.where(key)

    def error(self, key: PathKey, message: str) -> SpecError:
        line, column = self.where(key)
        return SpecError(self.path, line, column, format_path(key), message)


def format_path(key: PathKey) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(path: Path, text: str | None = None) -> Located:
    """Parse `path` (or `text` read from it) into plain data with positions; SpecError on any problem."""
    if text is None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise SpecError(path, None, None, "", "file not found; give an experiment directory or its experiment_summary.yaml") from None
        except OSError as exc:
            raise SpecError(path, None, None, "", f"cannot read: {exc.strerror}") from None
        if size > MAX_FILE_BYTES:
            raise SpecError(path, None, None, "", f"file is {size} bytes; experiment files are limited to {MAX_FILE_BYTES}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(path, None, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise SpecError(path, None, None, "", f"cannot read: {exc.strerror}") from None
    elif len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise SpecError(path, None, None, "", f"document is larger than {MAX_FILE_BYTES} bytes")

    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(path, line, col, "", f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, None, None, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecError(path, 1, 1, "", "the file is empty; it must hold an experiment mapping")

    positions: dict[PathKey, tuple[int, int]] = {}
    key_positions: dict[PathKey, tuple[int, int]] = {}
    budget = [MAX_NODES]
    data = _build(node, (), positions, budget, path, key_positions)
    return Located(data, positions, path, key_positions)


def _build(node: yaml.Node, key: PathKey, positions: dict, budget: list[int], path: Path,
           key_positions: dict) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        # Aliases can expand a small file exponentially (billion laughs); stop early.
        raise SpecError(path, node.start_mark.line + 1, node.start_mark.column + 1, format_path(key),
                        f"document expands to more than {MAX_NODES} values (anchor/alias bomb?)")
    positions.setdefault(key, (node.start_mark.line + 1, node.start_mark.column + 1))
    if node.tag not in _STANDARD_TAGS:
        raise SpecError(path, node.start_mark.line + 1, node.start_mark.column + 1, format_path(key),
                        f"YAML tag {node.tag!r} is not allowed; use plain values")
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1, format_path(key),
                                "mapping keys must be plain strings (merge keys `<<` are not supported)")
            name = str(key_node.value)
            if name in out:
                raise SpecError(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                format_path(key + (name,)), "duplicate key")
            key_positions[key + (name,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[name] = _build(value_node, key + (name,), positions, budget, path, key_positions)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, key + (i,), positions, budget, path, key_positions) for i, item in enumerate(node.value)]
    value = _Loader.construct_object(_SCALAR_LOADER, node)  # type: ignore[arg-type]
    if node.tag == "tag:yaml.org,2002:timestamp":
        return str(node.value)  # dates stay the strings the user wrote
    return value


# A constructor instance for scalars only (it holds no document state between calls).
_SCALAR_LOADER = _Loader("")
