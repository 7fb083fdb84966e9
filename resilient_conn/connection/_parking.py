"""Parking: an idle connection holds no task while its transport serves.

Once a transport is up and no helper task of the supervisor's runs beside the watch on it (no
probe round trip, the stable timer a loop timer, no shared coordinator), the supervisor need
not keep a task suspended on the transport's end. ``on_open`` plus the flush may still run:
that task is the connection's (``_opener``), and whoever ends the transport's watch (the
resumed task, or the closer) stops and awaits it as the supervisor would have. It parks
instead: a callback on the transport's end (``watch()``: ``serve()`` without a future of its
own, the transport's own end carries the callback), and its task returns. When the transport
ends (aborted by keepalive or not), the callback starts a new supervisor task in a copy of the
old one's context (its marks included; the keepalive's copy, when there is one) that carries
on where the old one would have: the cleanup and the decision after a transport
(:meth:`Parking._resume`), then the loop.

A close while parked (:mod:`._closing`) takes the transport over: :meth:`_leave_parked` does
what the cancelled supervisor's cleanup would have done (keepalive and stable timer stopped,
the lease released), and a callback that comes later does nothing. A resumed task cancelled
before it ran a line leaves ``_parked`` set, so the closer does the same cleanup for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import anyio

from ..adapters.base import Transport
from ..adapters.keepalive import Keepalive
from ..resilience.breaker import BreakerLease
from ..resilience.classify import Verdict
from ._marks import supervisor_task_name
from ._stable import StableTimer

__all__ = ["Parking"]


class Parking(StableTimer):
    """The parking half of ``ResilientConnection`` (its fields are set by ``__init__``)."""

    # the fields this half sets; the rest are Supervising's slots (_supervisor.py)
    __slots__ = ("_alive", "_lease", "_parked", "_supervisor")

    _alive: Keepalive | None
    _parked: bool
    _lease: BreakerLease | None
    _supervisor: asyncio.Task[None] | None
    name: str
    _closing: bool
    _scope: anyio.CancelScope | None
    _ws: Transport | None

    def _supervise(self, resumed: bool = False) -> Coroutine[Any, Any, None]:
        raise NotImplementedError  # defined by the supervisor half

    async def _served(self, alive: Keepalive | None, helpers: None) -> bool:
        raise NotImplementedError  # defined by the supervisor half

    def _ended(self, ws: Transport) -> tuple[Verdict, BaseException | None]:
        raise NotImplementedError  # defined by the supervisor half

    def _decide(
        self, verdict: Verdict, error: BaseException | None, stable: bool
    ) -> float | None:
        raise NotImplementedError  # defined by the supervisor half

    def _park(
        self, ws: Transport, alive: Keepalive | None, helpers: list[Any] | None
    ) -> bool:
        """Park on ``ws``'s end unless a helper task runs beside the watch; True: task may end."""
        if helpers or self._scope is not None or self._closing:
            return False
        # in this task's context, marks and all: the keepalive's copy of it if there is one
        # (made in this task; one context held per connection, not two). The callback runs
        # on a later turn of the loop, after the fields below are set; False: it ended
        # already, serve it as usual.
        if not ws.watch(self._unpark, None if alive is None else alive.context):
            return False
        self._alive, self._parked, self._supervisor = alive, True, None
        return True

    def _unpark(self, _served: object) -> None:
        """The transport ended while parked: start the supervisor again (unless closing)."""
        if self._parked and self._supervisor is None and not self._closing:
            task = self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(resumed=True), name=supervisor_task_name(self.name)
            )
            # A connection never closed whose transport ends while asyncio.run() tears the
            # loop down gets this task after the teardown cancelled every task; the loop
            # closes with it pending. asyncio would print "Task was destroyed but it is
            # pending!" once per connection; raw websockets says nothing there, nor do we.
            # (A running loop runs it as ever: this flag only silences that message. A task
            # factory whose tasks lack the flag keeps asyncio's message.)
            with contextlib.suppress(AttributeError):
                task._log_destroy_pending = False  # type: ignore[attr-defined]

    async def _resume(self) -> float | None:
        """Carry on after a parked transport ended, as the old task would have.

        The cleanup and the decision: returns the pause before the next dial, or None to stop.
        """
        ws, lease, alive = self._ws, self._lease, self._alive
        self._parked, self._alive = False, None
        assert ws is not None
        assert lease is not None
        try:
            stable = await self._served(alive, None)
            verdict, error = self._ended(ws)
        except BaseException:
            lease.release()
            raise
        if not stable:
            lease.failure(error)
        return self._decide(verdict, error, stable)

    async def _leave_parked(self) -> None:
        """The closer takes a parked connection's transport over: clean up as it would have.

        As the cancelled supervisor's cleanup: the transport stays, for the closer to drain.
        """
        lease, alive = self._lease, self._alive
        self._parked, self._alive = False, None
        try:
            await self._served(alive, None)
        finally:
            if lease is not None:
                lease.release()

    def _leave_parked_now(self) -> None:
        """:meth:`_leave_parked` without waiting (the closer itself was cancelled)."""
        lease, alive = self._lease, self._alive
        self._parked, self._alive, self._lease = False, None, None
        handle, self._stable_handle = self._stable_handle, None
        if handle is not None:
            handle.cancel()
        if alive is not None:
            alive.stop()
        if lease is not None:
            lease.release()
