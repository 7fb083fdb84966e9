"""Health endpoints for orchestrators: a pure ASGI 3 app, and a tiny server to run it without one.

:func:`health_app` (also ``HealthRegistry.asgi_app()``) serves, for GET and HEAD:

* ``/livez``   200 while the event loop answers; never looks at upstreams.
* ``/readyz``  runs ``check_all()``; 200 when ready (not UNHEALTHY; DEGRADED is ready unless the
  registry says ``ready_on_degraded=False``), else 503. JSON body.
* ``/healthz`` runs ``check_all()``; 200 unless UNHEALTHY, then 503. JSON body.
* ``/metrics`` Prometheus text format 0.0.4 from ``registry.metrics()``.
* ``/dashboard`` the live page and its event stream (:mod:`~resilient_conn.health.dashboard`).

Anything else is 404; another method on a known path is 405. The ``lifespan`` scope is
acknowledged. Mount it in any ASGI server or framework.

:func:`serve_health` runs the same app on a minimal HTTP/1.1 server (GET/HEAD only, one request
per connection, ``Connection: close``; a ``more_body`` response is streamed), so a program
needs no web server dependency just to be probed. For anything beyond probes (TLS, keep-alive,
many clients) mount the app in uvicorn, hypercorn or your framework instead.
"""

from __future__ import annotations

import http
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from .._core.errors import ConfigError
from .._core.log import get_logger
from ..connection.report import HealthReport
from ..resilience.config import check_positive, resolve
from .dashboard import DashboardApp, DashboardConfig
from .prometheus import CONTENT_TYPE, render

__all__ = ["ASGIApp", "HealthApp", "HealthServer", "HealthSource", "health_app", "serve_health"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""The ASGI 3 application signature."""



class HealthSource(Protocol):
    """What the app needs of a :class:`~resilient_conn.health.registry.HealthRegistry`."""

    @property
    def name(self) -> str:
        """The name ``/livez`` reports."""
        ...

    def metrics(self) -> dict[str, Any]:
        """The JSON-safe metrics dict ``/metrics`` renders."""
        ...

    def health(self) -> HealthReport:
        """The aggregate of the components' cheap reports (what ``/dashboard`` shows)."""
        ...

    async def check_all(self, timeout: float | None = None) -> HealthReport:
        """Run every check; the aggregate report."""
        ...

    def is_ready(self, report: HealthReport) -> bool:
        """Whether ``report`` means ready (``/readyz``)."""
        ...


_JSON = b"application/json"
_ROUTES = ("/livez", "/readyz", "/healthz", "/metrics")
_log = get_logger()


class HealthApp:
    """The ASGI 3 app behind :func:`health_app`.

    Args:
        registry: The registry to report on.
        check_timeout: Overall timeout of the checks run by ``/readyz`` and ``/healthz``;
            None uses the registry's own.
        dashboard: Serve the live dashboard under ``/dashboard`` (True: default settings; a
            ``DashboardConfig``: those settings; False: not at all, 404).
    """

    __slots__ = ("_dashboard", "_registry", "_timeout")

    def __init__(
        self,
        registry: HealthSource,
        *,
        check_timeout: float | None = None,
        dashboard: bool | DashboardConfig = True,
    ) -> None:
        self._registry = registry
        self._timeout = (
            None if check_timeout is None else check_positive(check_timeout, "check_timeout")
        )
        self._dashboard = DashboardApp.option(registry, dashboard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http``, ``lifespan``; ``websocket`` is refused)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "not a websocket"})
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "/"))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = str(scope.get("method", "GET")).upper()
        head = method == "HEAD"
        if self._dashboard is not None and (path == "/dashboard" or path.startswith("/dashboard/")):
            await self._dashboard.serve(path[len("/dashboard") :], scope, receive, send)
            return
        if path not in _ROUTES:
            await _respond(send, 404, _JSON, _dump({"error": "not found", "path": path}), head)
            return
        if method not in ("GET", "HEAD"):
            body = _dump({"error": "method not allowed", "allow": ["GET", "HEAD"]})
            await _respond(send, 405, _JSON, body, head, [(b"allow", b"GET, HEAD")])
            return
        registry = self._registry
        if path == "/livez":
            body = _dump({"status": "alive", "name": registry.name})
            await _respond(send, 200, _JSON, body, head)
        elif path == "/metrics":
            text = render(registry.metrics()).encode()
            await _respond(send, 200, CONTENT_TYPE.encode(), text, head)
        else:
            report = await registry.check_all(self._timeout)
            data = report.to_dict()
            if path == "/readyz":
                ok = registry.is_ready(report)
                data["ready"] = ok
            else:
                ok = report.ok
            await _respond(send, 200 if ok else 503, _JSON, _dump(data), head)


def health_app(
    registry: HealthSource,
    *,
    check_timeout: float | None = None,
    dashboard: bool | DashboardConfig = True,
) -> HealthApp:
    """Return the ASGI 3 app serving ``registry`` (routes: module docstring; args: HealthApp)."""
    return HealthApp(registry, check_timeout=check_timeout, dashboard=dashboard)


