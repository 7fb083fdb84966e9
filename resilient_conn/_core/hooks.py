"""Isolated dispatch of user callbacks (state-change hooks, breaker listeners).

A callback may be sync or async. A sync callback runs inline; an exception from it is logged
and swallowed. An async callback runs as a task of its own, bounded by ``timeout``; a hook that
raises or hangs is logged and never breaks or stalls the code that emitted the event.
:meth:`HookSet.aclose` cancels and awaits whatever is still running, so nothing outlives the
owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from .log import get_logger, redact_text

__all__ = ["IN_HOOK", "HookSet", "Unsubscribe"]

E = TypeVar("E")

Unsubscribe = Callable[[], None]
"""Calling it removes the callback it was returned for (idempotent)."""

_log = get_logger()

IN_HOOK: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "resilient_conn_in_hook", default=None
)
"""The kind of hook whose task is running (inherited by tasks it spawns), else None.

Lets the owner of a hook set tell a hook apart from its own tasks: a hook that awaits its
owner's close must not be waited for by that close."""


class HookSet(Generic[E]):
    """A set of callbacks for events of type ``E``.

    Args:
        kind: Names the hooks in log events (``"state_change"``, ``"breaker_listener"``).
        timeout: Longest an async callback may run before it is cancelled (seconds).
    """

    __slots__ = ("_callbacks", "_kind", "_tasks", "_timeout")

    def __init__(self, kind: str, timeout: float = 5.0) -> None:
        self._kind = kind
        self._timeout = timeout
        # Copied on change, never mutated: emit() iterates it as it is, and a set without
        # callbacks (most of them) shares the empty tuple instead of holding an empty list.
        self._callbacks: tuple[Callable[[E], Any], ...] = ()
        # task -> the callback's awaitable, closed on aclose() if the task never got to it;
        # made by the first async callback (None until then: nothing per idle owner)
        self._tasks: dict[asyncio.Task[None], Awaitable[Any]] | None = None

    def add(self, callback: Callable[[E], Any]) -> Unsubscribe:
        """Register ``callback`` and return a handle that removes it."""
        if not callable(callback):
            raise TypeError(f"{self._kind} callback must be callable, got {callback!r}")
        self._callbacks = (*self._callbacks, callback)

        def unsubscribe() -> None:
            callbacks = self._callbacks
            with contextlib.suppress(ValueError):
                i = callbacks.index(callback)
                self._callbacks = callbacks[:i] + callbacks[i + 1 :]

        return unsubscribe

    def __len__(self) -> int:
        return len(self._callbacks)

    def emit(self, event: E) -> None:
        """Deliver ``event`` to every callback, isolating each from the others and the caller."""
        for callback in self._callbacks:
            try:
                result = callback(event)
            except Exception as exc:
                self._failed(callback, redact_text(repr(exc)))
                continue
            if inspect.isawaitable(result):
                self._spawn(callback, result)

    def _failed(self, callback: Callable[[E], Any], error: str) -> None:
        _log.warning(
            "resilient_conn.hook_failed", hook=self._kind, callback=_name(callback), error=error
        )

    def _spawn(self, callback: Callable[[E], Any], awaitable: Awaitable[Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self._failed(callback, "async callback emitted outside an event loop; skipped")
            return
        task = loop.create_task(self._run(callback, awaitable))
        if self._tasks is None:
            self._tasks = {}
        self._tasks[task] = awaitable
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.pop(task, None)

    async def _run(self, callback: Callable[[E], Any], awaitable: Awaitable[Any]) -> None:
        IN_HOOK.set(self._kind)  # this task's own context (and the tasks the hook spawns)
        try:
            async with asyncio.timeout(self._timeout):
                await awaitable
        except TimeoutError:
            _log.warning(
                "resilient_conn.hook_timeout",
                hook=self._kind,
                callback=_name(callback),
                timeout=self._timeout,
            )
        except Exception as exc:
            self._failed(callback, redact_text(repr(exc)))

    @property
    def pending(self) -> int:
        """How many async callbacks are still running."""
        return len(self._tasks or ())

    def cancel(self) -> None:
        """Cancel every running async callback now (without waiting for them to end)."""
        for task, awaitable in list((self._tasks or {}).items()):
            if task.done():
                continue
            task.cancel()
            if inspect.iscoroutine(awaitable):  # a task cancelled before it ever ran
                task.add_done_callback(_closer_of(awaitable))

    async def aclose(self, grace: float = 0.0) -> None:
        """Let running async callbacks finish for up to ``grace`` seconds, then cancel the rest.

        Args:
            grace: Seconds to wait before cancelling (0 cancels at once).
        """
        pending = dict(self._tasks or {})
        if pending and grace > 0:
            await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for awaitable in pending.values():
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # a task cancelled before it started never awaited it


def _closer_of(coro: Coroutine[Any, Any, Any]) -> Callable[[asyncio.Task[None]], None]:
    def close(_task: asyncio.Task[None]) -> None:
        coro.close()

    return close


def _name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
