"""A faithful Phoenix Channels / Supabase Realtime server for tests (127.0.0.1 only).

It follows PHOENIX-PROTOCOL.md section 7: both paths (``/socket/websocket`` and
``/realtime/v1/websocket``), v1/v2 picked by ``vsn`` (default 1.0.0), heartbeats, joins with
postgres_changes ids, ``system`` and ``presence_state`` after a join, the null / join_ref
conventions, duplicate joins (the old channel gets ``phx_close`` with its OLD join_ref), leave
(reply, then ``phx_close``), broadcast (reply only with ack), presence, access_token (no
reply; a revoked token gets a system error then ``phx_close``), binary kind 3 in / kind 4 out.

Test controls: :meth:`PhoenixServer.inject_postgres_change`, :meth:`~PhoenixServer.broadcast`
(as "another client"), :meth:`~PhoenixServer.presence_track` / ``presence_untrack``,
:attr:`~PhoenixServer.drop_heartbeats`, :attr:`~PhoenixServer.drop_push_replies`,
:meth:`~PhoenixServer.reject_joins`,
:meth:`~PhoenixServer.reject_handshake`, :meth:`~PhoenixServer.close_all`,
:meth:`~PhoenixServer.system_error`, :meth:`~PhoenixServer.crash_channel`,
:meth:`~PhoenixServer.restart`. Records: :attr:`~PhoenixServer.joins` (with the access_token
each join carried), :attr:`~PhoenixServer.pushes`, :attr:`~PhoenixServer.heartbeats`,
:attr:`~PhoenixServer.connections`; event-driven waits (:meth:`~PhoenixServer.wait_for_join`,
...) that tests bound with ``anyio.fail_after``.

Simplifications: ``filter`` of a postgres_changes entry is echoed but not evaluated (events
match on schema, table and event type); rate limits are not enforced.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import RealtimeProtocolError
from .._core.log import get_logger
from ..realtime.protocol import (
    BROADCAST,
    PHX_ERROR,
    Message,
    make_serializer,
)
from ._net import Notifier
from ._phoenix_channels import ChannelSide
from ._phoenix_records import Conn, ConnectionRecord, JoinRecord, json_response, pg_matches

__all__ = ["ConnectionRecord", "JoinRecord", "PhoenixServer"]

PATHS = ("/socket/websocket", "/realtime/v1/websocket")
_log = get_logger(component="phoenix_server")


class PhoenixServer(ChannelSide):
    """A Phoenix / Supabase Realtime server on 127.0.0.1 for tests.

    Use as ``async with PhoenixServer() as server:``; :attr:`url` points at
    ``/socket/websocket`` and :attr:`realtime_url` at ``/realtime/v1/websocket``.

    Args:
        port: TCP port (0 picks a free one; kept across :meth:`restart`).
        join_error_delay: Seconds before a rejected join's error reply (Supabase: 5 s).
        handshake_delay: Seconds before a rejected handshake's HTTP response (Supabase: ~2 s).
        idle_timeout: Close a socket that sends nothing for this long (``None``: never).
        max_records: How many joins and pushes the records keep (oldest dropped first).
        clock: Clock for the delays.
        topics: The router: topic patterns the server has channels for, as Phoenix's
            ``channel "rooms:*"`` (a trailing ``*`` matches any rest). A join of any other
            topic is answered ``{"reason": "unmatched topic"}``, as Phoenix does. Default
            ``("realtime:*",)``: Supabase's router.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        join_error_delay: float = 0.05,
        handshake_delay: float = 0.0,
        idle_timeout: float | None = 60.0,
        max_records: int = 100_000,
        clock: Clock = SYSTEM_CLOCK,
        topics: tuple[str, ...] = ("realtime:*",),
    ) -> None:
        self.port = port
        self.topics = tuple(topics)
        """The topic patterns joins are routed to (see the ``topics`` argument)."""
        self.join_error_delay = join_error_delay
        self.handshake_delay = handshake_delay
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.drop_heartbeats = False
        """While True, heartbeats are recorded but never answered."""
        self.drop_push_replies = False
        """While True, broadcast acks and presence replies are never sent (lost replies)."""
        self.joins: deque[JoinRecord] = deque(maxlen=max_records)
        self.pushes: deque[Message] = deque(maxlen=max_records)
        """Every decoded client message except heartbeats, in arrival order."""
        self.heartbeats = 0
        self.connections: list[ConnectionRecord] = []
        self.malformed = 0
        """Frames that could not be decoded (dropped; the socket stays open)."""
        self.revoked_tokens: set[str] = set()
        """Tokens refused at join (InvalidJWTToken) and by access_token (system error)."""
        self._reject: tuple[str, str | None, float | None] | None = None
        self._handshake: tuple[int, str] | None = None
        self._conns: set[Conn] = set()
        self._ids = itertools.count(1)
        self._pg_ids: dict[tuple[str, str, str, str], int] = {}
        self._presence: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._phx_refs = itertools.count(1)
        self._server: Server | None = None
        self._changed = Notifier()

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> PhoenixServer:
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
        """Start listening on 127.0.0.1 (on :attr:`port`, or a free port if it is 0)."""
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            max_size=5_000_000,
            ping_interval=None,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, code: int = 1001) -> None:
        """Close every socket with ``code`` and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close(code=code)
            await server.wait_closed()

    async def restart(self, code: int = 1012) -> None:
        """Close every socket with ``code`` (1012: service restart), then listen again."""
        await self.stop(code)
        await self.start()

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/socket/websocket`` (add ``?vsn=2.0.0`` for v2)."""
        return f"ws://127.0.0.1:{self.port}{PATHS[0]}"

    @property
    def realtime_url(self) -> str:
        """``ws://127.0.0.1:<port>/realtime/v1/websocket`` (the hosted Supabase path)."""
        return f"ws://127.0.0.1:{self.port}{PATHS[1]}"

    @property
    def open_connections(self) -> int:
        """How many sockets are open now."""
        return len(self._conns)

    # --- controls --------------------------------------------------------------------------

    def reject_joins(
        self, reason: str | None, *, topic: str | None = None, delay: float | None = None
    ) -> None:
        """Refuse joins (of ``topic``, or all) with ``reason``; ``None`` accepts again.

        Args:
            reason: E.g. ``"Unauthorized: You do not have permissions..."``.
            topic: Only this topic (full form, ``realtime:...``); ``None`` for every topic.
            delay: Seconds before the error reply (default :attr:`join_error_delay`).
        """
        self._reject = None if reason is None else (reason, topic, delay)

    def reject_handshake(self, status: int | None, error: str = "rejected") -> None:
        """Answer upgrades with HTTP ``status`` and body ``{"error": error}``; ``None`` stops."""
        self._handshake = None if status is None else (status, error)

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open socket with ``code``."""
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.close(code, reason)

    async def broadcast(self, topic: str, event: str, payload: Any) -> int:
        """Broadcast as another client would; return how many subscribers got it."""
        body = {"type": BROADCAST, "event": event, "payload": payload}
        return await self._fan_out(self._full(topic), BROADCAST, body)

    async def inject_postgres_change(
        self,
        topic: str,
        *,
        table: str,
        type: str = "INSERT",
        schema: str = "public",
        record: dict[str, Any] | None = None,
        old_record: dict[str, Any] | None = None,
        commit_timestamp: str = "2024-01-01T00:00:00Z",
    ) -> int:
        """Send a postgres_changes event to matching subscribers; return how many got it."""
        data: dict[str, Any] = {
            "schema": schema,
            "table": table,
            "commit_timestamp": commit_timestamp,
            "type": type,
            "columns": [{"name": k, "type": "text"} for k in (record or old_record or {})],
            "errors": None,
        }
        if record is not None:
            data["record"] = record
        if old_record is not None:
            data["old_record"] = old_record
        sent = 0
        for conn in list(self._conns):
            sub = conn.subs.get(self._full(topic))
            if sub is None:
                continue
            ids = [e["id"] for e in sub.pg if pg_matches(e, schema, table, type)]
            if ids:
                msg = Message(self._full(topic), "postgres_changes", {"ids": ids, "data": data})
                sent += await self._send(conn, msg)
        return sent

    async def presence_track(self, topic: str, key: str, meta: dict[str, Any]) -> None:
        """Track presence ``key`` with ``meta`` as another client would (sends a diff)."""
        await self._track(self._full(topic), key, dict(meta))

    async def presence_untrack(self, topic: str, key: str) -> None:
        """Untrack presence ``key`` (sends a diff with the leave)."""
        await self._untrack(self._full(topic), key)

    def presence_state(self, topic: str) -> dict[str, Any]:
        """The current presence state of ``topic`` as ``presence_state`` would carry it."""
        return {k: {"metas": list(v)} for k, v in self._presence.get(self._full(topic), {}).items()}

    async def system_error(self, topic: str, message: str) -> int:
        """Send a fatal system error then ``phx_close`` to every subscriber of ``topic``."""
        sent = 0
        for conn in list(self._conns):
            if self._full(topic) in conn.subs:
                await self._kill_channel(conn, self._full(topic), message)
                sent += 1
        return sent

    async def crash_channel(self, topic: str) -> int:
        """Send ``phx_error`` (channel crashed) to every subscriber and drop their channel."""
        sent = 0
        for conn in list(self._conns):
            sub = conn.subs.pop(self._full(topic), None)
            if sub is not None:
                j = sub.join_ref
                sent += await self._send(conn, Message(self._full(topic), PHX_ERROR, {}, j, j))
        return sent

    async def push(
        self,
        topic: str,
        event: str,
        payload: Any,
        *,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> int:
        """Send an arbitrary message to every subscriber of ``topic`` (e.g. a stale close)."""
        msg = Message(self._full(topic), event, payload, ref, join_ref)
        sent = 0
        for conn in list(self._conns):
            if msg.topic in conn.subs:
                sent += await self._send(conn, msg)
        return sent

    async def send_raw(self, frame: str | bytes) -> int:
        """Send ``frame`` as is on every open socket (e.g. garbage); return how many."""
        sent = 0
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(frame)
                sent += 1
        return sent

    # --- waits -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` is true (re-checked whenever the server records)."""
        await self._changed.wait_until(predicate, None)

    async def wait_for_join(self, topic: str, n: int = 1, *, accepted: bool | None = None) -> None:
        """Wait until ``topic`` has been joined ``n`` times (optionally only accepted ones)."""
        full = self._full(topic)

        def done() -> bool:
            hits = [j for j in self.joins if j.topic == full]
            if accepted is not None:
                hits = [j for j in hits if j.accepted is accepted]
            return len(hits) >= n

        await self.wait_for(done)

    async def wait_for_push(self, event: str, n: int = 1, *, topic: str | None = None) -> None:
        """Wait until ``n`` pushes of ``event`` (on ``topic`` if given) have arrived."""
        full = None if topic is None else self._full(topic)

        def done() -> bool:
            hits = [p for p in self.pushes if p.event == event and full in (None, p.topic)]
            return len(hits) >= n

        await self.wait_for(done)

    async def wait_for_heartbeats(self, n: int) -> None:
        """Wait until ``n`` heartbeats have been received in total."""
        await self.wait_for(lambda: self.heartbeats >= n)

    async def wait_for_connections(self, n: int) -> None:
        """Wait until ``n`` sockets have been accepted in total."""
        await self.wait_for(lambda: len(self.connections) >= n)

    def joins_of(self, topic: str) -> list[JoinRecord]:
        """The recorded joins of ``topic`` (either form), oldest first."""
        return [j for j in self.joins if j.topic == self._full(topic)]

    def _notify(self) -> None:
        self._changed.notify()

    # --- handshake and socket loop ---------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path not in PATHS:
            return json_response(404, "not found")
        vsn = parse_qs(parts.query).get("vsn", ["1.0.0"])[0]
        if vsn not in ("1.0.0", "2.0.0"):
            return json_response(400, f"unsupported vsn {vsn}")
        if self._handshake is not None:
            status, error = self._handshake
            await self.clock.sleep(self.handshake_delay)
            return json_response(status, error)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        vsn = query.get("vsn", ["1.0.0"])[0]
        apikey = ws.request.headers.get("x-api-key") or query.get("apikey", [None])[0]
        cid = next(self._ids)
        self.connections.append(ConnectionRecord(cid, urlsplit(ws.request.path).path, vsn, apikey))
        self._notify()
        async with anyio.create_task_group() as tg:
            conn = Conn(cid, ws, make_serializer(vsn, "server"), tg)
            self._conns.add(conn)
            try:
                await self._read_loop(conn)
            finally:
                tg.cancel_scope.cancel()
                self._conns.discard(conn)
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    for topic, sub in list(conn.subs.items()):
                        await self._untrack(topic, sub.presence_key)
                self._notify()

    async def _read_loop(self, conn: Conn) -> None:
        while True:
            with anyio.move_on_after(self.idle_timeout) as scope:
                try:
                    frame = await conn.ws.recv()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught:
                await conn.ws.close(1000, "idle")
                return
            try:
                msg = conn.ser.decode(frame)
            except RealtimeProtocolError as exc:
                self.malformed += 1
                _log.debug("resilient_conn.phoenix_server.malformed", error=str(exc))
                continue
            await self._on_message(conn, msg)
            self._notify()

