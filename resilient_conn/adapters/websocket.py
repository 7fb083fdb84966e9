"""The plain WebSocket adapter: dial one transport, keep it alive, notice when it dies.

Dialing evaluates the URL and header sources afresh (so a token provider is asked before
every dial) and hands the rest to ``websockets.asyncio.client.connect``. Keepalive is ours,
not websockets': when a ping goes unanswered for ``ping_timeout`` the transport is declared
dead at once, instead of waiting ``close_timeout`` for a closing handshake that a dead peer
never sends.

Every network wait of this adapter has a deadline, so the supervisor above it needs none of
its own: :func:`keepalive` bounds the ping's write and its pong together, :func:`send` bounds
a write to a peer that stopped reading, :func:`close` bounds the closing handshake (its write
included) and aborts the transport past it, and :func:`serve` notices a closing handshake that
a silent peer never finishes (a protocol error it answered with 1002, a close it never
completed) instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.protocol import State

from .._core.errors import ConfigError
from .._core.log import redact_url

__all__ = [
    "DialOptions",
    "HeadersSource",
    "UrlSource",
    "check_ws_url",
    "close",
    "dial",
    "evaluate",
    "keepalive",
    "send",
    "serve",
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


def check_ws_url(url: object, param: str = "url") -> str:
    """Return ``url`` if it is a ``ws://`` / ``wss://`` URL with a host.

    Raises:
        ConfigError: Anything else; the message names ``param`` and shows the URL redacted.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{param} must be a ws:// or wss:// URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ConfigError(f"{param} is not a valid URL: {redact_url(url)!r} ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise ConfigError(f"{param} must be a ws:// or wss:// URL, got {redact_url(url)!r}")
    return url


@dataclass(frozen=True, slots=True)
class DialOptions:
    """What ``websockets`` needs to open one transport.

    Attributes:
        open_timeout: Dial + handshake timeout (seconds).
        close_timeout: Closing handshake timeout (seconds).
        max_size: Largest inbound message (bytes).
        max_queue: Inbound frames queued before websockets stops reading.
        extra: Other keyword arguments for ``websockets.asyncio.client.connect``.
    """

    open_timeout: float
    close_timeout: float
    max_size: int
    max_queue: int
    extra: Mapping[str, Any] = field(default_factory=dict)


class _Transport(ClientConnection):
    """websockets' client connection, telling when its closing handshake starts.

    websockets waits for a peer to finish a closing handshake until someone awaits the
    connection with a deadline; :func:`serve` is that someone, woken by :attr:`leaving`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leaving = asyncio.Event()
        """Set once the protocol left OPEN: a close frame was sent or received, or it failed."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.protocol.state is not State.OPEN:
            self.leaving.set()


async def dial(
    url: UrlSource, headers: HeadersSource | None, options: DialOptions
) -> ClientConnection:
    """Open one WebSocket transport (websockets' own keepalive off: :func:`keepalive` is ours).

    Raises:
        ConfigError: The URL source returned something that is not a ws(s) URL.
        Exception: Whatever ``websockets`` raised (classified by the supervisor).
    """
    target = check_ws_url(await evaluate(url))
    extra_headers = None if headers is None else dict(await evaluate(headers))
    extra = dict(options.extra)
    extra.setdefault("create_connection", _Transport)
    return await connect(
        target,
        additional_headers=extra_headers,
        open_timeout=options.open_timeout,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=options.close_timeout,
        max_size=options.max_size,
        max_queue=options.max_queue,
        **extra,
    )


async def keepalive(
    ws: ClientConnection,
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


async def send(ws: ClientConnection, message: str | bytes, timeout: float) -> None:
    """Write one message, waiting at most ``timeout`` seconds for the peer to take it.

    Raises:
        TimeoutError: The peer did not read it in time (the caller declares the peer dead;
            the frame may have reached the socket's buffer, so it may still arrive).
        ConnectionClosed: The transport closed.
    """
    with anyio.fail_after(timeout):
        await ws.send(message)


async def serve(ws: ClientConnection, close_timeout: float) -> None:
    """Return once ``ws`` is closed, or its closing handshake is stuck, with it aborted then.

    A protocol error (say a close code 999) makes websockets answer with close 1002 and wait
    for the peer to close the TCP connection; a silent peer never does. That transport is
    dead at once: it is aborted. A close the peer started gets ``close_timeout`` to finish.
    """
    leaving = getattr(ws, "leaving", None)
    if not isinstance(leaving, asyncio.Event):  # a connection class of the user's own
        await ws.wait_closed()
        return
    closed = asyncio.ensure_future(ws.wait_closed())
    try:
        waiter = asyncio.ensure_future(leaving.wait())
        try:
            await asyncio.wait({closed, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if closed.done():
            return
        if ws.protocol.close_rcvd is None:  # we closed it: a protocol error, not the peer
            ws.transport.abort()
        else:
            with anyio.move_on_after(close_timeout):
                await asyncio.shield(closed)
            ws.transport.abort()
        await asyncio.shield(closed)
    finally:
        closed.cancel()


async def close(ws: ClientConnection, code: int, reason: str, timeout: float) -> bool:
    """Close with ``code``: the closing handshake gets ``timeout`` seconds, then an abort.

    The bound covers writing the close frame too (websockets drains with no limit, so a peer
    that stopped reading would hold the close forever). Returns once the transport is closed.

    Returns:
        True if the handshake finished in time, False if the transport had to be aborted.
    """
    clean = False
    with anyio.move_on_after(timeout):
        with contextlib.suppress(ConnectionClosed):
            await ws.close(code, reason)
        clean = True
    if not clean:
        ws.transport.abort()
    with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
        await ws.wait_closed()  # connection_lost follows an abort at once
    return clean
