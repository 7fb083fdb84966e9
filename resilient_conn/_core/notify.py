"""Notifier: event-driven waits on some state, woken whenever its owner changes it."""

from __future__ import annotations

from collections.abc import Callable

import anyio

__all__ = ["Notifier"]


class Notifier:
    """Lets tasks wait until a condition on some state holds, woken on every change.

    The owner calls :meth:`notify` whenever the watched state changes; waiters re-check
    their predicate then. No polling, no sleeping. The event exists only while someone
    waits, so an idle owner holds none and a notify with no waiter allocates nothing.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    def _current(self) -> anyio.Event:
        event = self._event
        if event is None:
            event = self._event = anyio.Event()
        return event

    async def wait(self) -> None:
        """Wait for the next :meth:`notify`."""
        await self._current().wait()

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
                await self._current().wait()
