"""FakeClock: a :class:`~resilient_conn.Clock` whose time only moves when a test says so.

Pass it wherever the library takes ``clock=``. Code under test that sleeps on it blocks
until the test calls :meth:`FakeClock.advance` past its deadline, so backoff schedules,
breaker recovery timeouts and stability windows are exercised exactly, with no real waiting.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque

import anyio
import anyio.lowlevel

from ._net import Notifier

__all__ = ["DEFAULT_SLEEP_HISTORY", "FakeClock"]

DEFAULT_SLEEP_HISTORY = 10_000
"""How many requested sleep durations :attr:`FakeClock.sleeps` keeps (the oldest go first)."""


class _Sleeper:
    __slots__ = ("deadline", "event", "woken")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.event = anyio.Event()
        self.woken = False


class FakeClock:
    """A manual clock implementing the :class:`~resilient_conn.Clock` protocol.

    ``now()`` returns the fake time. ``await sleep(s)`` blocks until the clock has been
    advanced to at least ``now() + s`` (``s <= 0`` only yields). ``advance(s)`` moves time
    forward and wakes the sleepers whose deadline has passed, earliest deadline first (ties
    in the order they went to sleep).

    With ``auto_advance=True``, ``sleep(s)`` moves the clock forward by ``s`` itself (waking
    other sleepers that became due) and yields once: code that retries with backoff runs
    at full speed, and ``now()`` still shows the time it would have taken.

    Example::

        clock = FakeClock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 5)
            await clock.wait_for_sleepers(1)
            clock.advance(5)        # the sleeper wakes

    Args:
        start: The initial reading of ``now()``.
        auto_advance: Make ``sleep`` advance the clock instead of blocking.
        history: How many requested durations :attr:`sleeps` keeps.

    Raises:
        ValueError: ``start`` not finite or ``history`` < 1.
    """

    def __init__(
        self,
        start: float = 0.0,
        *,
        auto_advance: bool = False,
        history: int = DEFAULT_SLEEP_HISTORY,
    ) -> None:
        if (
            isinstance(start, bool)
            or not isinstance(start, (int, float))
            or not math.isfinite(start)
        ):
            raise ValueError(f"start must be a finite number, got {start!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, got {history!r}")
        self._now = float(start)
        self.auto_advance = auto_advance
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._seq = itertools.count()
        self._pending = 0
        self._sleeps: deque[float] = deque(maxlen=history)
        self.sleep_count = 0
        """Calls to :meth:`sleep` in total (not bounded by ``history``)."""
        self._changed = Notifier()

    def now(self) -> float:
        """Return the fake time in seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock reaches ``now() + seconds`` (see the class docstring).

        Raises:
            ValueError: ``seconds`` is NaN.
        """
        if math.isnan(seconds):
            raise ValueError("seconds must not be NaN")
        self._sleeps.append(seconds)
        self.sleep_count += 1
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        if self.auto_advance:
            self.advance(seconds)
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(self._now + seconds)
        heapq.heappush(self._heap, (sleeper.deadline, next(self._seq), sleeper))
        self._pending += 1
        self._changed.notify()
        try:
            await sleeper.event.wait()
        finally:
            if not sleeper.woken:  # cancelled: forget it (its heap entry is skipped later)
                sleeper.woken = True
                self._pending -= 1
                self._changed.notify()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper now due, in deadline order.

        Woken tasks run at their next turn on the event loop (await something, e.g.
        ``anyio.lowlevel.checkpoint()``, to let them).

        Raises:
            ValueError: ``seconds`` negative or not finite (time never goes back).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError(f"seconds must be a number, got {seconds!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._now += seconds
        self._wake_due()

    def advance_to(self, when: float) -> None:
        """Move time forward to ``when`` (a no-op if it is not in the future)."""
        if when > self._now:
            self.advance(when - self._now)

    async def advance_to_next(
        self,
        timeout: float | None = 5.0,
    ) -> float:
        """Wait until something sleeps, advance to the earliest deadline, let it run.

        Returns:
            The new ``now()``.

        Raises:
            TimeoutError: Nothing went to sleep within ``timeout`` real seconds.
        """
        await self.wait_for_sleepers(1, timeout)
        deadline = self.next_deadline
        assert deadline is not None
        self.advance_to(deadline)
        await anyio.lowlevel.checkpoint()
        return self._now

    async def wait_for_sleepers(
        self,
        n: int = 1,
        timeout: float | None = 5.0,
    ) -> None:
        """Wait until at least ``n`` tasks are sleeping on this clock.

        Raises:
            TimeoutError: ``timeout`` real seconds passed first.
        """
        await self._changed.wait_until(lambda: self._pending >= n, timeout)

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock now."""
        return self._pending

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline of a current sleeper, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    @property
    def sleeps(self) -> list[float]:
        """The durations passed to :meth:`sleep`, oldest first (the last ``history``)."""
        return list(self._sleeps)

    def __repr__(self) -> str:
        return (
            f"FakeClock(now={self._now}, sleepers={self._pending}, "
            f"auto_advance={self.auto_advance})"
        )

    def _drop_stale(self) -> None:
        while self._heap and self._heap[0][2].woken:
            heapq.heappop(self._heap)

    def _wake_due(self) -> None:
        woke = False
        while self._heap and self._heap[0][0] <= self._now:
            _, _, sleeper = heapq.heappop(self._heap)
            if sleeper.woken:
                continue
            sleeper.woken = True
            self._pending -= 1
            sleeper.event.set()
            woke = True
        if woke:
            self._changed.notify()
