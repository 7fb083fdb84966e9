"""Subscribers to an endpoint's gap notices and dead letters (internal).

Callbacks may be sync or async; an async one runs in the stream's task group (bounded to 5 s),
or is dropped with a warning while the stream is not open. A failing callback is logged and
never breaks the stream.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from .records import DeliveryDeadLetter
from .state import GapNotice

__all__ = ["Hooks"]

_log = structlog.get_logger("resilient_conn.delivery")


class Hooks:
    """The gap and dead-letter callbacks of one endpoint.

    Attributes:
        gap: Callbacks receiving each :class:`~resilient_conn.delivery.GapNotice`.
        dead: Callbacks receiving each :class:`~resilient_conn.delivery.DeliveryDeadLetter`.
        task_group: Where async callbacks run (None while the stream is not open).
    """

    __slots__ = ("dead", "gap", "task_group")

    def __init__(self) -> None:
        self.gap: list[Callable[[GapNotice], Any]] = []
        self.dead: list[Callable[[DeliveryDeadLetter], Any]] = []
        self.task_group: TaskGroup | None = None

    def add_gap(self, callback: Callable[[GapNotice], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` for every gap notice; returns an unsubscribe handle."""
        return _add(self.gap, callback)

    def add_dead(self, callback: Callable[[DeliveryDeadLetter], Any]) -> Callable[[], None]:
        """Call ``callback(letter)`` for every dead letter; returns an unsubscribe handle."""
        return _add(self.dead, callback)

    def emit(self, hooks: list[Callable[[Any], Any]], event: object) -> None:
        """Hand ``event`` to every callback in ``hooks`` (:attr:`gap` or :attr:`dead`)."""
        for callback in list(hooks):
            try:
                result = callback(event)
            except Exception as exc:
                _log.warning("resilient_conn.delivery.hook_failed", error=repr(exc))
                continue
            if inspect.isawaitable(result):
                if self.task_group is not None:
                    self.task_group.start_soon(_run_hook, result)
                elif inspect.iscoroutine(result):
                    result.close()
                    _log.warning("resilient_conn.delivery.hook_dropped", why="stream not open")


def _add(hooks: list[Any], callback: Any) -> Callable[[], None]:
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    hooks.append(callback)

    def unsubscribe() -> None:
        if callback in hooks:
            hooks.remove(callback)

    return unsubscribe


async def _run_hook(awaitable: Awaitable[Any]) -> None:
    try:
        with anyio.move_on_after(5.0):
            await awaitable
    except Exception as exc:
        _log.warning("resilient_conn.delivery.hook_failed", error=repr(exc))
