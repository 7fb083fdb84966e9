"""The websockets adapter: dial one transport, keep it alive, notice when it dies.

Dialing evaluates the URL and header sources afresh (so a token provider is asked before
every dial), checks what they returned (:mod:`.checks`: a bad value is a fatal ConfigError,
not a retry) and hands the rest to the adapter in :attr:`DialOptions.adapter` (websockets'
``connect`` by default). Redirects are followed as websockets does (at most 10; more is a
redirect loop, fatal), except that every credential-looking header (``Authorization``,
``apikey``, ``X-Api-Key``, cookies...) is dropped on a redirect to another origin.

The transport is websockets' own ``ClientConnection``, subclassed to add what
:class:`~resilient_conn.adapters.base.Transport` asks for (``abort``, ``is_open``,
``serve``, ``start_send``, ``start_send_many``, ``recv_nowait``): ``send`` and ``recv`` are
websockets' methods, untouched. The connection's message path uses the fast halves, which
skip websockets' per-message coroutines and context manager in the common case (an open
connection that can write at once, a whole message already queued) and hand everything
else to ``send`` / ``recv``: cheaper per message than websockets' own API.
:func:`send_many` (in ``_batch.py``) writes several messages with one write to the socket,
and :func:`recv_nowait` takes a queued one, on any websockets asyncio connection (a server's
too).
Keepalive is ours, not websockets': when a ping goes unanswered for ``ping_timeout`` the
transport is declared dead at once, instead of waiting ``close_timeout`` for a closing
handshake that a dead peer never sends.

Every network wait has a deadline: :func:`keepalive` (and
:class:`~resilient_conn.adapters.keepalive.Keepalive`) bound the ping's write and its pong
together, :meth:`WebsocketsTransport.serve` notices a closing handshake that a silent peer
never finishes (a protocol error answered with 1002, a close the peer never completes), and
:mod:`~resilient_conn.adapters.deadlines` bounds sends and the closing handshake on any
transport.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import Context
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.datastructures import Headers
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from .._core.errors import ConfigError
from .._core.log import is_secret_name
from ._batch import FAST_PATH, send_many
from ._handler import Handler, deliver_queued
from .base import AdapterFactory, DialOptions, Message, Transport
from .checks import check_ws_url

__all__ = [
    "ADAPTER",
    "DialOptions",
    "HeadersSource",
    "UrlSource",
    "WebsocketsAdapter",
    "WebsocketsTransport",
    "check_ws_url",
    "evaluate",
    "keepalive",
    "recv_nowait",
    "send_many",
]

T = TypeVar("T")
UrlSource = str | Callable[[], str | Awaitable[str]]
"""A URL, or a sync/async callable returning one (evaluated before every dial)."""
HeadersSource = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]
"""Handshake headers, or a sync/async callable returning them (evaluated before every dial)."""


async def evaluate(source: T | Callable[[], T | Awaitable[T]]) -> T:
    """Return ``source``, or the result of calling it (awaited if it is awaitable)."""
    if callable(source):
        result = source()
        if inspect.isawaitable(result):
            return await result
        return result
    return source


_OPEN = State.OPEN
_TEXT = Opcode.TEXT
_FAST_PATH = FAST_PATH  # this module's switch (see _batch.has_fast_path)




class WebsocketsTransport(ClientConnection):
    """websockets' ``ClientConnection`` plus the members the Transport protocol adds.

    Inherits ``send``, ``recv``, ``ping``, ``close``, ``wait_closed``, ``close_code``,
    ``close_reason`` and ``subprotocol`` unchanged.
    """

    # Made by serve() and done once the TCP connection is gone: the caller awaits this one
    # future, with no coroutine of serve()'s own, no task and no asyncio.wait (its sets,
    # callbacks and frames would sit in memory for the whole life of an idle connection).
    # Leaving OPEN (a close frame sent or received) is noticed in data_received below, and a
    # stuck closing handshake cut short from there (see serve()).
    _served: asyncio.Future[None] | None = None
    _cutting: asyncio.Future[None] | None = None  # the served future a cut is scheduled for
    _handler: Handler | None = None  # on_message (set_handler); class defaults: no memory
    reader: asyncio.Task[None] | None = None  # its reader task (_handler.py), while it runs

    def data_received(self, data: bytes) -> None:
        """Feed websockets; hand messages to any handler; cut a stuck close short (asyncio)."""
        super().data_received(data)
        if self._handler is not None:
            deliver_queued(self, self._handler)
        served = self._served
        if (
            served is not None
            and self.protocol.state is not _OPEN
            and self._cutting is not served
            and not served.done()
        ):
            self._left_open(served)

    def connection_lost(self, exc: Exception | None) -> None:
        """Let websockets record the loss, then end what :meth:`serve` returned (asyncio)."""
        super().connection_lost(exc)
        served = self._served
        if served is not None and not served.done():
            served.set_result(None)

    def serve(self) -> asyncio.Future[None]:
        """Return a future done once the transport is closed; cut a stuck closing handshake short.

        websockets waits ``close_timeout`` for the peer to finish a closing handshake. After
        a protocol error (say a close code 999) it answered with 1002 itself, and a silent
        peer never closes the TCP connection: that transport is aborted at once. A close the
        peer started gets ``close_timeout`` to finish, then is aborted. No task and no
        coroutine are made: the returned future is set from the protocol callbacks. Cancelling
        it (a cancelled caller does) leaves the transport as it was; a later call returns a
        new one.
        """
        served = self._served
        if served is None or served.done() or served is self.connection_lost_waiter:
            served = self._served = self.loop.create_future()
            if self.connection_lost_waiter.done():
                served.set_result(None)
            elif self.protocol.state is not _OPEN:
                self._left_open(served)
        return served

    def watch(self, callback: Callable[[object], object], context: Context | None) -> bool:
        """:meth:`serve` with no future of its own: a callback on websockets' end."""
        # never awaited, so it cancels nothing; it also stands as watched for the cut-short
        waiter = self.connection_lost_waiter
        if waiter.done():
            return False
        if self._served is None or self._served.done():
            self._served = waiter
            if self.protocol.state is not _OPEN:
                self._left_open(waiter)
        waiter.add_done_callback(callback, context=context)
        return True

    def _left_open(self, served: asyncio.Future[None]) -> None:
        """The protocol left OPEN while ``served`` is awaited: abort now, or after a grace."""
        self._cutting = served
        if self.protocol.close_rcvd is None:  # our close frame (a protocol error): abort now
            self.loop.call_soon(self._cut_short, served)  # once this callback has returned
        elif self.close_timeout is not None:  # the peer's close: let it finish, bounded
            self.loop.call_later(self.close_timeout, self._cut_short, served)

    def _cut_short(self, served: asyncio.Future[None]) -> None:
        if not served.done():  # still awaited, and the TCP connection not gone yet
            self.transport.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        self.transport.abort()

    def set_handler(self, handler: Handler) -> None:
        """From now on hand each whole message to ``handler`` as it arrives (see _handler.py).

        Messages already queued go to it first; ``recv()`` then gets nothing.
        """
        self._handler = handler
        deliver_queued(self, handler)

    def send_now(self, message: Message, room: int = 0) -> bool:
        """Write ``message`` if that needs no wait; False (nothing written) if it would.

        It would while the transport is closing or websockets' own ``send`` is needed, and
        while the peer is not reading (the write buffer over its high-water mark) unless the
        buffer holds under ``room`` bytes.
        """
        if not self._writable_now() or (
            self.paused and self.transport.get_write_buffer_size() >= room
        ):
            return False
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        elif isinstance(message, bytes):
            self.protocol.send_binary(message)
        else:
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")
        try:
            self.send_data()
        except Exception:  # as websockets' send: the connection ends (close_exc says how)
            self.transport.abort()
            return False
        return True

    def _writable_now(self) -> bool:
        """The fast case of a write: OPEN, no fragmented send in progress, TCP not closing.

        False as well on a websockets release without the internals read here (its own
        ``send`` then does the work), checked before anything is written.
        """
        try:
            protocol = self.protocol
            return (
                _FAST_PATH
                and protocol.state is _OPEN
                and self.send_in_progress is None
                and not protocol.expect_continuation_frame
                and not self.transport.is_closing()
            )
        except AttributeError:
            return False

    def start_send(self, message: Message) -> Awaitable[None] | None:
        """Write one message now; return None if that is all, else what finishes it.

        The common case (the WebSocket OPEN, no fragmented send in progress, the TCP transport
        not closing) is websockets' own ``send`` without its coroutine and context manager:
        the frame goes to the Sans-I/O protocol and its bytes to the transport, at once. Only
        when that write leaves the transport above its high-water mark (the peer is not
        reading) is the returned awaitable websockets' ``drain()``; any other case returns
        websockets' ``send()`` itself, untouched (it raises ``ConnectionClosed`` on a closing
        transport). The caller bounds what it awaits.
        """
        protocol = self.protocol
        try:  # _writable_now(), inline: this runs once per message
            fast = (
                _FAST_PATH
                and protocol.state is _OPEN
                and self.send_in_progress is None
                and not protocol.expect_continuation_frame
                and not self.transport.is_closing()
            )
        except AttributeError:  # a websockets release without these internals: its own send
            fast = False
        if fast:
            if message.__class__ is str:
                protocol.send_text(message.encode())
            elif isinstance(message, bytes):
                protocol.send_binary(message)
            else:
                return self.send(message)  # str subclasses and wrong types: websockets decides
            try:
                self.send_data()
            except Exception as exc:  # as websockets' send: end the connection, say how
                return self._write_failed(exc)
            return self.drain() if self.paused else None
        return self.send(message)

    def start_send_many(self, messages: Sequence[Message]) -> Awaitable[None] | None:
        """:meth:`start_send` for several messages, with one write to the socket for all.

        The same fast case and the same fallbacks; anything unusual (a message of another
        type included) goes to :func:`send_many`, websockets' own send path.
        """
        protocol = self.protocol
        plain = all(m.__class__ is str or m.__class__ is bytes for m in messages)
        if not plain or not self._writable_now():
            return send_many(self, messages)
        for message in messages:
            if message.__class__ is str:
                protocol.send_text(message.encode())
            else:
                protocol.send_binary(message)  # type: ignore[arg-type]
        try:  # only frames here (the state is OPEN): one write for all of them
            self.transport.writelines(protocol.data_to_send())
        except Exception as exc:  # as websockets' send: end the connection, say how
            return self._write_failed(exc)
        return self.drain() if self.paused else None

    async def _write_failed(self, exc: Exception) -> None:
        self.transport.abort()
        await asyncio.shield(self.connection_lost_waiter)
        raise self.close_exc from exc

    def recv_nowait(self) -> Message | None:
        """The next message if a whole one is already queued, else None (then ``recv()``).

        Takes one unfragmented frame from websockets' own inbound queue, as its ``recv()``
        would (decoded text or bytes, the reading flow control resumed below the low-water
        mark), without a coroutine. Anything else (no frame, a fragmented message, invalid
        UTF-8 that must close the connection with 1007, a ``recv()`` already waiting) is
        left to ``recv()``.
        """
        if not _FAST_PATH:
            return None
        try:
            assembler = self.recv_messages
            frames = assembler.frames.queue
            if not frames or assembler.get_in_progress:
                return None
        except AttributeError:  # a websockets release without these internals: recv()
            return None
        frame = frames[0]
        data = frame.data  # a bytearray as websockets parses it (bytes from an extension)
        cls = data.__class__
        if not frame.fin or (cls is not bytearray and cls is not bytes):
            return None
        if frame.opcode is _TEXT:
            try:
                message: Message = data.decode()  # type: ignore[union-attr]
            except UnicodeDecodeError:
                return None
        else:
            message = bytes(data)  # what websockets' b"".join() makes of one frame
        frames.popleft()
        if assembler.paused:  # reading stopped at max_queue: resume it at the low-water mark
            assembler.maybe_resume()
        return message

    @property
    def close_exc(self) -> ConnectionClosed:
        """How the transport ended (valid once closed).

        Read from the protocol: websockets 17.0's connection has no ``close_exc`` of its own.
        """
        return self.protocol.close_exc

    @property
    def is_open(self) -> bool:
        """True while the WebSocket is OPEN (no close frame sent or received yet)."""
        return self.protocol.state is _OPEN


