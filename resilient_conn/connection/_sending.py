"""Sending: ``send()``, ``send_nowait()`` for plain functions, and ``send_many()``.

``send_many()`` is for several messages at once: one write to the socket for the lot.

Mixed into :class:`~resilient_conn.ResilientConnection` above
:class:`._supervisor.Supervising`, whose fields it reads. For a producer that has several
messages ready at once (a queue, a re-send after a reconnect): each message still goes out
as its own WebSocket message, in order, but the transport writes them together (websockets:
one system call instead of one per message, on this side and usually on the peer's too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from websockets.exceptions import ConnectionClosed

from .._core.errors import BufferFullError, NotConnectedError
from ..adapters.base import Transport
from ._supervisor import ON_OPEN, Message, Supervising
from .buffer import message_size

__all__ = ["Sending"]


def _coerce(message: object) -> Message:
    """A message not exactly str/bytes: a subclass as is, bytes-like copied, else TypeError."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"message must be str or bytes, got {type(message).__name__}")


class Sending(Supervising):
    """``send_many()`` of a ``ResilientConnection`` (fields set by ``__init__``)."""

    async def _finish_write(self, ws: Transport, pending: Awaitable[None]) -> bool:
        """Finish a write that has to wait, within ``send_timeout``; False if it was lost.

        Lost: the transport died under it, or its peer stopped reading for ``send_timeout``
        (then it is aborted as a dead peer). What was being written may not have arrived, so
        the caller buffers it for the next transport; this one is no longer treated as live.
        """
        try:
            async with asyncio.timeout(self.options.send_timeout):
                await pending
        except (ConnectionClosed, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                self.fail_current("send_timeout", exc)
            if self._ws is ws:
                self._live = False
            return False
        return True

    def _to_outbox(self, message: Message, buffer: bool, unwritten: str) -> bool:
        """A message that could not be written now: to the outbound buffer, or refused.

        Returns False when the buffer has no room yet (overflow ``block``).

        Raises:
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed.
            NotConnectedError: ``buffer`` is False (``unwritten`` says why).
        """
        self._raise_if_over()
        if not buffer:
            raise NotConnectedError(f"{self.name}: {unwritten}")
        return self._outbox.admit(message)

    async def _wait_for_room(self, message: Message) -> None:
        """overflow="block": wait for room in the buffer, or for the transport to go live."""
        try:
            async with asyncio.timeout(self.options.send_timeout):
                while True:
                    await self._changed.wait()
                    self._raise_if_over()
                    if self._live and self._ws is not None:
                        await self.send(message)
                        return
                    if self._outbox.try_append(message):
                        return
        except TimeoutError:
            raise BufferFullError(
                f"{self.name}: outbound buffer still full after {self.options.send_timeout}s"
            ) from None

    async def send(self, message: Message, *, buffer: bool = True) -> None:
        """Send a message; while disconnected, buffer it (bounded) for after the reconnect.

        Args:
            message: Text (``str``) or binary (``bytes``; a ``bytearray`` or ``memoryview`` is
                copied to ``bytes``) message. Anything else is a TypeError, connected or not.
            buffer: False to raise :class:`NotConnectedError` instead of buffering.

        Raises:
            BufferFullError: The buffer is full and ``overflow`` is ``"raise"``, or ``"block"``
                waited ``send_timeout`` in vain.
            NotConnectedError: ``buffer=False`` and no transport is open.
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed by its user.
        """
        cls = message.__class__
        if cls is not str and cls is not bytes:  # users pass anything: one rule on every path
            message = _coerce(message)
        ws = self._ws
        if ws is not None and (self._live or ON_OPEN.get() == (id(self), self.generation)):
            # Written at once (no coroutine, no timer) unless the transport must wait: the
            # peer is not reading, or it is closing. Only then a deadline; if the write is
            # lost there, the message is buffered for the next transport (below).
            pending = ws.start_send(message)
            if pending is None or await self._finish_write(ws, pending):
                stats = self.stats
                stats.messages_out += 1
                # (bytes, and ASCII text: len() is the size; only other text is encoded)
                stats.bytes_out += len(message) if message.isascii() else message_size(message)
                return
        if not self._to_outbox(message, buffer, "no transport is open"):
            await self._wait_for_room(message)

    def send_nowait(self, message: Message, *, buffer: bool = True) -> None:
        """Send without waiting: from ``on_message``, a callback, any plain function.

        Written at once when the transport can take it: connected, and (if the peer is
        behind) the transport's write buffer holds under ``buffer_bytes``. Otherwise
        (disconnected, reconnecting, a peer that stopped reading, a closing transport) it
        takes the outbound buffer, as ``send()`` does while disconnected: bounded, in order,
        out as soon as the transport can take it (after the reconnect, or once the peer
        catches up; sends made meanwhile, ``send()`` too, queue behind it so the order
        holds). A peer that never reads again is dropped after ``close_timeout`` (or by
        keepalive) and the connection reconnects.

        Args:
            message: Text (``str``) or binary (``bytes``; a ``bytearray`` or ``memoryview``
                is copied to ``bytes``) message. Anything else is a TypeError.
            buffer: False to raise :class:`NotConnectedError` instead of buffering when it
                cannot be written at once.

        Raises:
            BufferFullError: The buffer is full and ``overflow`` is ``"raise"`` or
                ``"block"`` (a plain function cannot wait for room: use ``send()`` to wait).
            NotConnectedError: ``buffer=False`` and it cannot be written at once.
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed by its user.
        """
        cls = message.__class__
        if cls is not str and cls is not bytes:  # one rule on every path, as send()
            message = _coerce(message)
        ws = self._ws
        live = ws is not None and (self._live or ON_OPEN.get() == (id(self), self.generation))
        # a peer that is behind may still be handed up to buffer_bytes: the transport's own
        # write buffer takes it (raw picows' and asyncio's way, here bounded)
        if live and ws.send_now(message, self.options.buffer_bytes):  # type: ignore[union-attr]
            stats = self.stats
            stats.messages_out += 1
            # (bytes, and ASCII text: len() is the size; only other text is encoded to count)
            stats.bytes_out += len(message) if message.isascii() else message_size(message)
            return
        if not self._to_outbox(message, buffer, "the message cannot be written now"):
            raise BufferFullError(
                f"{self.name}: outbound buffer full (send_nowait cannot wait for room)"
            )
        if live and self._live:  # the transport must wait: flush behind it, in order
            self._live = False
            self._flush_behind(ws)  # type: ignore[arg-type]
        self._wake()

    async def send_many(self, messages: Sequence[Message], *, buffer: bool = True) -> None:
        """Send ``messages`` in order, each as its own message, in one write when connected.

        Like ``await conn.send(m)`` for each message in turn, with the same rules (while
        disconnected they are buffered, bounded, or ``NotConnectedError`` is raised), but
        the transport writes them together: cheaper per message than ``send()`` in a loop.

        Args:
            messages: Text (``str``) or binary (``bytes``; a ``bytearray`` or ``memoryview``
                is copied to ``bytes``) messages. Anything else is a TypeError before any
                message is sent.
            buffer: False to raise :class:`NotConnectedError` instead of buffering (then
                none of the messages was sent).

        Raises:
            BufferFullError: As for ``send()``.
            NotConnectedError: ``buffer=False`` and no transport is open.
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed by its user.
        """
        # users pass anything: one rule on every path, as send()
        batch = [m if m.__class__ is str or m.__class__ is bytes else _coerce(m) for m in messages]
        if not batch:
            return
        ws = self._ws
        if ws is not None and (self._live or ON_OPEN.get() == (id(self), self.generation)):
            # as send(): written at once unless the transport must wait; if lost, the
            # messages take send()'s path (the buffer)
            pending = ws.start_send_many(batch)
            if pending is None or await self._finish_write(ws, pending):
                stats = self.stats
                stats.messages_out += len(batch)
                stats.bytes_out += sum(map(message_size, batch))
                return
        self._raise_if_over()
        if not buffer:
            raise NotConnectedError(f"{self.name}: no transport is open")
        for message in batch:
            await self.send(message)