def _dump(data: object) -> bytes:
    return json.dumps(data, allow_nan=False, separators=(",", ":")).encode() + b"\n"


async def _respond(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    head: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- the tiny server --------------------------------------------------------------------------

_MAX_HEAD = 16 * 1024
_MAX_BODY = 16 * 1024 * 1024
_LINGER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class HealthServer:
    """Where :func:`serve_health` listens.

    Attributes:
        host: The bound address.
        port: The bound port (the real one when 0 was asked).
    """

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        return f"http://{self.host}:{self.port}"


@asynccontextmanager
async def serve_health(
    registry: HealthSource,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    check_timeout: float | None = None,
    read_timeout: float = 10.0,
    max_connections: int = 64,
    app: ASGIApp | None = None,
) -> AsyncIterator[HealthServer]:
    """Serve the registry's health app over HTTP/1.1 while the ``async with`` block runs.

    Example::

        async with serve_health(registry, port=8081) as server:
            print(server.url + "/readyz")
            await anyio.sleep_forever()

    Args:
        registry: The registry to serve.
        host: Address to bind; loopback by default (bind ``0.0.0.0`` for a pod probe).
        port: TCP port; 0 picks a free one (see ``HealthServer.port``).
        check_timeout: Passed to :func:`health_app`; None uses the registry's own.
        read_timeout: Seconds a client has for its whole request head (slow clients are cut).
        max_connections: Connections held at once. Past it, the oldest connection that has not
            sent a complete request yet is dropped to admit the new one, so idle or trickling
            connections never starve a probe; 503 only when all are busy being answered.
        app: Serve this ASGI app instead of ``health_app(registry)``.

    Yields:
        The bound :class:`HealthServer`. Leaving the block stops the server and every
        connection task.

    Raises:
        ConfigError: A bad ``port``, ``read_timeout`` or ``max_connections``.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an int in [0, 65535], got {port!r}")
    check_positive(read_timeout, "read_timeout")
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ConfigError(f"max_connections must be an int >= 1, got {max_connections!r}")
    if check_timeout is not None:
        resolve("check_timeout", check_timeout, param="check_timeout")
    handler = _Handler(
        app or health_app(registry, check_timeout=check_timeout), read_timeout, max_connections
    )
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    error: Exception | None = None
    async with listener, anyio.create_task_group() as tg:
        bound = listener.extra(SocketAttribute.local_address)
        server = HealthServer(str(bound[0]), int(bound[1]))
        tg.start_soon(listener.serve, handler, tg)
        _log.info("resilient_conn.health_server_started", url=server.url)
        try:
            yield server
        except Exception as exc:  # re-raised below as is, not wrapped in an ExceptionGroup
            error = exc
        finally:
            tg.cancel_scope.cancel()
            _log.info("resilient_conn.health_server_stopped", url=server.url)
    if error is not None:
        raise error


class _Slot:
    """One admitted connection.

    ``counted``: whether it still counts against the bound; ``scope``: cancelled to evict it
    while it is idle (reading its request head, or lingering after its response).
    """

    __slots__ = ("counted", "scope")

    def __init__(self) -> None:
        self.counted = True
        self.scope = anyio.CancelScope()


class _Handler:
    """Serves one request per connection, at most ``max_connections`` at once.

    A connection is *idle* while it has not sent a complete request head (and while it lingers
    after its response). When the bound is reached, a new connection evicts the oldest idle
    one instead of being turned away, so connections that send nothing (or trickle a head,
    slowloris) cannot starve a probe; each also has ``read_timeout`` for its whole head. Only
    when every slot is busy computing a response does a newcomer get 503.
    """

    __slots__ = ("_active", "_app", "_idle", "_max", "_read_timeout", "evicted")

    def __init__(self, app: ASGIApp, read_timeout: float, max_connections: int) -> None:
        self._app = app
        self._read_timeout = read_timeout
        self._max = max_connections
        self._active = 0
        self._idle: dict[_Slot, None] = {}  # insertion order: oldest first
        self.evicted = 0

    async def __call__(self, stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                if self._active >= self._max and not self._evict_oldest_idle():
                    await _write_plain(stream, 503, b"busy\n")
                    return
                slot = _Slot()
                self._active += 1
                try:
                    with slot.scope:
                        await self._serve(stream, slot)
                        self._idle[slot] = None
                        await _linger(stream)
                finally:
                    self._idle.pop(slot, None)
                    if slot.counted:
                        self._active -= 1
        except Exception as exc:  # a client hanging up, a broken app: never kill the server
            _log.debug("resilient_conn.health_server_error", error=repr(exc))

    def _evict_oldest_idle(self) -> bool:
        for slot in self._idle:
            del self._idle[slot]
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
        response = _Response(stream)
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

    __slots__ = ("body", "headers", "received", "status", "stream", "streaming")

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
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