def recv_nowait(ws: Connection) -> Message | None:
    """:meth:`WebsocketsTransport.recv_nowait` on any websockets asyncio connection.

    The method reads only what every ``Connection`` has, so a server's connection can use it
    too (the delivery hub's reader does). Skips ``ws.recv()``: use it only where ``recv`` is
    websockets' own, not an override.
    """
    return WebsocketsTransport.recv_nowait(ws)  # type: ignore[arg-type]


COMPRESSION_CHOICES = ("auto", "deflate", None)
"""Accepted ``compression`` values: ``"auto"`` is the transport's default."""


class WebsocketsAdapter:
    """Opens :class:`WebsocketsTransport` with ``websockets.asyncio.client.connect``.

    Args:
        extra: Keyword arguments for ``connect`` (``ssl``, ``subprotocols``, ``compression``,
            ``origin``, ``user_agent_header``, ``proxy``, ...). ``compression="auto"`` keeps
            websockets' default, permessage-deflate.

    Raises:
        ConfigError: An argument that the adapter sets itself (``ping_interval``, ...) or an
            unknown ``compression``.
    """

    name = "websockets"
    _RESERVED = frozenset(
        {"additional_headers", "open_timeout", "ping_interval", "ping_timeout", "close_timeout",
         "max_size", "max_queue", "create_connection", "uri"}
    )

    def __init__(self, extra: Mapping[str, Any]) -> None:
        reserved = sorted(self._RESERVED.intersection(extra))
        if reserved:
            raise ConfigError(
                f"{', '.join(reserved)} cannot be passed through to websockets: use the "
                "ResilientConnection argument of the same name (headers= for headers)"
            )
        kwargs = dict(extra)
        compression = kwargs.pop("compression", "auto")
        if compression not in COMPRESSION_CHOICES:
            raise ConfigError(f"compression must be 'deflate', None or 'auto', got {compression!r}")
        if compression != "auto":
            kwargs["compression"] = compression
        self._kwargs = kwargs

    async def connect(
        self, url: str, headers: Mapping[str, str] | None, options: DialOptions
    ) -> WebsocketsTransport:
        """Open one transport (websockets' own keepalive off: :func:`keepalive` is ours)."""
        ws = await _Connect(
            url,
            additional_headers=headers,
            open_timeout=options.open_timeout,
            ping_interval=None,
            ping_timeout=None,
            close_timeout=options.close_timeout,
            max_size=options.max_size,
            max_queue=options.max_queue,
            create_connection=WebsocketsTransport,
            **self._kwargs,
        )
        assert isinstance(ws, WebsocketsTransport)
        return ws


