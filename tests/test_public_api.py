"""The public surface: flat, explicit, documented, and matching ``__all__``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import types
from pathlib import Path

import pytest

from resilient_conn._compat import MOVED

PACKAGES = [
    "resilient_conn",
    "resilient_conn.testing",
    "resilient_conn.realtime",
    "resilient_conn.delivery",
]


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_all_matches_the_public_names(package: str) -> None:
    """Every public name a package defines is in its __all__, and every __all__ entry exists."""
    module = importlib.import_module(package)
    exported = set(module.__all__) - {"__version__"}
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    assert exported == _public_names(module)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_class_and_function_has_a_docstring(package: str) -> None:
    """Public classes and functions are documented (Google style is checked by ruff)."""
    module = importlib.import_module(package)
    missing = [
        name
        for name in module.__all__
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert missing == []


def test_the_package_is_typed() -> None:
    """py.typed ships with the package so type checkers use our annotations."""
    import resilient_conn

    assert resilient_conn.__file__ is not None
    assert (Path(resilient_conn.__file__).parent / "py.typed").exists()


_TOP = Path(__file__).parent.parent
_DOCS = [_TOP / "README.md", *sorted((_TOP / "docs").glob("*.md"))]
_IMPORT_LINE = re.compile(
    r"^\s*(from (resilient_conn[\w.]*) import ([\w, ]+)|import (resilient_conn[\w.]*))", re.M
)


def _documented_imports() -> list[tuple[str, tuple[str, ...]]]:
    found: dict[tuple[str, tuple[str, ...]], None] = {}
    for doc in _DOCS:
        if not doc.exists():
            continue
        for m in _IMPORT_LINE.finditer(doc.read_text()):
            if m.group(2):
                names = tuple(n.strip() for n in m.group(3).split(",") if n.strip())
                found[(m.group(2), names)] = None
            else:
                found[(m.group(4), ())] = None
    return list(found)


@pytest.mark.parametrize(("module", "names"), _documented_imports())
def test_every_documented_import_works(module: str, names: tuple[str, ...]) -> None:
    """Every ``from resilient_conn... import ...`` written in README.md or docs/ imports."""
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), name


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_still_import(old: str) -> None:
    """Module paths from before the layer folders import the very module that moved."""
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_an_old_path_does_not_shadow_a_public_name() -> None:
    """Importing ``resilient_conn.retry`` leaves ``resilient_conn.retry`` the function."""
    import resilient_conn

    importlib.import_module("resilient_conn.retry")
    assert callable(resilient_conn.retry)
    assert inspect.isfunction(resilient_conn.retry)


def test_the_documented_paths_are_found() -> None:
    """The scan above is not vacuous: README and docs import from several paths."""
    modules = {module for module, _ in _documented_imports()}
    assert {"resilient_conn", "resilient_conn.testing", "resilient_conn.realtime"} <= modules
