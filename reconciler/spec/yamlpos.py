"""Safe YAML loading that keeps each node's line and column, keyed by its field path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import GeneratorType
from typing import Any

import yaml

from reconciler.errors import SpecError
from reconciler.spec.location import MAX_FILE_BYTES

# Bounds that keep a hostile file (anchor bombs, huge documents, deep nesting) cheap to refuse:
# under a second and a few MB whatever the file (tests/reliability/test_security.py). Real
# experiment files are 3-20 KB and about 300 values; a synthetic 100,000-unit one is about 0.45 MB
# and 45,000 values. Loading through libyaml (PyYAML's C extension), bounds check included, reads
# about 3.5 MB or 350,000 values a second; the pure-Python parser, which takes over without
# libyaml and for invalid or unusual files (see _compose), about 0.6 MB or 60,000. MAX_FILE_BYTES
# (2 MiB) lives in location.py, beside the reading of the file.
MAX_NODES = 50_000
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]


class _BoundError(yaml.composer.ComposerError):
    """The document passes MAX_NODES or MAX_DEPTH (worded like any other YAML error)."""


def _bound_error(nodes: int, mark: Any) -> _BoundError:
    what = f"more than {MAX_NODES} values" if nodes > MAX_NODES else f"values nested more than {MAX_DEPTH} deep"
    return _BoundError(None, None, f"the document holds {what}", mark)


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
            raise _bound_error(self._composed, self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))

# libyaml parses and composes in C, about 15 times faster than _Loader. The one choice of path:
# PyYAML builds without it (`yaml.__with_libyaml__` False, e.g. a user's own wheel) leave
# _CLoader None and load everything with _Loader, with the same results, only slower.
_CLoader: type[Any] | None = None
if yaml.__with_libyaml__:
    class _CSafeLoader(yaml.CSafeLoader):
        """libyaml's parser and composer; scalars still resolve through Python, so this reads `1e-5` too."""

    _CSafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))
    _CLoader = _CSafeLoader

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


def read_spec_text(path: Path) -> str:
    """The experiment file's text, or a SpecError saying why it cannot be read."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SpecError(path, None, None, "", "file not found; give an experiment directory or its "
                                              "experiment_summary.yaml (or experiment_summary.md)") from None
    except OSError as exc:
        raise SpecError(path, None, None, "", f"cannot read: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise SpecError(path, None, None, "", f"file is {size} bytes; experiment files are limited to {MAX_FILE_BYTES}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, None, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SpecError(path, None, None, "", f"cannot read: {exc.strerror}") from None


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

    try:
        node = _compose(text)
    except yaml.reader.ReaderError as exc:
        line, col = _line_column(text, exc.position)
        raise SpecError(path, line, col, "", f"invalid YAML: unacceptable character #x{exc.character:04x}: "
                                             f"{exc.reason}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(path, line, col, "", f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, None, None, "", f"invalid YAML: {exc}") from None
    if node is None:
        raise SpecError(path, 1, 1, "", "the file is empty; it must hold an experiment mapping")

    positions: dict[PathKey, tuple[int, int]] = {}
    key_positions: dict[PathKey, tuple[int, int]] = {}
    budget = [MAX_NODES]
    data = _build(node, (), positions, budget, path, key_positions)
    return Located(data, positions, path, key_positions)


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree: libyaml's when it is sure to equal _Loader's, else _Loader's."""
    if _CLoader is None or not _same_characters(text):
        return _compose_with(_Loader, text)
    try:
        if _prescan(text):
            return _compose_with(_CLoader, text)
    except _BoundError:
        raise
    except yaml.YAMLError:
        # Invalid YAML (or YAML only libyaml refuses): rare and off the hot path. _Loader gives
        # PyYAML's own answer and words the error as it always has (libyaml's messages omit the
        # offending character or alias name), under the same bounds.
        pass
    return _compose_with(_Loader, text)


