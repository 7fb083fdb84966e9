"""The flap guard's stable timer: a connection counts as a success once up ``stable_after``.

Split from :mod:`._supervisor` (whose :class:`~._supervisor.Supervising` inherits it) to keep
that module one read long. A loop timer where one will do; a task where only an await can do
the work (a FakeClock or the testing switch advance only through ``clock.sleep``, and a
shared coordinator is told of a stable connection by an await).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock, is_testing
from .._core.log import debug_enabled
from ..coordination import RecoveryCoordinator
from ..resilience.breaker import BreakerLease
from ._gate import Gate
from .decide import Decisions
from .options import ConnectionOptions

__all__ = ["StableTimer"]


class StableTimer:
    """The stable-timer half of ``ResilientConnection`` (its fields are set by ``__init__``)."""

    __slots__ = ("_stable", "_stable_handle")  # the rest: Supervising's (_supervisor.py)

    coordinator: RecoveryCoordinator | None
    options: ConnectionOptions
    _clock: Clock
    _decisions: Decisions
    _lease: BreakerLease | None
    _log: Any
    _permit: Gate | None
    _stable: bool
    _stable_handle: asyncio.TimerHandle | None

    def _wake(self) -> None:
        raise NotImplementedError  # defined by the supervisor half

    def _start_stable_timer(self, lease: BreakerLease) -> asyncio.Task[None] | None:
        """Start the flap guard's timer: a loop timer, or a sleeping task where one is needed.

        A loop timer's handle stays in ``_stable_handle`` only until it fires (None is
        returned). Only ``clock.sleep`` advances a FakeClock or the testing switch, and a
        shared coordinator is told of a stable connection by an await: those get a task.
        """
        loop = asyncio.get_running_loop()
        if self._clock is SYSTEM_CLOCK and not is_testing() and self.coordinator is None:
            self._stable_handle = loop.call_later(self.options.stable_after, self._stable_fired)
            return None
        return loop.create_task(self._stable_timer(lease))

    async def _stable_timer(self, lease: BreakerLease) -> None:
        await self._clock.sleep(self.options.stable_after)
        self._mark_stable(lease)
        if self._permit is not None:
            await self._permit.succeeded()

    def _stable_fired(self) -> None:
        self._stable_handle = None
        lease = self._lease
        if lease is not None:  # always, while the transport the timer was started for serves
            self._mark_stable(lease)

    def _mark_stable(self, lease: BreakerLease) -> None:
        self._stable = True
        self._decisions.proved_stable()
        lease.success()
        self._wake()  # health (attempts, stability) changed
        if debug_enabled(self._log):
            self._log.debug("resilient_conn.stable", after=self.options.stable_after)
