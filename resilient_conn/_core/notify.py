"""Notifier: event-driven waits on some state, woken whenever its owner changes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio

__all__ = ["Deadline", "Notifier"]


class Notifier:
    """Lets tasks wait until a condition on some state holds, woken on every change.

    The owner calls :meth:`notify` whenever the watched state changes; waiters re-check
    their predicate then. No polling, no sleeping. Each waiter parks on a future of its own,
    held in a list that exists only while someone waits: an idle owner holds nothing and a
    notify with no waiter allocates nothing. (A future per waiter, not one shared: cancelling
    a task cancels the future it waits on, which must not wake, or fail, the others.)
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    def notify(self) -> None:
        """Wake every waiter so it re-checks its condition.

        Callable from anywhere on the loop's thread, in a task or a loop callback, and
        outside any loop when nobody waits.
        """
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    async def wait(self) -> None:
        """Wait for the next :meth:`notify`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = [future]
        else:
            waiters.append(future)
        try:
            await future
        finally:
            if not future.done() or future.cancelled():  # cancelled: leave nothing behind
                self._forget(future)

    def _forget(self, future: asyncio.Future[None]) -> None:
        waiters = self._waiters
        if waiters is not None and future in waiters:
            waiters.remove(future)
            if not waiters:
                self._waiters = None

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float | None,
    ) -> None:
        """Return once ``predicate()`` is true.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        with anyio.fail_after(timeout):
            while not predicate():
                await self.wait()



class Deadline:
    """One loop timer for a whole wait on a :class:`Notifier`, however often it wakes.

    Once ``timeout`` seconds have passed, :attr:`passed` is True and the notifier is notified
    (its waiters re-check, the one with this deadline sees it passed). Cheaper than a
    cancel scope or ``asyncio.timeout`` around the wait: one timer handle and this object.
    Call :meth:`cancel` when the wait ends.
    """

    __slots__ = ("_handle", "_notifier", "passed")

    def __init__(self, notifier: Notifier, timeout: float) -> None:
        self.passed = False
        self._notifier = notifier
        self._handle = asyncio.get_running_loop().call_later(timeout, self)

    def __call__(self) -> None:  # the timer's callback: no bound method held meanwhile
        self.passed = True
        self._notifier.notify()

    def cancel(self) -> None:
        """Stop the timer (the wait is over)."""
        self._handle.cancel()
