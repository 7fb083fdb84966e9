"""The Phoenix heartbeat: liveness of the transport under a RealtimeClient.

Every ``interval`` seconds :meth:`Heartbeat.run` sends a ``heartbeat`` on topic ``phoenix``
(``buffer=False``: a heartbeat is worth nothing later). If the previous one is still unanswered
at the next beat, on the same transport, the transport is declared dead
(``fail_current("heartbeat_timeout")``) and the connection reconnects, as phoenix.js does; so is
one whose heartbeat could not even be written by then (a peer that stopped reading). Every
reply is a round trip reported with ``report_alive(rtt)``; :meth:`Heartbeat.probe` is the
connection's ``probe`` (what ``check()`` measures). Heartbeats run in real time: they are
network timeouts, like the connection's keepalive.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .._core.errors import ConnectionClosedError, ConnectionFailedError, NotConnectedError
from .protocol import HEARTBEAT, PHOENIX_TOPIC, Message, RefCounter, Serializer

if TYPE_CHECKING:
    from ..connection.connection import ResilientConnection

__all__ = ["Heartbeat"]


class Heartbeat:
    """The heartbeat of one client's connection.

    Args:
        conn: The connection whose transport the heartbeat watches.
        serializer: Encodes the heartbeat messages.
        refs: The socket's ref counter (heartbeats share it with pushes).
        interval: Returns the seconds between heartbeats now (the client's setting).
        stats: The client's counters (``heartbeat_timeouts`` is counted here).
        log: The client's structlog logger.
        on_beat: Called with ``anyio.current_time()`` at every beat (to expire old replies).
    """

    def __init__(
        self,
        conn: ResilientConnection,
        serializer: Serializer,
        refs: RefCounter,
        *,
        interval: Callable[[], float],
        stats: Counter[str],
        log: Any,
        on_beat: Callable[[float], None],
    ) -> None:
        self._conn = conn
        self._ser = serializer
        self._refs = refs
        self._interval = interval
        self._stats = stats
        self._log = log
        self._on_beat = on_beat
        self._pending: tuple[str, float, int] | None = None
        self._probes: dict[str, tuple[asyncio.Future[float], float]] = {}

    def reset(self) -> None:
        """Forget the heartbeat in flight (its transport ended or a new one opened)."""
        self._pending = None

    async def run(self) -> None:
        """Beat until the connection is closed or failed (the client runs this as a task)."""
        while True:
            await anyio.sleep(self._interval())
            self._on_beat(anyio.current_time())
            conn = self._conn
            pending, self._pending = self._pending, None
            if pending is not None and pending[2] == conn.generation and conn.is_connected:
                self._timed_out("no heartbeat reply")
                continue
            ref = self._refs.next()
            generation = conn.generation
            self._pending = (ref, anyio.current_time(), generation)
            frame = self._ser.encode(Message(PHOENIX_TOPIC, HEARTBEAT, {}, ref))
            try:
                # A peer that stopped reading holds the write: by the next beat it is dead.
                with anyio.move_on_after(self._interval()) as scope:
                    await conn.send(frame, buffer=False)
            except NotConnectedError:
                self._pending = None
            except (ConnectionClosedError, ConnectionFailedError):
                return
            else:
                if scope.cancelled_caught and conn.generation == generation:
                    self._pending = None
                    self._timed_out("heartbeat not written")

    def _timed_out(self, what: str) -> None:
        """The transport is dead: count it, log it, and have the connection abort it."""
        interval = self._interval()
        self._stats["heartbeat_timeouts"] += 1
        self._log.warning("resilient_conn.realtime.heartbeat_timeout", interval=interval)
        self._conn.fail_current("heartbeat_timeout", TimeoutError(f"{what} within {interval}s"))

    async def probe(self, conn: ResilientConnection) -> float:
        """Send one heartbeat now and return its round trip in seconds (the connection's probe)."""
        ref = self._refs.next()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._probes[ref] = (future, anyio.current_time())
        try:
            await conn.send(
                self._ser.encode(Message(PHOENIX_TOPIC, HEARTBEAT, {}, ref)), buffer=False
            )
            return await future
        finally:
            self._probes.pop(ref, None)

    def on_reply(self, ref: str | None) -> None:
        """A reply on topic ``phoenix`` arrived: report the round trip it ends."""
        now = anyio.current_time()
        pending = self._pending
        if pending is not None and pending[0] == ref:
            self._pending = None
            self._conn.report_alive(now - pending[1])
            return
        probe = self._probes.get(ref or "")
        if probe is not None and not probe[0].done():
            probe[0].set_result(now - probe[1])
            self._conn.report_alive(now - probe[1])
