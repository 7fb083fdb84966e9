"""A tiny manual clock for the primitives' tests (independent of resilient_conn.testing)."""

from __future__ import annotations

import anyio.lowlevel


class ManualClock:
    """A clock whose time moves only when a test advances it or something sleeps on it.

    ``sleep(s)`` records ``s``, moves time forward by ``s`` and yields once, so code under
    test that sleeps through the clock runs instantly and in order.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the current reading."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, skip the time, yield to the loop once."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self._now += seconds
        await anyio.lowlevel.checkpoint()
