"""The public surface: flat, explicit, documented, and matching ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path

import pytest

PACKAGES = ["resilient_conn", "resilient_conn.testing", "resilient_conn.realtime"]


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
