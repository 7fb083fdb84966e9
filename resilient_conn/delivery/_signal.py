"""Signal: event-driven waits on the per-message path of an acknowledged stream (internal).

Bare asyncio futures: a waiter costs one future, a notify with nobody waiting costs nothing,
and a timeout is one loop timer (no cancel scope per wait).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["Signal", "expire"]


class Signal:
    """Wake waiters when some state changes; free when nobody waits.

    Built on bare asyncio futures (a waiter costs one future, a notify with nobody waiting
    costs nothing): it sits on the per-message path.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def waiters(self) -> int:
        """Tasks waiting now."""
        return len(self._waiters)

    def notify(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once ``predicate()`` holds; raise ``TimeoutError`` after ``timeout`` s.

        The timeout is one timer on the loop (no cancel scope per wait: blocked senders
        wait here once per message).
        """
        if predicate():
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append(future)
            timer = None if deadline is None else loop.call_at(deadline, expire, future)
            try:
                await future
            finally:
                if timer is not None:
                    timer.cancel()
                if not future.done() or future.cancelled() or future.exception() is not None:
                    future.cancel()  # cancelled or timed out: forget it
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(future)


def expire(future: asyncio.Future[None]) -> None:
    """Fail a waiter's future with ``TimeoutError`` (a loop timer's callback)."""
    if not future.done():
        future.set_exception(TimeoutError())
