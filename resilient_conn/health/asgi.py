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

import importlib.util
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from .._core.errors import ConfigError
from .._core.log import get_logger
from ..connection.report import HealthReport
from ..resilience.config import check_int, check_positive, resolve
from ._http import respond
from ._httpserver import Handler
from ._uvicorn import uvicorn_server
from .dashboard import DashboardApp, DashboardConfig
from .prometheus import CONTENT_TYPE, render

__all__ = ["ASGIApp", "HealthApp", "HealthServer", "HealthSource", "health_app", "serve_health"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""The ASGI 3 application signature."""
_NO_STORE = [(b"cache-control", b"no-store")]



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
    await respond(send, status, content_type, body, head, [*_NO_STORE, *(extra or [])])


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- the tiny server --------------------------------------------------------------------------

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
    server: str = "builtin",
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
            sent a complete request yet (else the oldest streaming response) is dropped to
            admit the new one, so idle, trickling or dashboard connections never starve a
            probe; 503 only when all are busy being answered.
        app: Serve this ASGI app instead of ``health_app(registry)``.
        server: ``"builtin"`` (default): the small HTTP/1.1 server here, hardened for probes
            (``read_timeout`` and ``max_connections`` apply). ``"uvicorn"``: run the app in
            uvicorn inside this event loop (keep-alive, a full HTTP parser; it neither bounds
            connections nor times out a slow request head, and ignores ``read_timeout`` and
            ``max_connections``). ``"auto"``: uvicorn when installed, else built-in.

    Yields:
        The bound :class:`HealthServer`. Leaving the block stops the server and every
        connection task.

    Raises:
        ConfigError: A bad ``port``, ``read_timeout``, ``max_connections`` or ``server``
            (or ``"uvicorn"`` without uvicorn installed).
    """
    check_int(port, "port", 0, 65535)
    check_positive(read_timeout, "read_timeout")
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ConfigError(f"max_connections must be an int >= 1, got {max_connections!r}")
    if check_timeout is not None:
        resolve("check_timeout", check_timeout, param="check_timeout")
    if server not in ("builtin", "uvicorn", "auto"):
        raise ConfigError(f"server must be 'builtin', 'uvicorn' or 'auto', got {server!r}")
    if server == "auto":
        server = "uvicorn" if importlib.util.find_spec("uvicorn") is not None else "builtin"
    if server == "uvicorn":
        asgi = app or health_app(registry, check_timeout=check_timeout)
        async with uvicorn_server(asgi, host, port) as (bound_host, bound_port):
            where = HealthServer(bound_host, bound_port)
            _log.info("resilient_conn.health_server_started", url=where.url, server="uvicorn")
            try:
                yield where
            finally:
                _log.info("resilient_conn.health_server_stopped", url=where.url)
        return
    handler = Handler(
        app or health_app(registry, check_timeout=check_timeout), read_timeout, max_connections
    )
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    error: Exception | None = None
    # Every accepted connection until its handler is done with it: one accepted just as the
    # server stops may never see its handler start (older anyio cancels a task before its
    # first step), so whatever is left is closed here rather than left to the collector.
    accepted: set[anyio.abc.SocketStream] = set()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        try:
            await handler(stream)
        finally:
            accepted.discard(stream)

    async def accept(sub: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        while True:
            stream = await sub.accept()
            accepted.add(stream)
            tg.start_soon(handle, stream)

    try:
        async with listener, anyio.create_task_group() as tg:
            bound = listener.extra(SocketAttribute.local_address)
            where = HealthServer(str(bound[0]), int(bound[1]))
            for sub in listener.listeners:
                assert isinstance(sub, anyio.abc.SocketListener)  # what create_tcp_listener makes
                tg.start_soon(accept, sub, tg)
            _log.info("resilient_conn.health_server_started", url=where.url)
            try:
                yield where
            except Exception as exc:  # re-raised below as is, not wrapped in an ExceptionGroup
                error = exc
            finally:
                tg.cancel_scope.cancel()
                _log.info("resilient_conn.health_server_stopped", url=where.url)
    finally:
        for stream in list(accepted):
            await anyio.aclose_forcefully(stream)
    if error is not None:
        raise error
