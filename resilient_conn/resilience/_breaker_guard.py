"""The async guard of a circuit breaker: ``async with breaker:``, ``call()``, waiting for a probe.

:class:`AsyncGuard` is the awaiting half of :class:`~resilient_conn.CircuitBreaker`; the state
machine it reads and reports to is the other half (:mod:`.breaker`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from ._breaker_lease import BreakerLease
from ._breaker_model import BreakerState
from ._breaker_settings import BreakerSettings

__all__ = ["AsyncGuard"]

P = ParamSpec("P")
T = TypeVar("T")

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_DISABLED = BreakerState.DISABLED


class AsyncGuard:
    """``async with``, :meth:`call` and :meth:`wait_until_ready` of a ``CircuitBreaker``."""

    __slots__ = (
        "_calls",
        "_cfg",
        "_changed",
        "_consecutive_failures",
        "_in_flight",
        "_open_until",
        "_state",
        "_successes",
        "_task_probes",
    )

    # Fields the guard shares with the breaker (set by CircuitBreaker.__init__).
    _state: BreakerState
    _calls: int
    _successes: int
    _consecutive_failures: int
    _in_flight: int
    _open_until: float
    _cfg: BreakerSettings
    _changed: asyncio.Event | None
    _task_probes: dict[object, list[BreakerLease]] | None

    @property
    def state(self) -> BreakerState:
        """The current state (defined by the breaker)."""
        raise NotImplementedError

    def _acquire_slow(self) -> BreakerLease:
        raise NotImplementedError

    def _outcome(self, ok: bool, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> bool | None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        if self._state is _CLOSED:
            self._calls += 1
            return
        lease = self._acquire_slow()
        if lease._probe:
            if self._task_probes is None:
                self._task_probes = {}
            self._task_probes.setdefault(asyncio.current_task(), []).append(lease)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task_probes:
            leases = self._task_probes.get(asyncio.current_task())
            if leases:
                lease = leases.pop()
                if not leases:
                    del self._task_probes[asyncio.current_task()]
                lease.report(exc)
                return
        if exc is None:
            if self._state is _CLOSED:
                self._successes += 1
                self._consecutive_failures = 0
            else:
                self._outcome(True, None)
            return
        verdict = self._classify(exc)
        if verdict is not None:
            self._outcome(verdict, exc)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``await fn(*args, **kwargs)`` through the breaker.

        Returns:
            What ``fn`` returned.

        Raises:
            CircuitOpenError: The call was refused (``fn`` was not called).
        """
        if self._state is not _CLOSED:
            lease = self._acquire_slow()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                lease.report(exc)
                raise
            lease.success()
            return result
        self._calls += 1
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            verdict = self._classify(exc)
            if verdict is not None:
                self._outcome(verdict, exc)
            raise
        if self._state is _CLOSED:
            self._successes += 1
            self._consecutive_failures = 0
        else:
            self._outcome(True, None)
        return result

    async def wait_until_ready(self) -> None:
        """Return once a call would be admitted (never polls).

        OPEN: sleeps ``retry_after`` through the clock, then checks again. HALF_OPEN with every
        slot taken, and FORCED_OPEN: waits until a slot is released or the state changes
        (``reset()``). Returns at once when CLOSED, DISABLED or HALF_OPEN with a free slot.
        Being ready does not reserve the slot: another caller may take it first, so
        ``acquire()`` may still raise :class:`~resilient_conn.CircuitOpenError`.
        """
        clock = self._cfg.clock
        while True:
            state = self.state
            if state is _CLOSED or state is _DISABLED:
                return
            if state is _HALF_OPEN and self._in_flight < self._cfg.half_open_max_calls:
                return
            if state is _OPEN:
                await clock.sleep(self._open_until - clock.now())
                continue
            event = self._changed
            if event is None:
                event = self._changed = asyncio.Event()
            await event.wait()