def _compose_with(loader_class: type[Any], text: str) -> yaml.Node | None:
    loader = loader_class(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _same_characters(text: str) -> bool:
    """Whether libyaml reads every character of `text` as PyYAML does.

    Control characters and lone surrogates: PyYAML refuses them up front, libyaml only when it
    reaches them (or fails to encode them). Tabs: libyaml also takes them as spaces between
    tokens where PyYAML refuses them. A byte-order mark: libyaml skips one at the start of any
    line, PyYAML only at the start of the file. `|#`: libyaml reads a comment after a block scalar
    header, PyYAML wants a space first (this also matches in quoted text: a slower load, no harm).
    """
    return ("\t" not in text and text.find("\ufeff", 1) < 0 and not _BLOCK_HEADER_COMMENT.search(text)
            and not _Loader.NON_PRINTABLE.search(text))


_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")
_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING_EVENTS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _prescan(text: str) -> bool:
    """Raise _BoundError where _Loader would; False if libyaml's tree may differ from _Loader's.

    libyaml's composer recurses in C with no depth limit: a 2 MB file of `[` could overflow the
    C stack and kill the process. Its event stream is iterative and costs half as much as
    composing, so it is walked first, counting nodes and nesting as _Loader.compose_node does,
    up to the first bound passed or the end of the one document the composer reads. The walk
    also stops, with False, at what libyaml reads otherwise than PyYAML (found by fuzzing the
    two against each other); _Loader then loads the file, under its own bounds.
    """
    nodes = depth = flow = 0
    anchors: set[str] = set()
    last = None
    for event in yaml.parse(text, Loader=_CLoader):
        kind = type(event)
        if kind in _CLOSING_EVENTS:
            depth -= 1
            flow -= bool(flow)
            continue
        if kind is yaml.DocumentEndEvent:
            break
        if kind not in _NODE_EVENTS:
            continue
        nodes += 1
        if nodes > MAX_NODES or depth >= MAX_DEPTH:
            raise _bound_error(nodes, event.start_mark)
        if kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                return False  # _Loader refuses it here, naming it, before any bound further on
            continue
        if event.anchor is not None:
            if event.anchor in anchors:
                return False  # likewise for an anchor defined twice
            anchors.add(event.anchor)
        if event.tag is not None:
            return False  # libyaml ends a tag at `,[]{}`, PyYAML does not
        if kind is yaml.ScalarEvent:
            last = event
            if flow and _differs_in_flow(event):
                return False
        else:
            depth += 1
            flow += bool(flow or event.flow_style)  # block collections never nest in flow ones
    # A value left empty at the very end (`a:` with no final line break): libyaml places it on
    # the next line, PyYAML at the end of this one.
    return last is None or not _is_empty(last) or last.start_mark.index < len(text)


def _differs_in_flow(event: yaml.ScalarEvent) -> bool:
    if _is_empty(event):
        return True  # `{a: }`: libyaml places the empty value past the spaces, PyYAML before
    return not event.style and "?" in event.value  # `{a?b: 1}`: PyYAML refuses the `?`


def _is_empty(event: yaml.ScalarEvent) -> bool:
    """A value the file leaves out (`a:`), as opposed to one written empty (`a: ''`)."""
    return event.start_mark.index == event.end_mark.index


def _line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of character `position` (ReaderError gives only the offset)."""
    start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - start + 1


def _build(node: yaml.Node, key: PathKey, positions: dict, budget: list[int], path: Path,
           key_positions: dict) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        # Aliases can expand a small file exponentially (billion laughs); stop early.
        raise SpecError(path, node.start_mark.line + 1, node.start_mark.column + 1, format_path(key),
                        f"document expands to more than {MAX_NODES} values (anchor/alias bomb?)")
    if len(key) >= MAX_DEPTH:
        # Only aliases get this deep (composing refused deeper nesting as written): `a: &a [*a]`
        # would otherwise recurse until Python's recursion limit.
        raise SpecError(path, node.start_mark.line + 1, node.start_mark.column + 1, format_path(key),
                        f"values nest more than {MAX_DEPTH} deep once aliases are expanded")
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
    return _scalar(node, key, path)


def _scalar(node: yaml.ScalarNode, key: PathKey, path: Path) -> Any:
    """One scalar read by SafeLoader's rules; dates stay the strings the user wrote."""
    if node.tag == "tag:yaml.org,2002:timestamp":
        return str(node.value)  # the schema checks dates itself (`2026-13-45` would crash datetime)
    try:
        # The constructor itself, not construct_object: that one caches every node it sees,
        # so a long `apply --watch` would keep every document it ever loaded.
        value = _SCALAR_LOADER.yaml_constructors[node.tag](_SCALAR_LOADER, node)
    except (ValueError, KeyError, AttributeError):  # an explicit tag on a bad value: `!!int abc`
        raise SpecError(path, node.start_mark.line + 1, node.start_mark.column + 1, format_path(key),
                        f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}") from None
    return next(value) if isinstance(value, GeneratorType) else value  # `!!map x` reads as {}


# A constructor for scalars only: its constructors keep no state between calls.
_SCALAR_LOADER = _Loader("")