ADAPTER = WebsocketsAdapter
"""The adapter class :func:`~resilient_conn.adapters.base.get_adapter` builds for this module."""

if TYPE_CHECKING:  # mypy proves the adapter and its transport satisfy the protocols
    _FACTORY: AdapterFactory = WebsocketsAdapter

_DEFAULT = WebsocketsAdapter({})


class _Connect(connect):
    """websockets' ``connect`` that drops EVERY credential header on a cross-origin redirect.

    websockets itself strips only Authorization, Cookie and Proxy-Authorization, so an
    ``apikey`` header would follow a redirect to another origin.
    """

    def process_redirect(self, exc: Exception) -> Exception | str:
        old = self.ws_uri
        result = super().process_redirect(exc)
        if isinstance(result, str) and self.additional_headers is not None:
            new = parse_uri(result)
            if (old.secure, old.host, old.port) != (new.secure, new.host, new.port):
                self.additional_headers = Headers(
                    (name, value)
                    for name, value in Headers(self.additional_headers).raw_items()
                    if not is_secret_name(name)
                )
        return result


async def keepalive(
    ws: Transport,
    interval: float,
    timeout: float,
    *,
    on_alive: Callable[[float], None],
    on_dead: Callable[[str, BaseException], None],
) -> None:
    """Ping every ``interval`` seconds; report each round trip, or the death of the transport.

    Returns when the transport closes or when a pong did not come within ``timeout`` (after
    calling ``on_dead("ping_timeout", error)``, which is expected to abort the transport).
    The deadline covers writing the ping too: a peer that stopped reading (the ping stuck
    behind a full send buffer) is as dead as one that stopped answering. Sleeps in real time:
    it measures the network, so the testing switch does not skip it.
    """
    while True:
        await anyio.sleep(interval)
        try:
            with anyio.fail_after(timeout):
                pong = await ws.ping()
                rtt = await pong
        except TimeoutError:
            on_dead("ping_timeout", TimeoutError(f"no pong within {timeout}s"))
            return
        except (ConnectionClosed, ConcurrencyError):
            return
        on_alive(rtt)
