"""The floor plan holds: the layers import downward only, no import cycle, a pure planner and spec,
no module-level mutable state, a short package root. Read from the sources with `ast`, nothing run.
(restructure: new layout; scripts/restructure.py leaves this file alone)

A layer may import its own layer and any layer below it. Type-only imports (`if TYPE_CHECKING:`) obey
the layers too, but load nothing, so the purity and cycle checks look at run-time imports only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

# Top to bottom. A module's layer is its first-level name under reconciler/ (a package or a root module).
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"cli", "__main__"},               # options -> app -> renderer -> exit code
    {"app"},                           # the front door: each command around its passes, policy from options
    # What people read about a pass. report/ renders values as text (pure: see below); records/ builds
    # and writes what a pass leaves on disk (state.json, workflow logs, summary.md), rendering with report/
    # and reading the models and helpers of records/: one layer of two folders.
    {"report", "records"},
    {"engine"},                        # the pass: observe, plan, apply, memo; the watch
    {"apply"},                         # acts on a plan: render, submit, cancel, move aside
    {"scaffold"},                      # renders a unit's scripts and configs from the spec
    {"plan"},                          # pure: observation in, plan out
    {"observe"},                       # reads what is on disk and what the scheduler says
    {"backends"},                      # local and SLURM behind one Protocol
    {"spec", "journal"},               # the desired state; the record of intents
    {"jobs", "errors", "fsutil", "timefmt", "__init__"},  # vocabulary shared by everyone
))

# What a pure layer must not load, even indirectly: processes, sockets, locks, signals, the scheduler,
# the disk's evidence.
IMPURE = ("subprocess", "socket", "signal", "fcntl", "multiprocessing", "shutil",
          "reconciler.backends", "reconciler.observe", "reconciler.journal", "reconciler.apply",
          "reconciler.engine")
PURE_LAYERS = ("plan", "spec")

MAX_ROOT_MODULES = 9


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (reconciler.* resolved to a module, or a top-level library name)
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, name: str | None) -> str:
    """`from module import name`: the submodule when `name` is one, else the module."""
    if name and f"{module}.{name}" in modules():
        return f"{module}.{name}"
    return module


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str, tree: ast.AST) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(source, a.name if a.name.startswith("reconciler") else a.name.split(".")[0],
                                node.lineno, type_only) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("reconciler"):
                found.extend(Import(source, _resolve(node.module, a.name), node.lineno, type_only) for a in node.names)
            else:
                found.append(Import(source, node.module.split(".")[0], node.lineno, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for name, path in modules().items() for i in imports_of(name, ast.parse(path.read_text())))


def layer_of(module: str) -> int:
    first = module.split(".")[1] if "." in module else "__init__"
    for index, layer in enumerate(LAYERS):
        if first in layer:
            return index
    raise AssertionError(f"{module}: in no layer of LAYERS; add its folder to the table")


def upward_imports(imports: tuple[Import, ...]) -> list[str]:
    return [f"{i.source}:{i.line} imports {i.target} (layer {layer_of(i.target)} above {layer_of(i.source)})"
            for i in imports if i.target.startswith("reconciler.") and layer_of(i.target) < layer_of(i.source)]


def runtime_graph(imports: tuple[Import, ...]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for i in imports:
        if not i.type_only:
            graph[i.source].add(i.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), among reconciler modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(t for t in graph[v] if t in graph):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def loads(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module (and library) that importing `start` loads, through reconciler modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        for t in graph.get(m, ()):
            # Importing reconciler.a.b loads the package reconciler.a first.
            chain = [".".join(t.split(".")[:k]) for k in range(2, t.count(".") + 2)] if t.startswith("reconciler") else [t]
            for c in chain:
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
    return seen


def test_every_module_sits_in_a_layer_and_imports_downward():
    assert upward_imports(all_imports()) == []


def test_no_import_cycle():
    assert cycles(runtime_graph(all_imports())) == []


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_load_nothing_that_does_io(layer):
    graph = runtime_graph(all_imports())
    bad = {}
    for m in modules():
        if m == f"reconciler.{layer}" or m.startswith(f"reconciler.{layer}."):
            loaded = loads(graph, m)
            hits = sorted(x for x in loaded if any(x == p or x.startswith(p + ".") for p in IMPURE))
            if hits:
                bad[m] = hits
    assert bad == {}


def test_the_package_root_is_short():
    root = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


# report/ renders: values in, text out. records/ writes what a pass leaves, from the pass's result. Neither
# plans again: the plan a summary or a record shows is the one the pass made.
RENDERERS = "reconciler.report"
BUILT_FROM_THE_PASS = ("reconciler.report", "reconciler.records")
# Calls that write to the file system (`x.replace`/`x.rename` only on `os`: str.replace is everywhere).
WRITING_FUNCTIONS = {"open", "atomic_write_text"}
WRITING_METHODS = {"write_text", "write_bytes", "mkdir", "unlink", "rmdir", "touch", "savefig", "symlink_to",
                   "chmod", "makedirs"}
WRITING_OS = {"replace", "rename", "remove", "unlink", "write", "open", "makedirs", "mkdir", "rmdir"}
WRITING_MODULES = {"reconciler.fsutil", "shutil", "tempfile"}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def file_writes(module: str, tree: ast.AST) -> list[str]:
    found = [f"{module}:{i.line} imports {i.target}" for i in imports_of(module, tree) if i.target in WRITING_MODULES]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in WRITING_FUNCTIONS:
            found.append(f"{module}:{node.lineno} calls {func.id}()")
        elif isinstance(func, ast.Attribute) and (
                func.attr in WRITING_METHODS
                or (func.attr in WRITING_OS and isinstance(func.value, ast.Name) and func.value.id == "os")):
            found.append(f"{module}:{node.lineno} calls .{func.attr}()")
    return found


def plans_again(module: str, tree: ast.AST) -> list[str]:
    """Imports of the planner's `plan`, and calls of `plan(...)` or `planner.plan(...)`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "reconciler.plan.planner" \
                and any(a.name == "plan" for a in node.names):
            found.append(f"{module}:{node.lineno} imports plan")
        elif isinstance(node, ast.Call) and ((isinstance(node.func, ast.Name) and node.func.id == "plan") or
                                             (isinstance(node.func, ast.Attribute) and node.func.attr == "plan")):
            found.append(f"{module}:{node.lineno} calls plan()")
    return found


