"""The package folders are layers: each imports only from below, and nothing imports in a circle.

The import graph is read from the source with ``ast`` (every import statement, including
``TYPE_CHECKING`` blocks and imports inside functions), so a circle that only lazy imports made
work at run time fails here too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

import resilient_conn

PACKAGE = "resilient_conn"
ROOT = Path(resilient_conn.__file__).parent

#: Lowest first. A module may import from a strictly lower layer, or from its own folder.
LAYERS: dict[str, int] = {
    "_core": 0,
    "resilience": 1,
    "coordination": 2,
    "adapters": 2,
    "connection": 3,
    "realtime": 4,
    "delivery": 4,
    "health": 5,
    "testing": 6,
    "cli": 7,
    # The root package's own modules (``__init__``, ``__main__``, ``_compat``) sit on top.
    "": 8,
}


def module_name(path: Path) -> str:
    """``resilient_conn/connection/report.py`` -> ``resilient_conn.connection.report``."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def folder_of(module: str) -> str:
    """The layer folder a module belongs to (``""`` for the root package's own modules)."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    top = parts[1]
    return top if (ROOT / top).is_dir() else ""


def imports_of(path: Path, modules: set[str], text: str | None = None) -> set[str]:
    """Every package module that ``path`` (or ``text`` read as that file) imports."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    source = path.read_text() if text is None else text
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            targets: Iterable[str] = (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            # ``from pkg import submodule`` imports the submodule.
            targets = [mod, *(f"{mod}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            # A module's own package is being imported already: not an edge. The root package
            # is the exception: importing from it means importing the whole public API.
            own = name.startswith(target + ".") and target != PACKAGE
            if target in modules and target != name and not own:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (and, across folders, their ``__init__``)."""
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = imports_of(path, modules)
        for target in list(edges):
            # Importing a.b.c runs a.b's __init__ first: count it when crossing folders.
            parent = target.rsplit(".", 1)[0]
            if parent in modules and folder_of(parent) != folder_of(name) and parent != PACKAGE:
                edges.add(parent)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` lines for every import from a folder into a higher or sibling folder."""
    bad = []
    for name, targets in graph.items():
        mine = folder_of(name)
        for target in targets:
            theirs = folder_of(target)
            if theirs == mine:
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                bad.append(f"{name} ({mine or 'root'}) -> {target} ({theirs or 'root'})")
    return sorted(bad)


def test_every_folder_has_a_layer() -> None:
    """Each subpackage is in the table, so a new folder cannot slip in unlayered."""
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), f"add these folders to LAYERS: {folders - set(LAYERS)}"


def test_no_import_circles() -> None:
    """No two package modules import each other, directly or through others."""
    assert cycles(import_graph()) == []


def test_imports_only_go_down() -> None:
    """A module imports only from its own folder or from a lower layer."""
    assert upward_imports(import_graph()) == []


def test_no_module_is_too_long() -> None:
    """Modules stay small enough to read in one sitting (about 450 lines at most)."""
    long = {
        module_name(p): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 470
    }
    assert long == {}


def test_a_circle_is_caught() -> None:
    """The circle finder is not vacuous: it reports a two-module circle and a longer one."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_an_upward_import_is_caught() -> None:
    """The layer check reports a resilience module importing the connection layer."""
    graph = {
        f"{PACKAGE}.resilience.breaker": {f"{PACKAGE}.connection.events"},
        f"{PACKAGE}.connection.events": {f"{PACKAGE}._core.errors"},
    }
    assert upward_imports(graph) == [
        f"{PACKAGE}.resilience.breaker (resilience) -> {PACKAGE}.connection.events (connection)"
    ]


@pytest.mark.parametrize(
    "source",
    [
        "from ..realtime import client",
        "if TYPE_CHECKING:\n    from ..health.registry import HealthRegistry",
        "def f():\n    from resilient_conn.cli import main",
        "def f():\n    from resilient_conn import ConfigError",
    ],
)
def test_every_kind_of_import_is_read(source: str) -> None:
    """Relative, TYPE_CHECKING-only and function-local imports all become upward edges."""
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    as_events = ROOT / "connection" / "events.py"  # read the snippet as if it were this file
    edges = imports_of(as_events, modules, text=source)
    graph = {module_name(as_events): edges}
    assert edges
    assert len(upward_imports(graph)) == len(edges)


def test_the_architecture_page_matches_the_layers() -> None:
    """docs/ARCHITECTURE.md draws every folder at the layer the table above gives it."""
    page = (ROOT.parent / "docs" / "ARCHITECTURE.md").read_text()
    drawn = {m.group(2): int(m.group(1)) for m in re.finditer(r"^ (\d)  (\w+)/ ", page, re.M)}
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(drawn), f"not drawn: {folders - set(drawn)}"
    assert {name: LAYERS[name] for name in drawn} == drawn
