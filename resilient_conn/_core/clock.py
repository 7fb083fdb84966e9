"""The one clock every wait in resilient_conn goes through, and the testing switch.

Pure layers (backoff, breaker) read ``clock.now()``; I/O layers call ``await clock.sleep()``.
Nothing else in the library reads time or sleeps, so a test can swap the clock
(:class:`resilient_conn.testing.FakeClock`) or flip :func:`set_testing` and nothing sleeps.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Protocol, runtime_checkable

import anyio
import anyio.lowlevel

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "is_testing", "set_testing"]


@runtime_checkable
class Clock(Protocol):
    """What the library needs of a clock: a monotonic reading and a way to wait."""

    def now(self) -> float:
        """Return monotonic time in seconds (only differences are meaningful)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a value <= 0 only yields to the event loop)."""
        ...


class _TestingState:
    __slots__ = ("enabled", "offset")

    def __init__(self) -> None:
        self.enabled = False
        self.offset = 0.0


_STATE = _TestingState()


class SystemClock:
    """The default clock: ``time.monotonic`` and ``anyio.sleep``.

    While the testing switch is on (:func:`set_testing`), ``sleep(s)`` returns at once and
    moves this clock's reading forward by ``s`` instead, so every backoff delay and breaker
    recovery timeout elapses instantly yet in the right order, as seen by ``now()``.
    """

    __slots__ = ()

    def now(self) -> float:
        """Return ``time.monotonic()`` plus the time skipped while testing."""
        return time.monotonic() + _STATE.offset

    async def sleep(self, seconds: float) -> None:
        """Sleep for real, or, with the testing switch on, skip the time and yield once."""
        if _STATE.enabled:
            if seconds > 0:
                _STATE.offset += seconds
            await anyio.lowlevel.checkpoint()
            return
        await anyio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return f"SystemClock(testing={_STATE.enabled})"


SYSTEM_CLOCK: Clock = SystemClock()
"""The clock used wherever none is passed in."""


class _TestingToggle:
    """Returned by :func:`set_testing`; a context manager that restores the previous mode."""

    __slots__ = ("_previous",)

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> _TestingToggle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _STATE.enabled = self._previous


def set_testing(enabled: bool = True) -> _TestingToggle:
    """Make every backoff and breaker wait of the default clock instant (for test suites).

    Works as a plain call (``set_testing(True)`` in a conftest) and as a context manager that
    restores the previous mode on exit::

        with resilient_conn.set_testing():
            await resilient_conn.retry(flaky, max_attempts=5)   # no real sleeping

    Only waits that go through the library's clock are skipped: network timeouts (dial,
    ping) still run in real time, so tests against real sockets stay honest.

    Args:
        enabled: True to skip waits, False to sleep for real again.

    Returns:
        A context manager restoring the mode that was in force before this call.
    """
    previous = _STATE.enabled
    _STATE.enabled = enabled
    return _TestingToggle(previous)


def is_testing() -> bool:
    """Return whether the testing switch is on."""
    return _STATE.enabled