def test_report_renders_and_writes_no_file():
    bad = [hit for m, path in modules().items() if in_package(m, RENDERERS)
           for hit in file_writes(m, ast.parse(path.read_text()))]
    assert bad == []


def test_reports_and_records_never_plan_again():
    bad = [hit for m, path in modules().items() if any(in_package(m, p) for p in BUILT_FROM_THE_PASS)
           for hit in plans_again(m, ast.parse(path.read_text()))]
    assert bad == []


# Module-level state that outlives a call. What must outlive a pass lives on the object a watch owns
# and passes in (engine.loop.PassMemory: the expanded spec, the kept pass, the folded journal, the
# parsed header cache), or on the object it belongs to (a backend's call counts, a loaded spec's
# model directories); what is listed here is process-wide by nature, argued where it is defined.
# A new one fails the test below, and so does removing one without crossing it off here.
# Only mutation inside the defining module is seen.
KNOWN_MODULE_STATE = {
    # Kept: `NAME@N` counts the times this process reached a point (see the module's comment).
    "reconciler.apply.crashpoints._hits": "counts crash points reached in this process, for the crash-point tests",
}

MUTABLE_CALLS = {"dict", "list", "set", "Counter", "defaultdict", "OrderedDict", "deque"}
MUTATORS = {"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault", "add",
            "discard", "appendleft", "sort", "__setitem__"}


