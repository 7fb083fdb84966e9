"""The receiving half of a connection: ``recv()`` and ``async for``, across reconnects.

Mixed into :class:`~resilient_conn.ResilientConnection` above :class:`._supervisor.Supervising`,
whose fields it reads: each message comes from the current transport's own ``recv()``, and when
that transport ends the call waits for the next one (or for the close).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from websockets.exceptions import ConnectionClosed

from .._core.errors import ConnectionClosedError
from ._supervisor import Message, Supervising, describe
from .buffer import message_size

__all__ = ["Receiving"]


class Receiving(Supervising):
    """``recv()`` and iteration of a ``ResilientConnection`` (fields set by ``__init__``)."""

    __slots__ = ()  # the fields are ResilientConnection's slots

    async def recv(self) -> Message:
        """Receive the next message, waiting across reconnects.

        Raises:
            ConnectionClosedError: The connection was closed by its user.
            ConnectionFailedError: The connection failed (``__cause__`` says why).
        """
        self._refuse_recv()
        while True:
            ws = self._ws
            if ws is not None and not self._closing:
                message = ws.recv_nowait()
                if message is None:
                    try:
                        message = await ws.recv()
                    except ConnectionClosed:
                        await self._wait_for_transport(ws)
                        continue
                self._count_in(message)
                return message
            await self._wait_for_transport(ws)

    def _deliver(self, message: Message) -> None:
        """Give one message to ``on_message`` (the transport calls this as it arrives)."""
        stats = self.stats  # _count_in(), inline: this runs once per message
        stats.messages_in += 1
        # (bytes, and ASCII text: len() is the size; only other text is encoded to count it)
        stats.bytes_in += len(message) if message.isascii() else message_size(message)
        try:
            self._on_message(message)  # type: ignore[misc]  # set whenever this is called
        except Exception as exc:  # the next message still comes: say so, never silently
            stats.handler_errors += 1
            self._log.error("resilient_conn.on_message_failed", error=describe(exc),
                            exc_info=exc)

    def _refuse_recv(self) -> None:
        if self._on_message is not None:
            raise RuntimeError(
                f"{self.name}: messages go to on_message; recv() and async for get none"
            )

    def _count_in(self, message: Message) -> None:
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += message_size(message)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        # Fast path: a message the open transport already holds is taken without a coroutine
        # (recv_nowait); else its own recv() is awaited directly. Anything unusual (no
        # transport, closing, the transport ended) takes the full path below.
        ws = self._ws
        if ws is not None and not self._closing:
            message = ws.recv_nowait()
            if message is None:
                self._refuse_recv()
                try:
                    message = await ws.recv()
                except ConnectionClosed:
                    message = None
            if message is not None:
                stats = self.stats  # _count_in(), inline: this runs once per message
                stats.messages_in += 1
                stats.bytes_in += len(message) if message.isascii() else message_size(message)
                return message
        try:
            return await self.recv()
        except ConnectionClosedError:
            raise StopAsyncIteration from None
