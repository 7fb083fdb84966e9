"""The channel side of the Phoenix test server: joins, pushes, broadcasts, presence, replies.

:class:`ChannelSide` is mixed into :class:`~resilient_conn.testing.PhoenixServer`, which owns
the sockets and the controls; this half answers what a client sends on a socket, the way a
Phoenix channel process would.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from websockets.exceptions import ConnectionClosed

from .._core.clock import Clock
from .._core.errors import RealtimeProtocolError
from ..realtime.protocol import (
    BROADCAST,
    HEARTBEAT,
    KIND_USER_BROADCAST,
    KIND_USER_BROADCAST_PUSH,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    Message,
)
from ._phoenix_records import Conn, JoinRecord, Sub

__all__ = ["ChannelSide"]


class ChannelSide:
    """How the server answers a client's messages (fields set by ``PhoenixServer``)."""

    topics: tuple[str, ...]
    clock: Clock
    join_error_delay: float
    drop_heartbeats: bool
    drop_push_replies: bool
    joins: deque[JoinRecord]
    pushes: deque[Message]
    heartbeats: int
    revoked_tokens: set[str]
    _reject: tuple[str, str | None, float | None] | None
    _conns: set[Conn]
    _pg_ids: dict[tuple[str, str, str, str], int]
    _presence: dict[str, dict[str, list[dict[str, Any]]]]
    _phx_refs: itertools.count[int]

    def presence_state(self, topic: str) -> dict[str, Any]:
        """The presence state of ``topic`` (defined by the server)."""
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    async def _send(self, conn: Conn, msg: Message) -> int:
        try:
            await conn.ws.send(conn.ser.encode(msg))
        except (ConnectionClosed, RealtimeProtocolError):
            return 0
        return 1

    async def _reply(
        self, conn: Conn, req: Message, status: str, response: Any, *, join_ref: Any = True
    ) -> None:
        jr = req.join_ref if join_ref is True else join_ref
        payload = {"status": status, "response": response}
        await self._send(conn, Message(req.topic, PHX_REPLY, payload, req.ref, jr))

    async def _on_message(self, conn: Conn, msg: Message) -> None:
        if msg.topic == PHOENIX_TOPIC and msg.event == HEARTBEAT:
            self.heartbeats += 1
            if not self.drop_heartbeats:
                await self._reply(conn, msg, "ok", {})
            return
        self.pushes.append(msg)
        if msg.event == PHX_JOIN:
            await self._join(conn, msg)
            return
        if msg.event == PHX_LEAVE:
            await self._reply(conn, msg, "ok", {})
            sub = conn.subs.pop(msg.topic, None)
            if sub is not None:
                await self._send(
                    conn, Message(msg.topic, PHX_CLOSE, {}, sub.join_ref, sub.join_ref)
                )
                await self._untrack(msg.topic, sub.presence_key)
            return
        sub = conn.subs.get(msg.topic)
        if sub is None:
            await self._reply(conn, msg, "error", {"reason": "unmatched topic"}, join_ref=None)
            return
        if msg.event == "access_token":
            token = msg.payload.get("access_token") if isinstance(msg.payload, dict) else None
            if token in self.revoked_tokens:
                await self._kill_channel(conn, msg.topic, "Token has expired 0 seconds ago")
            elif isinstance(token, str):
                sub.token = token
        elif msg.event == BROADCAST:
            await self._on_broadcast(conn, sub, msg)
        elif msg.event == "presence":
            await self._on_presence(conn, sub, msg)

    async def _join(self, conn: Conn, msg: Message) -> None:
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        assert isinstance(config, dict)
        token = payload.get("access_token")
        token = token if isinstance(token, str) else None
        routed = self._routed(msg.topic)
        reason = self._rejection(msg.topic, token) if routed else "unmatched topic"
        self.joins.append(
            JoinRecord(msg.topic, msg.join_ref, token, config, conn.id, reason is None)
        )
        if not routed:  # Phoenix's own answer to a topic its router does not match
            await self._reply(conn, msg, "error", {"reason": "unmatched topic"}, join_ref=None)
            return
        if reason is not None:
            delay = self._reject[2] if self._reject and self._reject[2] is not None else None
            conn.tg.start_soon(self._late_reject, conn, msg, reason, delay)
            return
        old = conn.subs.get(msg.topic)
        entries = config.get("postgres_changes") or []
        pg = [{**e, "id": self._pg_id(e)} for e in entries if isinstance(e, dict)]
        presence = config.get("presence") if isinstance(config.get("presence"), dict) else {}
        assert isinstance(presence, dict)
        key = presence.get("key") or f"client-{conn.id}"
        sub = Sub(msg.join_ref, config, pg, str(key), token)
        conn.subs[msg.topic] = sub
        await self._reply(conn, msg, "ok", {"postgres_changes": pg})
        if old is not None:
            await self._send(conn, Message(msg.topic, PHX_CLOSE, {}, old.join_ref, old.join_ref))
        if pg:
            system = {
                "extension": "postgres_changes",
                "status": "ok",
                "message": "Subscribed to PostgreSQL",
                "channel": msg.topic.removeprefix("realtime:"),
            }
            await self._send(conn, Message(msg.topic, "system", system, None, msg.join_ref))
        if presence.get("enabled"):
            state = self.presence_state(msg.topic)
            await self._send(conn, Message(msg.topic, "presence_state", state, None, msg.join_ref))

    def _routed(self, topic: str) -> bool:
        return any(topic.startswith(p[:-1]) if p.endswith("*") else topic == p for p in self.topics)

    def _full(self, topic: str) -> str:
        """A control's topic: as given if routed, else Supabase's ``realtime:<topic>``."""
        return topic if self._routed(topic) else f"realtime:{topic}"

    def _rejection(self, topic: str, token: str | None) -> str | None:
        if token is not None and token in self.revoked_tokens:
            return "InvalidJWTToken: Token has expired 0 seconds ago"
        if self._reject is not None and self._reject[1] in (None, topic):
            return self._reject[0]
        return None

    async def _late_reject(
        self, conn: Conn, msg: Message, reason: str, delay: float | None
    ) -> None:
        await self.clock.sleep(self.join_error_delay if delay is None else delay)
        await self._reply(conn, msg, "error", {"reason": reason})

    def _pg_id(self, entry: dict[str, Any]) -> int:
        key = (
            str(entry.get("event", "")),
            str(entry.get("schema", "")),
            str(entry.get("table", "")),
            str(entry.get("filter", "")),
        )
        return self._pg_ids.setdefault(key, 10_000 + len(self._pg_ids))

    async def _on_broadcast(self, conn: Conn, sub: Sub, msg: Message) -> None:
        cfg = sub.config.get("broadcast") if isinstance(sub.config.get("broadcast"), dict) else {}
        assert isinstance(cfg, dict)
        for other in list(self._conns):
            if msg.topic in other.subs and (other is not conn or cfg.get("self")):
                await self._relay(other, msg)
        if cfg.get("ack") and not self.drop_push_replies:
            await self._reply(conn, msg, "ok", {})

    async def _relay(self, conn: Conn, msg: Message) -> None:
        body = msg.payload
        if msg.kind == KIND_USER_BROADCAST_PUSH and conn.ser.vsn == "2.0.0":
            await self._send(conn, Message(msg.topic, BROADCAST, body, kind=KIND_USER_BROADCAST))
            return
        if isinstance(body, dict) and isinstance(body.get("payload"), bytes):
            return  # a binary user broadcast cannot reach a v1 client
        await self._send(conn, Message(msg.topic, BROADCAST, body))

    async def _on_presence(self, conn: Conn, sub: Sub, msg: Message) -> None:
        body = msg.payload if isinstance(msg.payload, dict) else {}
        if body.get("event") == "track":
            meta = body.get("payload") if isinstance(body.get("payload"), dict) else {}
            assert isinstance(meta, dict)
            await self._track(msg.topic, sub.presence_key, dict(meta))
        elif body.get("event") == "untrack":
            await self._untrack(msg.topic, sub.presence_key)
        if not self.drop_push_replies:
            await self._reply(conn, msg, "ok", {})

    async def _track(self, topic: str, key: str, meta: dict[str, Any]) -> None:
        meta["phx_ref"] = f"F{next(self._phx_refs)}"
        state = self._presence.setdefault(topic, {})
        leaves = {key: {"metas": state[key]}} if key in state else {}
        state[key] = [meta]
        await self._fan_out(
            topic, "presence_diff", {"joins": {key: {"metas": [meta]}}, "leaves": leaves}
        )

    async def _untrack(self, topic: str, key: str) -> None:
        metas = self._presence.get(topic, {}).pop(key, None)
        if metas:
            await self._fan_out(
                topic, "presence_diff", {"joins": {}, "leaves": {key: {"metas": metas}}}
            )

    async def _fan_out(self, topic: str, event: str, payload: Any) -> int:
        sent = 0
        for conn in list(self._conns):
            if topic in conn.subs:
                sent += await self._send(conn, Message(topic, event, payload))
        return sent

    async def _kill_channel(self, conn: Conn, topic: str, message: str) -> None:
        sub = conn.subs.pop(topic, None)
        if sub is None:
            return
        j = sub.join_ref
        system = {
            "extension": "system",
            "status": "error",
            "message": message,
            "channel": topic.removeprefix("realtime:"),
        }
        await self._send(conn, Message(topic, "system", system, None, j))
        await self._send(conn, Message(topic, PHX_CLOSE, {}, j, j))
        await self._untrack(topic, sub.presence_key)