def module_state(module: str, tree: ast.Module) -> set[str]:
    """Module-level containers that some code mutates, and module-level functions that cache their results."""
    containers = set()
    found = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        mutable = isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)) or (
            isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None)) in MUTABLE_CALLS)
        if mutable:
            containers.update(t.id for t in targets if isinstance(t, ast.Name))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                d = d.func if isinstance(d, ast.Call) else d
                if getattr(d, "id", getattr(d, "attr", None)) in ("cache", "lru_cache"):
                    found.add(f"{module}.{node.name}")
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Global):
            found.update(f"{module}.{n}" for n in node.names)
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                and isinstance(node.value, ast.Name):
            name = node.value.id
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS \
                and isinstance(node.func.value, ast.Name):
            name = node.func.value.id
        elif isinstance(node, ast.AugAssign):
            target = node.target.value if isinstance(node.target, ast.Subscript) else node.target
            name = target.id if isinstance(target, ast.Name) else None
        if name in containers:
            found.add(f"{module}.{name}")
    return found


def all_module_state() -> dict[str, set[str]]:
    return {m: module_state(m, ast.parse(p.read_text())) for m, p in modules().items()}


def test_no_new_module_level_state():
    found = sorted(x for names in all_module_state().values() for x in names)
    assert found == sorted(KNOWN_MODULE_STATE)


# --- the checks check: each one fails on the mistake it is there for --------------------------------------

def _synthetic(source: str, text: str) -> tuple[Import, ...]:
    return tuple(imports_of(source, ast.parse(text)))


def test_an_upward_import_is_caught():
    assert upward_imports(_synthetic("reconciler.plan.planner", "from reconciler.engine.loop import run_pass\n"))
    assert not upward_imports(_synthetic("reconciler.engine.loop", "from reconciler.plan.planner import plan\n"))
    # Type-only imports obey the layers too.
    assert upward_imports(_synthetic("reconciler.plan.planner",
                                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from reconciler.apply.apply import Event\n"))


def test_a_cycle_is_caught():
    graph = runtime_graph(all_imports())
    graph["reconciler.jobs"] = graph["reconciler.jobs"] | {"reconciler.engine.loop"}
    assert cycles(graph)


def test_io_in_a_pure_layer_is_caught():
    graph = runtime_graph(all_imports())
    graph["reconciler.spec.units"] = graph["reconciler.spec.units"] | {"reconciler.observe.inputs"}
    assert "reconciler.observe.inputs" in loads(graph, "reconciler.spec.units")
    # ... and through a module that imports it (the pure check reads what a module loads, not only its imports).
    graph["reconciler.spec.units"] = graph["reconciler.spec.units"] | {"reconciler.journal"}
    assert "fcntl" in loads(graph, "reconciler.spec.units")


@pytest.mark.parametrize("text", [
    "_SEEN: dict[str, int] = {}\ndef f(k):\n    _SEEN[k] = 1\n",
    "_LAST = []\ndef f(x):\n    _LAST.append(x)\n",
    "_N = 0\ndef f():\n    global _N\n    _N += 1\n",
    "import functools\n@functools.cache\ndef f():\n    return 1\n",
    "HITS = Counter()\ndef f(k):\n    HITS[k] += 1\n",
])
def test_module_state_is_caught(text):
    assert module_state("m", ast.parse(text))


def test_constants_are_not_module_state():
    text = "TABLE = {'a': 1}\nNAMES = ['x']\ndef f(k):\n    d = {}\n    d[k] = TABLE[k]\n    return d\n"
    assert not module_state("m", ast.parse(text))


@pytest.mark.parametrize("text", [
    "def f(p, t):\n    p.write_text(t)\n",
    "def f(p):\n    with open(p, 'w') as fh:\n        fh.write('x')\n",
    "import os\ndef f(a, b):\n    os.replace(a, b)\n",
    "from reconciler.fsutil import atomic_write_text\n",
    "def f(fig, p):\n    fig.savefig(p)\n",
])
def test_a_file_write_in_a_renderer_is_caught(text):
    assert file_writes("reconciler.report.x", ast.parse(text))


def test_string_replace_is_not_a_file_write():
    assert not file_writes("reconciler.report.x", ast.parse("def f(s):\n    return s.replace('|', '/')\n"))


@pytest.mark.parametrize("text", [
    "from reconciler.plan.planner import plan\n",
    "from reconciler.plan import planner\ndef f(u, o, p):\n    return planner.plan(u, o, p)\n",
    "def f(plan, u):\n    return plan(u)\n",
])
def test_planning_again_is_caught(text):
    assert plans_again("reconciler.records.x", ast.parse(text))
