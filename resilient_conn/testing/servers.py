"""ScriptedServer: a WebSocket server on 127.0.0.1 that a test scripts and inspects.

Built on ``websockets.asyncio.server.serve``. It echoes by default; a test can swap in its
own handler, close connections with a chosen code, reject handshakes with an HTTP status
and headers, stall handshakes, stop and restart on the same port, push messages, and wait
(event-driven) for connections and messages, all while it runs.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, overload

import anyio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Data

from ._net import LOOPBACK, Notifier, check_loopback, check_port
from ._records import ConnectionRecord, RejectionRecord, Rule

__all__ = [
    "DEFAULT_HISTORY",
    "ConnectionRecord",
    "Handler",
    "RejectionRecord",
    "ScriptedServer",
    "serve_scripted",
]

DEFAULT_HISTORY = 10_000
"""How many messages, connections and rejections a server keeps (the oldest go first)."""


Handler = Callable[[ServerConnection, "ScriptedServer"], Awaitable[None]]
"""A connection handler: ``async def handler(ws, server) -> None``."""


class _RecordingConnection(ServerConnection):
    """A ServerConnection that reports each message ``recv()`` returns to its server."""

    scripted: tuple[ScriptedServer, ConnectionRecord] | None = None

    @overload
    async def recv(self, decode: Literal[True]) -> str: ...

    @overload
    async def recv(self, decode: Literal[False]) -> bytes: ...

    @overload
    async def recv(self, decode: bool | None = None) -> Data: ...

    async def recv(self, decode: bool | None = None) -> Data:
        """Receive the next message and record it (see ``ServerConnection.recv``)."""
        message = await super().recv(decode)
        if self.scripted is not None:
            server, record = self.scripted
            server._record_message(record, message)
        return message


async def echo(ws: ServerConnection, server: ScriptedServer) -> None:
    """The default handler: send every received message back."""
    async for message in ws:
        await ws.send(message)


class ScriptedServer:
    """A scriptable WebSocket server on 127.0.0.1 (echo by default).

    Example::

        async with ScriptedServer() as server:
            async with connect(server.url) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            server.reject_next(503, headers={"Retry-After": "2"})
            await server.restart()             # same port

    Messages are recorded when the handler receives them with ``recv()`` or ``async for``
    (``recv_streaming`` is not recorded).

    Args:
        handler: ``async def handler(ws, server)``; None means echo.
        host: Must be ``"127.0.0.1"``.
        port: Port to listen on; 0 picks a free one, kept across restarts.
        open_timeout: Server-side handshake timeout (websockets' ``open_timeout``).
        ping_interval: Server keepalive ping interval, None to disable.
        ping_timeout: Server keepalive ping timeout.
        close_timeout: How long a close waits for the client's closing handshake (shorter
            than websockets' 10 s so teardown against a silent client stays quick).
        history: How many messages, connections and rejections to keep.
        **serve_kwargs: Passed on to ``websockets.asyncio.server.serve`` (e.g. ``max_size``,
            ``subprotocols``).

    Raises:
        ValueError: A bad host, port or history (the message names the parameter).
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 2.0,
        history: int = DEFAULT_HISTORY,
        **serve_kwargs: Any,
    ) -> None:
        self._host = check_loopback(host, "host")
        self._port = check_port(port, "port")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, got {history!r}")
        for name in ("process_request", "create_connection", "host", "port"):
            if name in serve_kwargs:
                raise ValueError(f"{name} is managed by ScriptedServer and cannot be passed")
        self.handler: Handler = handler or echo
        self._serve_kwargs: dict[str, Any] = {
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            **serve_kwargs,
        }
        self._server: Server | None = None
        self._live: set[_RecordingConnection] = set()
        self._connections: deque[ConnectionRecord] = deque(maxlen=history)
        self._rejections: deque[RejectionRecord] = deque(maxlen=history)
        self._messages: deque[Data] = deque(maxlen=history)
        self.connection_count = 0
        """Connections accepted in total (not bounded by ``history``)."""
        self.message_count = 0
        """Messages received in total (not bounded by ``history``)."""
        self.rejection_count = 0
        """Handshakes rejected in total."""
        self.closed_count = 0
        """Accepted connections that have closed, in total."""
        self._next_rules: deque[Rule] = deque()
        self._always_rule: Rule | None = None
        self._stalled = False
        self._stalled_handshakes = 0
        self._changed = Notifier()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> ScriptedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listening (on the same port as before, after a ``stop()``).

        Raises:
            RuntimeError: Already running.
            OSError: The port could not be bound.
        """
        if self._server is not None:
            raise RuntimeError("ScriptedServer is already running")
        server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            create_connection=_RecordingConnection,
            reuse_address=True,
            **self._serve_kwargs,
        )
        self._server = server
        self._port = server.sockets[0].getsockname()[1]
        self._changed.notify()

    async def stop(self, code: int = 1001, reason: str = "") -> None:
        """Stop listening and close open connections with ``code``/``reason``; wait for it.

        Stalled handshakes are answered with HTTP 503. A no-op when not running.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._changed.notify()  # stalled handshakes see the server stopping
        server.close(close_connections=True, code=code, reason=reason)
        await server.wait_closed()

    async def restart(self, downtime: float = 0.0, code: int = 1012, reason: str = "") -> None:
        """Stop, stay down ``downtime`` seconds (real time), listen again on the same port.

        Open connections are closed with ``code`` (1012 "service restart" by default).
        """
        await self.stop(code, reason)
        if downtime > 0:
            await anyio.sleep(downtime)
        await self.start()

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    # --- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on (always ``"127.0.0.1"``)."""
        return self._host

    @property
    def port(self) -> int:
        """The port (fixed after the first start, kept across restarts)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/``."""
        return self.url_for("/")

    def url_for(self, path: str = "/") -> str:
        """Return ``ws://127.0.0.1:<port><path>``."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        return f"ws://{self._host}:{self._port}{path}"

    # --- scripting ------------------------------------------------------------------------

    def reject_next(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: str = "",
        count: int = 1,
    ) -> None:
        """Reject the next ``count`` handshakes with ``status``, ``headers`` and ``body``.

        Queued after earlier ``reject_next`` calls; takes precedence over ``reject``.
        """
        rule = Rule.make(status, headers, body)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        self._next_rules.extend([rule] * count)

    def reject(self, status: int, headers: Mapping[str, str] | None = None, body: str = "") -> None:
        """Reject every handshake with ``status``, ``headers`` and ``body`` until ``accept()``."""
        self._always_rule = Rule.make(status, headers, body)

    def stall(self) -> None:
        """Accept TCP connections but never answer their handshake, until ``accept()``.

        The client's ``open_timeout`` fires (or the server's own ``open_timeout``, which
        closes the TCP connection). Open connections are not affected; to make an open
        connection silent, put a :class:`ChaosProxy` in front and ``blackhole()`` it.
        """
        self._stalled = True

    def accept(self) -> None:
        """Accept handshakes again: clear ``reject``, ``reject_next`` and ``stall``."""
        self._always_rule = None
        self._next_rules.clear()
        self._stalled = False
        self._changed.notify()

    async def close_all(self, code: int = 1000, reason: str = "") -> int:
        """Close every open connection with ``code`` and ``reason``; return how many.

        Waits for each closing handshake (bounded by ``close_timeout``).
        """
        live = [ws for ws in self._live if ws.state is State.OPEN]
        async with anyio.create_task_group() as tg:
            for ws in live:
                tg.start_soon(ws.close, code, reason)
        return len(live)

    async def send_to_all(self, message: Data) -> int:
        """Send ``message`` to every open connection; return how many got it."""
        sent = 0
        for ws in list(self._live):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(message)
                sent += 1
        return sent

    broadcast = send_to_all

    # --- observing ------------------------------------------------------------------------

    @property
    def connections(self) -> list[ConnectionRecord]:
        """The last ``history`` accepted connections, oldest first."""
        return list(self._connections)

    @property
    def open_connections(self) -> list[ConnectionRecord]:
        """Records of the connections open now."""
        return [r for r in self._connections if r.open]

    @property
    def messages(self) -> list[Data]:
        """The last ``history`` messages received (all connections), oldest first."""
        return list(self._messages)

    @property
    def stalled_handshakes(self) -> int:
        """Handshakes held by ``stall()`` right now."""
        return self._stalled_handshakes

    @property
    def rejections(self) -> list[RejectionRecord]:
        """The last ``history`` rejected handshakes, oldest first."""
        return list(self._rejections)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float | None = 5.0,
    ) -> None:
        """Wait until ``predicate()`` holds, re-checked on every connection/message event.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        await self._changed.wait_until(predicate, timeout)

    async def wait_for_connection(
        self,
        n: int = 1,
        timeout: float | None = 5.0,
    ) -> ConnectionRecord:
        """Wait until ``n`` connections were accepted in total; return the latest record.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        await self.wait_until(lambda: self.connection_count >= n, timeout)
        return self._connections[-1]

    async def wait_for_messages(
        self,
        n: int = 1,
        timeout: float | None = 5.0,
    ) -> list[Data]:
        """Wait until ``n`` messages were received in total; return the recorded messages.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        await self.wait_until(lambda: self.message_count >= n, timeout)
        return self.messages

    async def wait_for_closed(
        self,
        n: int = 1,
        timeout: float | None = 5.0,
    ) -> None:
        """Wait until ``n`` accepted connections have closed in total.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        await self.wait_until(lambda: self.closed_count >= n, timeout)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"ScriptedServer({self._host}:{self._port}, {state}, open={len(self._live)}, "
            f"connections={self.connection_count}, messages={self.message_count})"
        )

    # --- internals ------------------------------------------------------------------------

    def _record_message(self, record: ConnectionRecord, message: Data) -> None:
        self._messages.append(message)
        self.message_count += 1
        record.messages_received += 1
        self._changed.notify()

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self._stalled and self.running:
            self._stalled_handshakes += 1
            self._changed.notify()
            try:
                while self._stalled and self.running:
                    await self._changed.wait()
            finally:
                self._stalled_handshakes -= 1
        if not self.running:
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n")
        rule = self._next_rules.popleft() if self._next_rules else self._always_rule
        if rule is None:
            return None
        response = rule.respond(conn)
        self._rejections.append(
            RejectionRecord(request.path, request.headers, rule.status, time.monotonic())
        )
        self.rejection_count += 1
        self._changed.notify()
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _RecordingConnection)
        assert ws.request is not None
        self.connection_count += 1
        remote = ws.remote_address
        record = ConnectionRecord(
            id=self.connection_count,
            path=ws.request.path,
            request_headers=ws.request.headers,
            remote=(remote[0], remote[1]) if remote else None,
            opened_at=time.monotonic(),
        )
        ws.scripted = (self, record)
        self._connections.append(record)
        self._live.add(ws)
        self._changed.notify()
        code = 1000
        try:
            await self.handler(ws, self)
        except ConnectionClosed:
            pass  # the peer went away while the handler was talking to it: normal
        except Exception:
            code = 1011  # websockets logs the error; the client sees "internal error"
            raise
        finally:
            self._live.discard(ws)
            with anyio.CancelScope(shield=True):
                await ws.close(code)  # what websockets does after the handler anyway
            record.closed_at = time.monotonic()
            record.close_code = ws.close_code
            record.close_reason = ws.close_reason
            self.closed_count += 1
            self._changed.notify()


@contextlib.asynccontextmanager
async def serve_scripted(
    handler: Handler | None = None, **kwargs: Any
) -> AsyncIterator[ScriptedServer]:
    """Run a :class:`ScriptedServer` for the duration of an ``async with`` block.

    Args:
        handler: ``async def handler(ws, server)``; None means echo.
        **kwargs: Keyword arguments of :class:`ScriptedServer`.

    Yields:
        The running server.
    """
    async with ScriptedServer(handler, **kwargs) as server:
        yield server
