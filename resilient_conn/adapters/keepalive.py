"""Keepalive on a loop timer: no task while the connection is idle.

:func:`~resilient_conn.adapters.websocket.keepalive` is a coroutine that sleeps between pings,
so every open connection holds a task (and its stack and cancel scope) that does nothing
most of the time. :class:`Keepalive` holds a ``loop.call_later`` handle instead; only for the
round trip of each ping (microseconds on a healthy link, at most ``timeout`` on a dead one)
does a short task exist. Same contract: ``on_alive(rtt)`` after each pong, ``on_dead(reason,
error)`` once when a pong does not come within ``timeout`` (expected to abort the transport),
nothing when the transport closes by itself.

It measures the network, so it runs on the event loop's real clock, like the coroutine.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Protocol

from websockets.exceptions import ConcurrencyError, ConnectionClosed

from .base import Transport

__all__ = ["Keepalive", "KeepaliveOwner"]


class KeepaliveOwner(Protocol):
    """An object with both callbacks of a :class:`Keepalive` as methods (a connection)."""

    def report_alive(self, rtt: float | None = None) -> None:
        """Called with the round trip in seconds after each pong."""
        ...

    def fail_current(self, reason: str, error: BaseException | None = None) -> None:
        """Called once as ``fail_current("ping_timeout", TimeoutError)`` when a pong is late."""
        ...


class Keepalive:
    """Ping ``transport`` every ``interval`` seconds from a timer; report round trips or death.

    Args:
        transport: The transport to ping.
        interval: Seconds between the end of one round trip and the next ping (> 0).
        timeout: Seconds to wait for a pong (> 0).
        on_alive: Called with the round trip in seconds after each pong.
        on_dead: Called once as ``on_dead("ping_timeout", TimeoutError)`` when a pong is late.
        owner: Instead of both callbacks, an object with them as methods (``report_alive``,
            ``fail_current``: a connection), so no bound method is held per connection.

    Call :meth:`start` from the event loop, and :meth:`stop` when the transport is done with
    (it may be called more than once, from a callback too); :meth:`aclose` also waits for a
    ping in flight to finish cancelling, so nothing outlives it.

    Attributes:
        context: The context every ping runs in: a copy of the one :meth:`start` was first
            called in, made once and passed to each timer (a timer would otherwise copy the
            context again at each arming). Others may run callbacks in it too (the parked
            connection does), one at a time as the loop runs them.
    """

    __slots__ = ("_callbacks", "_handle", "_interval", "_owner", "_task", "_timeout", "_ws",
                 "context")

    def __init__(
        self,
        transport: Transport,
        interval: float,
        timeout: float,
        *,
        on_alive: Callable[[float], None] | None = None,
        on_dead: Callable[[str, BaseException], None] | None = None,
        owner: KeepaliveOwner | None = None,
    ) -> None:
        if not interval > 0 or not timeout > 0:
            raise ValueError(f"interval and timeout must be > 0, got {interval!r}, {timeout!r}")
        callbacks = (on_alive is not None, on_dead is not None)
        if callbacks != ((False, False) if owner is not None else (True, True)):
            raise ValueError("pass both on_alive and on_dead, or owner alone")
        self._ws = transport
        self._interval = interval
        self._timeout = timeout
        # (on_alive, on_dead), or None with an owner: one slot, no bound method per connection
        self._callbacks: (
            tuple[Callable[[float], None], Callable[[str, BaseException], None]] | None
        ) = None if on_alive is None or on_dead is None else (on_alive, on_dead)
        self._owner = owner
        self.context: contextvars.Context | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`stop` or the transport's end."""
        return self._handle is not None or self._task is not None

    def start(self) -> None:
        """Schedule the first ping ``interval`` seconds from now (idempotent)."""
        if not self.running:
            loop = asyncio.get_running_loop()
            if self.context is None:
                self.context = contextvars.copy_context()
            self._handle = loop.call_later(self._interval, self, context=self.context)

    def stop(self) -> None:
        """Cancel the next ping and any round trip in flight."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        """Stop, and wait until a round trip in flight has finished cancelling."""
        task = self._task
        self.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _fire(self) -> None:
        """The timer fired: start the round trip."""
        self._handle = None
        self._task = asyncio.get_running_loop().create_task(
            self._round_trip(), name="resilient_conn.keepalive_ping"
        )

    # The keepalive is its own timer callback: no bound method is held between pings.
    __call__ = _fire

    async def _round_trip(self) -> None:
        try:
            # The deadline covers the ping's write too: a peer that stopped reading (the ping
            # stuck behind a full send buffer) is as dead as one that stopped answering.
            async with asyncio.timeout(self._timeout):
                pong = await self._ws.ping()
                rtt = await pong
        except (ConnectionClosed, ConcurrencyError):
            self._task = None
            return
        except TimeoutError:
            self._task = None
            error = TimeoutError(f"no pong within {self._timeout}s")
            if self._owner is not None:
                self._owner.fail_current("ping_timeout", error)
            elif self._callbacks is not None:
                self._callbacks[1]("ping_timeout", error)
            return
        self._task = None
        if self._owner is not None:
            self._owner.report_alive(rtt)
        elif self._callbacks is not None:
            self._callbacks[0](rtt)
        if self._ws.is_open:
            self._handle = asyncio.get_running_loop().call_later(
                self._interval, self, context=self.context
            )
