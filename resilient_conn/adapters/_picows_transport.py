"""PicowsTransport: picows' frame callbacks turned into a websockets-style Transport.

See :mod:`resilient_conn.adapters.picows` for the behaviour; this module is the listener that
picows calls on each frame, and the ``send``/``recv``/``ping``/``close`` the supervisor awaits.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import Context
from typing import Any, cast

import picows
from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
)
from websockets.frames import Close

from ._picows_close import close_info, closed_error
from .base import Message

__all__ = ["PicowsTransport"]

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONT = picows.WSMsgType.CONTINUATION
_PONG = picows.WSMsgType.PONG
_CLOSE = picows.WSMsgType.CLOSE


def _kind(message: object) -> picows.WSMsgType:
    """The frame type for a message that is not exactly ``str``."""
    if isinstance(message, str):
        return _TEXT
    if isinstance(message, bytes | bytearray | memoryview):
        return _BINARY
    raise TypeError(f"message must be str or bytes, got {type(message).__name__}")


class PicowsTransport(picows.WSListener):
    """One picows connection seen as a websockets-style transport (built by the adapter)."""

    # Slots: on a Python subclass of picows' Cython listener, an attribute kept in the
    # instance __dict__ costs ~23 ns a read against ~6 ns for a slot (CPython 3.11), and
    # on_ws_frame / recv_nowait / start_send read a dozen per message. (__dict__ stays for
    # anything else set on an instance.)
    __slots__ = (
        "__dict__", "_close_exc", "_close_timeout", "_done", "_drain", "_failure", "_frag_size",
        "_frag_text", "_frags", "_handler", "_loop", "_max_queue", "_max_size", "_pings",
        "_queue", "_reading_paused", "_waiter", "_ws", "subprotocol",
    )

    def __init__(self, max_size: int, max_queue: int, close_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._ws: picows.WSTransport | None = None
        self._max_size = max_size
        self._max_queue = max_queue
        self._close_timeout = close_timeout
        self._queue: deque[Message] = deque()
        self._handler: Callable[[Message], object] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._frags: list[bytes] | None = None
        self._frag_text = False
        self._frag_size = 0
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self._reading_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._close_exc: ConnectionClosed | None = None
        self._failure: BaseException | None = None
        self.subprotocol: str | None = None
        """The subprotocol the server chose (None if none)."""

    # ------------------------------------------------------------------ picows callbacks
    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        """Keep the picows transport (called by picows once the handshake is done)."""
        self._ws = transport
        # picows stores the error behind a disconnect it initiated (a protocol violation,
        # e.g. a frame over max_size) on a future only ``wait_disconnected()`` reaches; never
        # awaited, asyncio would log it as unretrieved. Take the future that coroutine waits
        # on (one step, no task) and keep its error as the cause of close_exc.
        waiting = transport.wait_disconnected()
        try:
            future = waiting.send(None)
        except StopIteration:
            return
        finally:
            waiting.close()
        future.add_done_callback(self._on_disconnect_error)

    def _on_disconnect_error(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            self._failure = future.exception()

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        """Turn one frame into a message, a pong, or the start of closing (called by picows)."""
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if self._frags is not None:
                self._fail(1002, "new message in the middle of a fragmented one")
                return
            # (no size check: picows refuses any frame over max_frame_size, which the
            # adapter sets to max_size, closing with 1009 itself; fragments are summed in
            # _continue)
            if frame.fin:
                if kind is _TEXT:
                    try:
                        message: Message = frame.get_payload_as_utf8_text()
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8 in a text message")
                        return
                else:
                    message = frame.get_payload_as_bytes()
                handler = self._handler
                if handler is not None:  # on_message: straight to it, no queue
                    handler(message)
                    return
                queue = self._queue  # _push(), inline: this runs once per message
                queue.append(message)
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                if len(queue) >= self._max_queue and not self._reading_paused:
                    self._pause_reading()
                return
            self._frags = [frame.get_payload_as_bytes()]
            self._frag_text = kind is _TEXT
            self._frag_size = frame.payload_size
        elif kind is _CONT:
            self._continue(frame)
        elif kind is _PONG:
            self._pong(frame.get_payload_as_bytes())
        elif kind is _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        """Settle everything waiting on this transport (called by picows)."""
        exc = self.close_exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for future, _ in self._pings.values():
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: an ignored ping must not log an error
        self._pings.clear()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if not self._done.done():
            self._done.set_result(None)

    def pause_writing(self) -> None:
        """The peer stopped reading: sends wait until it catches up (called by asyncio)."""
        if self._drain is None:
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        """The write buffer drained: let sends go on (called by asyncio)."""
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------ frames -> messages
    def _continue(self, frame: picows.WSFrame) -> None:
        frags = self._frags
        if frags is None:
            self._fail(1002, "continuation frame without a message")
            return
        self._frag_size += frame.payload_size
        if self._frag_size > self._max_size:
            self._frags = None
            self._fail(1009, f"message over max_size ({self._max_size} bytes)")
            return
        frags.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return
        self._frags = None
        data = b"".join(frags)
        if self._frag_text:
            try:
                self._push(data.decode("utf-8"))
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in a text message")
        else:
            self._push(data)

    def _push(self, message: Message) -> None:
        handler = self._handler
        if handler is not None:
            handler(message)
            return
        queue = self._queue
        queue.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(queue) >= self._max_queue and not self._reading_paused:
            self._pause_reading()

    def _pause_reading(self) -> None:
        """Stop reading the socket until the consumer catches up (``max_queue`` reached)."""
        if self._ws is not None:
            self._reading_paused = True
            self._ws.underlying_transport.pause_reading()

    def _pong(self, data: bytes) -> None:
        pings = self._pings
        if data not in pings:
            return  # unsolicited
        now = self._loop.time()
        while pings:  # a pong acknowledges every earlier ping too
            key = next(iter(pings))
            future, sent_at = pings.pop(key)
            if not future.done():
                future.set_result(now - sent_at)
            if key == data:
                return

    def _fail(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is None or ws.is_disconnected:
            return
        if not ws.is_close_frame_sent:
            ws.send_close(cast(Any, code), reason.encode())  # any int: picows' stub says enum
        ws.disconnect()

    # ------------------------------------------------------------------ Transport
    @property
    def is_open(self) -> bool:
        """True until a close frame was sent or received or the connection dropped."""
        ws = self._ws
        return ws is not None and not ws.is_disconnected and ws.close_handshake is None

    @property
    def close_exc(self) -> ConnectionClosed:
        """How the transport ended: ``ConnectionClosedOK`` or ``ConnectionClosedError``."""
        if self._close_exc is not None:
            return self._close_exc
        ws = self._ws
        exc = closed_error(None if ws is None else ws.close_handshake, self._failure)
        if self._done.done():
            self._close_exc = exc  # final once the connection is gone
        return exc

    def _received_close(self) -> Close | None:
        ws = self._ws
        handshake = None if ws is None else ws.close_handshake
        return None if handshake is None else close_info(handshake.recv)

    @property
    def close_code(self) -> int | None:
        """The close code received (None while open, or if the peer sent none)."""
        rcvd = self._received_close()
        return None if rcvd is None else rcvd.code

    @property
    def close_reason(self) -> str | None:
        """The close reason received (None while open, or if the peer sent none)."""
        rcvd = self._received_close()
        return None if rcvd is None else rcvd.reason

    def set_handler(self, handler: Callable[[Message], object]) -> None:
        """From now on hand each whole message to ``handler`` as it arrives, in order.

        Messages already queued go to it first. Reading is never paused for it (the queue
        stays empty); ``recv()`` then gets nothing.
        """
        self._handler = handler
        queue = self._queue
        while queue:
            handler(queue.popleft())
        if self._reading_paused:
            self._resume_reading()

    def send_now(self, message: Message, room: int = 0) -> bool:
        """Write ``message`` if that needs no wait; False (nothing written) if it would.

        It would while the transport is closing, and while the peer is not reading (the
        write buffer over its high-water mark) unless the buffer holds under ``room`` bytes.

        Raises:
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        ws = self._ws
        closing = ws is None or ws.is_disconnected or ws.close_handshake is not None
        if closing or (
            self._drain is not None
            and ws.underlying_transport.get_write_buffer_size() >= room  # type: ignore[union-attr]
        ):
            return False
        ws.send(_TEXT if message.__class__ is str else _kind(message), message)  # type: ignore[union-attr]
        return True

    def recv_nowait(self) -> Message | None:
        """The next message if one is queued, else None (then ``recv()``, which waits).

        None too while a ``recv()`` waits: that one gets the message (and a second reader
        its ``ConcurrencyError``).
        """
        queue = self._queue
        if not queue or self._waiter is not None:
            return None
        message = queue.popleft()
        if self._reading_paused and len(queue) <= self._max_queue // 4:
            self._resume_reading()
        return message

    def _resume_reading(self) -> None:
        self._reading_paused = False
        ws = self._ws
        if ws is not None and not ws.is_disconnected:
            ws.underlying_transport.resume_reading()

    async def recv(self) -> Message:
        """Receive the next whole message (see :class:`~resilient_conn.adapters.base.Transport`).

        Raises:
            ConnectionClosed: The transport closed and every received message was read.
            ConcurrencyError: Another ``recv()`` is waiting.
        """
        queue = self._queue
        while not queue:
            if self._done.done():
                raise self.close_exc
            if self._waiter is not None:
                raise ConcurrencyError("cannot call recv while another coroutine is in recv")
            self._waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message = queue.popleft()
        if self._reading_paused and len(queue) <= self._max_queue // 4:
            self._resume_reading()
        return message

    def start_send(self, message: Message) -> Awaitable[None] | None:
        """Write one message now; return None if that is all, else what finishes it.

        picows writes at once; the returned awaitable is there only when the peer is not
        reading (it waits for the write buffer to drain) or the transport is closing (it
        raises ``ConnectionClosed``). The caller bounds what it awaits.

        Raises:
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        ws = self._ws
        # (picows' stub says close_handshake is never None: a plain bool keeps mypy honest)
        closing = ws is None or ws.is_disconnected or ws.close_handshake is not None
        if closing:
            return self._closed_error()
        ws.send(_TEXT if message.__class__ is str else _kind(message), message)  # type: ignore[union-attr]
        drain = self._drain
        return None if drain is None else self._drained(drain)

    def start_send_many(self, messages: Sequence[Message]) -> Awaitable[None] | None:
        """:meth:`start_send` for several messages, in order (picows writes each at once).

        Raises:
            TypeError: A message is neither ``str`` nor ``bytes`` (nothing was written).
        """
        kinds = [_TEXT if m.__class__ is str else _kind(m) for m in messages]
        ws = self._ws
        closing = ws is None or ws.is_disconnected or ws.close_handshake is not None
        if closing:
            return self._closed_error()
        for kind, message in zip(kinds, messages, strict=True):
            ws.send(kind, message)  # type: ignore[union-attr]
        drain = self._drain
        return None if drain is None else self._drained(drain)

    async def _drained(self, drain: asyncio.Future[None]) -> None:
        await asyncio.shield(drain)
        if self._done.done():
            raise self.close_exc

    async def send(self, message: Message) -> None:
        """Send one text or binary message; waits while the peer is not reading.

        Raises:
            ConnectionClosed: The transport is closing or closed.
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        pending = self.start_send(message)
        if pending is not None:
            await pending

    async def ping(self) -> asyncio.Future[float]:
        """Send a ping; return a future of the round trip, set when its pong comes.

        Raises:
            ConnectionClosed: The transport is closing or closed.
        """
        ws = self._ws
        if ws is None or ws.is_disconnected or ws.close_handshake is not None:
            await self._closed_error()
        data = os.urandom(4)
        while data in self._pings:
            data = os.urandom(4)
        future: asyncio.Future[float] = self._loop.create_future()
        self._pings[data] = (future, self._loop.time())
        ws.send_ping(data)  # type: ignore[union-attr]
        return future

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait ``close_timeout`` for the server's; then abort."""
        ws = self._ws
        if ws is None or self._done.done():
            return
        if not ws.is_close_frame_sent:
            ws.send_close(cast(Any, code), reason.encode())  # any int: picows' stub says enum
        try:
            async with asyncio.timeout(self._close_timeout):
                await asyncio.shield(self._done)
        except TimeoutError:
            self._failure = TimeoutError("timed out while closing connection")
            self.abort()
            await asyncio.shield(self._done)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone."""
        await asyncio.shield(self._done)

    def serve(self) -> asyncio.Future[None]:
        """Return a future done once the connection is gone (see the Transport protocol).

        Nothing to cut short here: a close frame from the peer is answered and the connection
        dropped at once, and so is a protocol error (:meth:`_fail`); only :meth:`close` waits
        for the peer, bounded by ``close_timeout``. Cancelling it leaves the transport be.
        """
        return asyncio.shield(self._done)

    def watch(self, callback: Callable[[object], object], context: Context | None) -> bool:
        """:meth:`serve` without a future of its own: a callback on the end itself."""
        if self._done.done():
            return False
        self._done.add_done_callback(callback, context=context)
        return True

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        ws = self._ws
        if ws is not None:
            ws.disconnect(graceful=False)

    async def _closed_error(self) -> None:
        """Wait (bounded) for a closing transport to be gone, then raise how it ended."""
        if not self._done.done():
            try:
                async with asyncio.timeout(self._close_timeout):
                    await asyncio.shield(self._done)
            except TimeoutError:
                self.abort()
                await asyncio.shield(self._done)
        raise self.close_exc
