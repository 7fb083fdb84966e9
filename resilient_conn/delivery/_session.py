"""One session of a DeliveryHub, and the view of it that handlers use (internal).

:class:`ServerSession` is public (re-exported by :mod:`resilient_conn.delivery.server` and
:mod:`resilient_conn.delivery`); ``HubSession`` is the lasting state the hub keeps per session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from .._core.errors import ConnectionClosedError
from ._endpoint import Attachment, Endpoint
from ._links import ServerLink
from .records import DeliveryDeadLetter, DeliveryStats
from .state import GapNotice

__all__ = ["ServerSession", "HubSession"]


class HubSession:
    """One session's lasting state in a hub."""

    def __init__(self, endpoint: Endpoint, now: float) -> None:
        self.endpoint = endpoint
        self.lock = anyio.Lock()  # one attachment at a time
        self.current: ServerLink | None = None
        self.last_seen = now


class ServerSession:
    """One session, seen by one of its connections or by the server at large.

    :meth:`DeliveryHub.serve` yields one per connection; :meth:`DeliveryHub.get` returns one
    for sending from anywhere.

    ``send()`` works even while the client is away: the message waits in the session's
    window and goes out, in order, when the client is back. Iteration ends when this
    connection ends or another connection of the same session takes over.
    """

    def __init__(self, state: HubSession, att: Attachment | None) -> None:
        self._state = state
        self._att = att
        self._ended = ConnectionClosedError(f"session {self.session!r}: connection ended")

    def _stop(self) -> BaseException | None:
        att = self._att
        return self._ended if att is not None and att.down else None

    @property
    def session(self) -> str:
        """The session identity (chosen by the client)."""
        return self._state.endpoint.state.session

    @property
    def epoch(self) -> str:
        """This side's stream epoch."""
        return self._state.endpoint.state.epoch

    @property
    def peer_epoch(self) -> str | None:
        """The client's stream epoch."""
        return self._state.endpoint.state.inbound.peer_epoch

    @property
    def position(self) -> tuple[str, int] | None:
        """``(client epoch, seq)`` of the message :meth:`recv` returned last.

        Keep it with what the application did with that message; after a restart, hand it
        back through ``DeliveryHub(resume=...)`` and the re-sent copies are dropped.
        """
        return self._state.endpoint.position

    @property
    def attached(self) -> bool:
        """Whether a connection of this session is attached now (this one, for a view)."""
        if self._att is not None:
            return not self._att.down
        return self._state.current is not None

    @property
    def unacked(self) -> int:
        """Messages sent to the client and not acknowledged yet."""
        return len(self._state.endpoint.state.window)

    @property
    def stats(self) -> DeliveryStats:
        """The session's counters."""
        return self._state.endpoint.stats

    @property
    def dead_letters(self) -> list[DeliveryDeadLetter]:
        """The session's recent dead letters."""
        return list(self._state.endpoint.dead_letters)

    @property
    def gaps(self) -> list[GapNotice]:
        """The session's recent gap notices."""
        return list(self._state.endpoint.gaps)

    def __repr__(self) -> str:
        return (
            f"<ServerSession {self.session!r} epoch={self.epoch} attached={self.attached} "
            f"unacked={self.unacked}>"
        )

    async def send(self, message: str | bytes) -> int:
        """Send ``message`` to the client at least once, in order (see ``AckedStream.send``).

        Returns:
            Its sequence number (0 if it was dead-lettered at once).
        """
        return await self._state.endpoint.send(message)

    async def recv(self) -> str | bytes:
        """The client's next message (each once, in order).

        Raises:
            ConnectionClosedError: This connection ended (or another one took the session
                over); nothing is lost: what was not delivered is re-sent to the next one.
        """
        if self._att is None:
            raise RuntimeError("recv() needs the view DeliveryHub.serve() yields")
        return await self._state.endpoint.recv(self._stop)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self

    async def __anext__(self) -> str | bytes:
        if self._att is None:
            raise RuntimeError("iteration needs the view DeliveryHub.serve() yields")
        try:
            return await self._state.endpoint.recv(self._stop)
        except ConnectionClosedError:
            raise StopAsyncIteration from None

    async def wait_acked(self, timeout: float | None = None) -> None:
        """Wait until everything sent so far is acknowledged by the client.

        Raises:
            TimeoutError: Not within ``timeout`` seconds.
        """
        await self._state.endpoint.wait_acked(timeout)
