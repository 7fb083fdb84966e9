"""How many of one coordinator's admitted dials may be in flight at once.

A window in the manner of TCP's congestion window, for handshakes: it starts at 1 (and
starts over at 1 after a quiet second, so the first redials after a mass disconnect go out
one at a time until one of them gets through), grows by one with each handshake that
completes, up to ``settings.max_dialing``, and halves with each dial that fails. When the
ramp starts (a successful probe proved the upstream answers) it is widened to a quarter of
the limit at once, so that the ramp's booked slots do not pile up behind a window of 1 and
then go out in a burst. So a dead upstream sees a few serial dials before the shared
circuit opens, not one per connection, and a recovering one is ramped at the pace its
handshakes actually complete, however slow that is (the token bucket still caps the rate).
Waiters are served first come, first served. Local to the process (never in a shared store).
"""

from __future__ import annotations

import math
from collections import deque

import anyio

from .._core.clock import Clock

__all__ = ["DialWindow"]

IDLE_RESTART = 1.0
"""Seconds without a dial after which the window starts over at 1."""


class DialWindow:
    """Slots for dials in flight: acquire before dialing, release with the dial's outcome.

    Args:
        limit: The largest the window grows (``settings.max_dialing``).
        clock: The clock that times the idle restart.
    """

    __slots__ = ("_clock", "_in_flight", "_last", "_limit", "_size", "_waiters")

    def __init__(self, limit: int, clock: Clock) -> None:
        self._limit = limit
        self._clock = clock
        self._size = 1
        self._in_flight = 0
        self._last = -math.inf
        self._waiters: deque[anyio.Event] = deque()

    @property
    def size(self) -> int:
        """The current window: dials that may be in flight at once."""
        return self._size

    @property
    def in_flight(self) -> int:
        """Dials holding a slot now."""
        return self._in_flight

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (and nobody waits before us)."""
        now = self._clock.now()
        if self._in_flight == 0 and not self._waiters and now - self._last > IDLE_RESTART:
            self._size = 1  # quiet for a while: start small again
        self._last = now
        if self._in_flight < self._size and not self._waiters:
            self._in_flight += 1
            return True
        return False

    def widen(self, size: int) -> None:
        """Let the window be at least ``size`` (at most the limit).

        Called when the ramp starts: the upstream answers, and the ramp's booked slots must
        not pile up behind a window of 1.
        """
        if size > self._size:
            self._size = min(self._limit, size)
            while self._waiters and self._in_flight < self._size:
                self._in_flight += 1
                self._waiters.popleft().set()

    def take(self) -> None:
        """Take a slot even if the window is full (the single probe must not wait)."""
        self._last = self._clock.now()
        self._in_flight += 1

    async def acquire(self) -> None:
        """Wait for a slot (first come, first served); cancellation gives it back."""
        if self.try_acquire():
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release(None)  # handed a slot while being cancelled: pass it on
            else:
                self._waiters.remove(event)
            raise
        self._last = self._clock.now()

    def release(self, ok: bool | None) -> None:
        """Give a slot back, with the dial's outcome.

        Args:
            ok: ``True`` a handshake completed, ``False`` the dial failed, ``None`` no
                outcome (cancelled, closed).
        """
        self._in_flight -= 1
        if ok is True:
            self._size = min(self._limit, self._size + 1)
        elif ok is False:
            self._size = max(1, self._size // 2)
        while self._waiters and self._in_flight < self._size:
            self._in_flight += 1
            self._waiters.popleft().set()
