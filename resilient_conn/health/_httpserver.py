"""The built-in HTTP/1.1 server behind ``serve_health(server="builtin")``.

One request per connection (``Connection: close``), GET/HEAD, a bounded request head, a
``more_body`` response streamed (the dashboard's event stream). Robust to clients that hold
connections: a deadline for the whole request head, and when ``max_connections`` is reached
the oldest idle connection (then the oldest stream) is evicted rather than a newcomer refused
(see :class:`Handler`), so probes are never starved.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from .._core.log import get_logger

__all__ = ["Handler"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

_log = get_logger()

_MAX_HEAD = 16 * 1024
_MAX_BODY = 16 * 1024 * 1024
_LINGER_SECONDS = 1.0


class _Slot:
    """One admitted connection.

    ``counted``: whether it still counts against the bound; ``scope``: cancelled to evict it
    (while it is idle, or streaming a long response).
    """

    __slots__ = ("counted", "scope")

    def __init__(self) -> None:
        self.counted = True
        self.scope = anyio.CancelScope()


class Handler:
    """Serves one request per connection, at most ``max_connections`` at once.

    A connection is *idle* while it has not sent a complete request head (and while it lingers
    after its response). When the bound is reached, a new connection evicts the oldest idle
    one, else the oldest streaming response (a dashboard's event stream: its browser
    reconnects), instead of being turned away. So connections that send nothing, trickle a
    head (slowloris) or watch the dashboard cannot starve a probe; each connection also has
    ``read_timeout`` for its whole head. Only when every slot is busy computing a response does
    a newcomer get 503.
    """

    __slots__ = ("_active", "_app", "_idle", "_max", "_read_timeout", "_streams", "evicted")

    def __init__(self, app: ASGIApp, read_timeout: float, max_connections: int) -> None:
        self._app = app
        self._read_timeout = read_timeout
        self._max = max_connections
        self._active = 0
        self._idle: dict[_Slot, None] = {}  # insertion order: oldest first
        self._streams: dict[_Slot, None] = {}
        self.evicted = 0

    async def __call__(self, stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                if self._active >= self._max and not self._evict_one():
                    await _write_plain(stream, 503, b"busy\n")
                    return
                slot = _Slot()
                self._active += 1
                try:
                    with slot.scope:
                        await self._serve(stream, slot)
                        self._streams.pop(slot, None)
                        self._idle[slot] = None
                        await _linger(stream)
                finally:
                    self._idle.pop(slot, None)
                    self._streams.pop(slot, None)
                    if slot.counted:
                        self._active -= 1
        except Exception as exc:  # a client hanging up, a broken app: never kill the server
            _log.debug("resilient_conn.health_server_error", error=repr(exc))

    def _evict_one(self) -> bool:
        for pool in (self._idle, self._streams):
            for slot in pool:
                del pool[slot]
                slot.counted = False  # its slot is free now, before its task has unwound
                self._active -= 1
                slot.scope.cancel()
                self.evicted += 1
                return True
        return False

    async def _serve(self, stream: anyio.abc.SocketStream, slot: _Slot) -> None:
        self._idle[slot] = None
        try:
            with anyio.move_on_after(self._read_timeout):  # the whole head, not each read
                head = await _read_head(stream)
        finally:
            self._idle.pop(slot, None)
        if head is None:
            return
        if isinstance(head, int):
            await _write_plain(stream, head, http.HTTPStatus(head).phrase.encode() + b"\n")
            return
        method, target, headers = head
        raw_path, _, query = target.partition("?")
        local = stream.extra(SocketAttribute.local_address)
        remote = stream.extra(SocketAttribute.remote_address)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None,
            "server": (str(local[0]), int(local[1])) if isinstance(local, tuple) else None,
        }
        response = _Response(stream, lambda: self._streams.setdefault(slot, None))
        try:
            await self._app(scope, response.receive, response.send)
        except Exception as exc:
            _log.warning("resilient_conn.health_app_error", error=repr(exc))
            if response.status is None:
                await _write_plain(stream, 500, b"internal error\n")
                return
        if response.streaming:
            return
        if response.status is None:
            await _write_plain(stream, 500, b"no response\n")
            return
        await stream.send(_encode(response.status, response.headers, bytes(response.body), method))



class _Response:
    """Collects what the ASGI app sends (bounded), or streams a ``more_body`` response."""

    __slots__ = ("body", "headers", "on_stream", "received", "status", "stream", "streaming")

    def __init__(self, stream: anyio.abc.SocketStream, on_stream: Callable[[], object]) -> None:
        self.on_stream = on_stream
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.received = False
        self.stream = stream
        self.streaming = False

    async def receive(self) -> Message:
        if self.received and self.streaming:  # ASGI: disconnect once the client hangs up
            try:
                while await self.stream.receive():  # discard what a streaming client sends
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        if self.received:
            return {"type": "http.disconnect"}
        self.received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            if self.status is not None and (self.streaming or message.get("more_body")):
                if not self.streaming:
                    self.streaming = True
                    self.on_stream()  # long-lived from now on: evictable for a probe
                    await self.stream.send(_encode(self.status, self.headers, b"", "HEAD"))
                if chunk:
                    await self.stream.send(chunk)
                return
            if len(self.body) + len(chunk) > _MAX_BODY:
                raise ValueError("response body too large")
            self.body += chunk


async def _read_head(
    stream: anyio.abc.SocketStream,
) -> tuple[str, str, list[tuple[bytes, bytes]]] | int | None:
    """Read and parse the request head; an int is an HTTP error status, None a gone client."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > _MAX_HEAD:
            return 431
        try:
            buf += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    lines = bytes(buf).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return 400
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            return 400
        headers.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
    return parts[0].upper(), parts[1], headers


def _encode(status: int, headers: list[tuple[bytes, bytes]], body: bytes, method: str) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    out = [f"HTTP/1.1 {status} {phrase}".encode("latin-1")]
    names = {k.lower() for k, _ in headers}
    kept = [(k, v) for k, v in headers if k.lower() != b"connection"]
    if b"content-length" not in names and method != "HEAD":
        kept.append((b"content-length", str(len(body)).encode()))
    kept.append((b"connection", b"close"))
    out.extend(k + b": " + v for k, v in kept)
    return b"\r\n".join(out) + b"\r\n\r\n" + (b"" if method == "HEAD" else body)


async def _linger(stream: anyio.abc.SocketStream) -> None:
    """Half-close, then discard what the client still sends (bounded, briefly).

    Closing a socket with unread input resets the connection, which can destroy the response
    before the client reads it (a 405 to a POST with a body, a 431 to a huge head).
    """
    await stream.send_eof()
    discarded = 0
    with anyio.move_on_after(_LINGER_SECONDS):
        while discarded < _MAX_HEAD * 4:
            try:
                discarded += len(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return


async def _write_plain(stream: anyio.abc.SocketStream, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await stream.send(_encode(status, headers, body, "GET"))
