"""Old module paths (before the package was split into layer folders) keep importing.

``import resilient_conn.breaker`` and ``from resilient_conn.backoff import Backoff`` were
documented or used before the layout moved them to ``resilience/``, ``connection/`` and so on.
A meta path finder maps each old dotted name to the module that now owns it: the same module
object, so ``isinstance`` checks and monkeypatching keep working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

__all__ = ["MOVED"]

MOVED: dict[str, str] = {
    "resilient_conn._clock": "resilient_conn._core.clock",
    "resilient_conn._hooks": "resilient_conn._core.hooks",
    "resilient_conn._log": "resilient_conn._core.log",
    "resilient_conn._notify": "resilient_conn._core.notify",
    "resilient_conn.errors": "resilient_conn._core.errors",
    "resilient_conn.backoff": "resilient_conn.resilience.backoff",
    "resilient_conn.breaker": "resilient_conn.resilience.breaker",
    "resilient_conn.classify": "resilient_conn.resilience.classify",
    "resilient_conn.config": "resilient_conn.resilience.config",
    "resilient_conn.policy": "resilient_conn.resilience.policy",
    "resilient_conn.retry": "resilient_conn.resilience.retry",
    "resilient_conn.buffer": "resilient_conn.connection.buffer",
    "resilient_conn.events": "resilient_conn.connection.events",
    "resilient_conn.metrics": "resilient_conn.connection.metrics",
    "resilient_conn.options": "resilient_conn.connection.options",
    "resilient_conn.outbox": "resilient_conn.connection.outbox",
    "resilient_conn.alerting": "resilient_conn.health.alerting",
    "resilient_conn.asgi": "resilient_conn.health.asgi",
    "resilient_conn.health_registry": "resilient_conn.health.registry",
    "resilient_conn.prometheus": "resilient_conn.health.prometheus",
    "resilient_conn.demo": "resilient_conn.cli.demo",
}
"""Old dotted module name -> the module that owns its contents now."""


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(self._target)

    def exec_module(self, module: types.ModuleType) -> None:
        """The target module was executed when it was imported."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Register the old names of modules already imported, and put the finder on the path.

    Registering up front matters: the import system binds a newly loaded submodule as an
    attribute of its package, and ``resilient_conn.retry`` must stay the function, not become
    the module, when someone imports the old path later.
    """
    for old, new in MOVED.items():
        if new in sys.modules:
            sys.modules.setdefault(old, sys.modules[new])
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
