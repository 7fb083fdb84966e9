"""RealtimeClient: Phoenix Channels / Supabase Realtime over a ResilientConnection.

The client HAS a :class:`~resilient_conn.connection.ResilientConnection` (it does not subclass
it): the connection dials, reconnects with backoff behind its circuit breaker and reports its
health; the client speaks Phoenix on top of it:

* a heartbeat on topic ``phoenix`` every ``heartbeat_interval`` (sent with ``buffer=False``);
  if the previous heartbeat is still unanswered at the next beat the transport is declared
  dead (``fail_current("heartbeat_timeout")``) and the connection reconnects; every reply is
  a round trip reported with ``report_alive(rtt)``, and ``check()`` measures one;
* after every reconnect (the connection's ``on_open`` hook) every channel that should be joined
  is rejoined with the CURRENT access token (a token callable is called again), without
  waiting for the replies; a failed rejoin is retried with ``rejoin_backoff``;
* replies are matched to pushes by ref; ``phx_close``/``phx_error`` for an old join ref are
  ignored; malformed frames are logged, counted in ``stats["malformed"]`` and skipped.

Timing: heartbeats and push/join timeouts are network timeouts and run in real time (like the
connection's keepalive); rejoin backoff waits go through the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.abc

from .. import config
from .._clock import SYSTEM_CLOCK, Clock
from .._log import get_logger, redact_text, redact_url
from ..backoff import Backoff
from ..connection import ResilientConnection
from ..errors import (
    ChannelJoinError,
    ConfigError,
    ConnectionClosedError,
    ConnectionFailedError,
    NotConnectedError,
    RealtimeError,
    RealtimeProtocolError,
)
from ..events import ConnectionState, StateChange
from .channel import (
    Action,
    Channel,
    ChannelState,
    Closed,
    Joined,
    JoinFailed,
    ScheduleRejoin,
    SendJoin,
    SendLeave,
    _Push,
    _settle,
)
from .protocol import (
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    Message,
    RefCounter,
    ReplyTable,
    close_ref,
    make_serializer,
    parse_reply,
)

__all__ = ["RealtimeClient", "TokenSource"]

TokenSource = str | Callable[[], str | Awaitable[str]]
"""An access token, or a sync/async callable returning a fresh one."""

_Frame = tuple[Message, _Push | None]
_RESERVED = ("on_open", "probe")


class RealtimeClient:
    """A Phoenix Channels / Supabase Realtime client that survives reconnects.

    ::

        async with RealtimeClient(url, apikey=key, access_token=get_jwt) as client:
            room = client.channel("room1", broadcast={"ack": True})
            await room.subscribe()
            room.on("broadcast", print, filter="cursor")
            await room.send_broadcast("cursor", {"x": 1})

    Args:
        url: ``ws(s)://.../socket/websocket`` or ``.../realtime/v1/websocket``. An
            ``http(s)://`` URL is turned into ``ws(s)://``, and a bare host gets the hosted
            Supabase path ``/realtime/v1/websocket``. ``apikey`` and ``vsn`` are added to the
            query on every dial.
        apikey: The Supabase API key (sent as the ``apikey`` query parameter).
        access_token: JWT sent with every join (and by :meth:`set_auth`), or a sync/async
            callable returning one, called again before every (re)join round. Without one the
            ``apikey`` is used, as supabase-js does.
        vsn: Protocol version, ``"2.0.0"`` (default) or ``"1.0.0"``.
        heartbeat_interval: Seconds between heartbeats (default 25, ``RESILIENT_CONN_
            HEARTBEAT_INTERVAL``). A heartbeat unanswered by the next beat kills the transport.
        push_timeout: Default timeout of joins and pushes in seconds (default 10).
        rejoin_backoff: Delays between rejoin attempts of a channel whose join failed
            (default ``Backoff(initial_delay=1.0, max_delay=10.0, jitter="equal")``).
        push_buffer_size: Per-channel bound on pushes waiting for a join (default 100).
        **conn_options: Passed to :class:`ResilientConnection` (``backoff``, ``breaker``,
            ``stable_after``, ``name``, ``clock``...). ``on_open`` and ``probe`` are the
            client's own.

    Raises:
        ConfigError: A bad argument, naming the parameter.
    """

    def __init__(
        self,
        url: str,
        *,
        apikey: str | None = None,
        access_token: TokenSource | None = None,
        vsn: str = "2.0.0",
        heartbeat_interval: float | None = None,
        push_timeout: float | None = None,
        rejoin_backoff: Backoff | None = None,
        push_buffer_size: int = 100,
        **conn_options: Any,
    ) -> None:
        self._base_url = _normalise_url(url)
        if vsn not in ("1.0.0", "2.0.0"):
            raise ConfigError(f"vsn must be '1.0.0' or '2.0.0', got {vsn!r}")
        if isinstance(push_buffer_size, bool) or not isinstance(push_buffer_size, int):
            raise ConfigError(f"push_buffer_size must be an int, got {push_buffer_size!r}")
        if push_buffer_size < 1:
            raise ConfigError(f"push_buffer_size must be >= 1, got {push_buffer_size!r}")
        if rejoin_backoff is not None and not isinstance(rejoin_backoff, Backoff):
            raise ConfigError(f"rejoin_backoff must be a Backoff, got {rejoin_backoff!r}")
        if access_token is not None and not (
            isinstance(access_token, str) or callable(access_token)
        ):
            raise ConfigError("access_token must be a string or a callable returning one")
        for key in _RESERVED:
            if key in conn_options:
                raise ConfigError(f"{key} is set by RealtimeClient; it cannot be passed")
        self.vsn = vsn
        self.apikey = apikey
        self.heartbeat_interval = config.resolve(
            "heartbeat_interval", heartbeat_interval, param="heartbeat_interval"
        )
        self.push_timeout = config.resolve("push_timeout", push_timeout, param="push_timeout")
        self.rejoin_backoff = rejoin_backoff or Backoff(
            initial_delay=1.0, max_delay=10.0, jitter="equal"
        )
        self.push_buffer_size = push_buffer_size
        self._clock: Clock = conn_options.get("clock") or SYSTEM_CLOCK
        conn_options.setdefault("name", f"realtime:{urlsplit(self._base_url).hostname}")

        async def dial_url() -> str:
            return self._dial_url()

        dial_url.__qualname__ = redact_url(self._dial_url())  # what the connection displays
        self._conn = ResilientConnection(
            dial_url, on_open=self._on_open, probe=self._probe, **conn_options
        )
        self._conn.on_state_change(self._on_state)
        self._ser = make_serializer(vsn, "client")
        self._refs = RefCounter()
        self._replies: ReplyTable[_Push] = ReplyTable()
        self._channels: dict[str, Channel] = {}
        self._token_source: TokenSource | None = access_token
        self._token: str | None = access_token if isinstance(access_token, str) else apikey
        self._hb_pending: tuple[str, float, int] | None = None
        self._probes: dict[str, tuple[asyncio.Future[float], float]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._closing = False
        self._retired: set[Channel] = set()
        self._log = get_logger(connection=self._conn.name)
        self.stats: Counter[str] = Counter()
        """Counters: ``malformed``, ``heartbeat_timeouts``, ``rejoins``, ``token_refreshes``,
        ``pushes_dropped``, ``join_errors``."""

    def __repr__(self) -> str:
        return f"<RealtimeClient {self._conn.name} {self._conn.state.value} vsn={self.vsn}>"

    # --- public surface --------------------------------------------------------------------

    @property
    def connection(self) -> ResilientConnection:
        """The underlying connection (state, ``health()``, ``check()``, ``stats``)."""
        return self._conn

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The channels that are not closed."""
        return tuple(self._channels.values())

    @property
    def access_token(self) -> str | None:
        """The token the next join will carry."""
        return self._token

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("RealtimeClient is already running")
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._conn)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg.start_soon(self._reader)
            self._tg.start_soon(self._heartbeat_loop)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave every channel (best effort), close the connection, end every task."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing = True
        with anyio.move_on_after(1.0):
            for ch in list(self._channels.values()):
                if ch.state is ChannelState.JOINED:
                    await self._run(ch, ch.machine.leave())
        for ch in list(self._channels.values()):
            self._apply(ch, ch.machine.abort("client closed"))
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            await stack.aclose()
        finally:
            self._tg = None
            retired, self._retired = self._retired, set()
            for ch in retired:
                await ch._aclose_hooks()

    def channel(
        self,
        topic: str,
        *,
        broadcast: Mapping[str, Any] | None = None,
        presence: Mapping[str, Any] | None = None,
        postgres_changes: Sequence[Mapping[str, Any]] | None = None,
        private: bool = False,
        queue_size: int = 1000,
    ) -> Channel:
        """Return the channel for ``topic`` (not joined yet: call ``subscribe()``).

        Args:
            topic: ``"room1"`` or ``"realtime:room1"`` (the ``realtime:`` prefix is added when
                missing). If a channel for the topic is already open, it is returned as is.
            broadcast: ``{"ack": bool, "self": bool}``.
            presence: ``{"key": "..."}`` enables presence (``None`` leaves it off).
            postgres_changes: Entries ``{"event", "schema", "table", "filter"?}``.
            private: Join as a private (RLS-authorised) channel.
            queue_size: Bound of the ``async for`` queue (0 disables it; oldest dropped).
        """
        if not isinstance(topic, str) or not topic.removeprefix("realtime:"):
            raise ConfigError(f"topic must be a non-empty string, got {topic!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ConfigError(f"queue_size must be an int >= 0, got {queue_size!r}")
        full = topic if topic.startswith("realtime:") else f"realtime:{topic}"
        existing = self._channels.get(full)
        if existing is not None:
            return existing
        ch = Channel(
            self,
            full,
            broadcast=broadcast,
            presence=presence,
            postgres_changes=postgres_changes,
            private=private,
            queue_size=queue_size,
            push_buffer_size=self.push_buffer_size,
            rejoin_delay=lambda n: self.rejoin_backoff.delay(n - 1),
            socket_open=self._conn.is_connected,
        )
        self._channels[full] = ch
        return ch

    async def set_auth(self, token: TokenSource | None) -> None:
        """Use ``token`` from now on and push it to every joined channel.

        Every later join and rejoin carries it too. A callable is called now and again before
        every rejoin round.
        """
        self._token_source = token
        value = await self._refresh_token()
        for ch in list(self._channels.values()):
            if ch.state is ChannelState.JOINED and value is not None:
                msg = Message(
                    ch.topic,
                    "access_token",
                    {"access_token": value},
                    self._refs.next(),
                    ch.machine.join_ref,
                )
                await self._send_frames(ch, [(msg, None)])

    # --- used by Channel -------------------------------------------------------------------

    def _register(self, ch: Channel) -> None:
        if self._tg is None or self._closing:
            raise RealtimeError("the RealtimeClient is not running (use 'async with')")
        current = self._channels.get(ch.topic)
        if current is not None and current is not ch:
            raise RealtimeError(f"another channel object is open on {ch.topic!r}")
        self._channels[ch.topic] = ch
        ch.machine._socket_open = self._conn.is_connected

    def _failure_reason(self) -> str | None:
        if self._conn.state is ConnectionState.FAILED:
            error = self._conn.last_error
            return "connection failed" + ("" if error is None else f": {error}")
        return None

    async def _refresh_token(self) -> str | None:
        source = self._token_source
        if source is None:
            self._token = self.apikey
        elif isinstance(source, str):
            self._token = source
        else:
            try:
                value = source()
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                self._log.warning(
                    "resilient_conn.realtime.token_failed", error=redact_text(repr(exc))
                )
            else:
                self.stats["token_refreshes"] += 1
                self._token = value
        return self._token

    async def _run(self, ch: Channel, actions: list[Action]) -> None:
        frames = self._apply(ch, actions)
        if frames:
            await self._send_frames(ch, frames)

    async def _send_push(self, ch: Channel, push: _Push) -> None:
        await self._send_frames(ch, [self._prepare(ch, push)])

    # --- actions and frames ----------------------------------------------------------------

    def _apply(self, ch: Channel, actions: list[Action]) -> list[_Frame]:
        out: list[_Frame] = []
        for action in actions:
            if isinstance(action, SendJoin):
                self._cancel_timer(ch, "rejoin")
                payload = ch.join_payload(self._token)
                join = Message(ch.topic, PHX_JOIN, payload, action.join_ref, action.join_ref)
                out.append((join, None))
                limit = self.push_timeout if ch.machine.joined_once else ch._join_timeout
                self._start_timer(ch, "join", limit, self._join_expired, ch, action.join_ref)
            elif isinstance(action, SendLeave):
                leave = Message(ch.topic, PHX_LEAVE, {}, action.ref, action.join_ref)
                out.append((leave, None))
                if action.ref == ch.machine.leave_ref:
                    self._start_timer(ch, "leave", self.push_timeout, self._leave_expired, ch)
            elif isinstance(action, ScheduleRejoin):
                self._start_timer(ch, "rejoin", action.delay, self._rejoin, ch, action.token)
            elif isinstance(action, Joined):
                self._cancel_timer(ch, "join")
                out.extend(self._joined(ch, action))
            elif isinstance(action, JoinFailed):
                self._cancel_timer(ch, "join")
                self.stats["join_errors"] += 1
                self._log.warning(
                    "resilient_conn.realtime.join_failed", topic=ch.topic, reason=action.reason
                )
                ch._settle_join(_join_error(ch.topic, action.reason))
            elif isinstance(action, Closed):
                self._log.info(
                    "resilient_conn.realtime.channel_closed", topic=ch.topic, reason=action.reason
                )
                if self._channels.get(ch.topic) is ch:
                    del self._channels[ch.topic]
                ch._closed(action.reason)
                # Keep closed channels whose async callbacks still run, to end them on close.
                self._retired = {c for c in self._retired if c._hooks_pending()}
                self._retired.add(ch)
        return out

    def _joined(self, ch: Channel, action: Joined) -> list[_Frame]:
        response = action.response if isinstance(action.response, dict) else {}
        ids = _pair_postgres_ids(ch.join_payload(None)["config"]["postgres_changes"], response)
        if ids is None:
            reason = "mismatch between server and client bindings for postgres changes"
            ch._settle_join(_join_error(ch.topic, reason))
            return self._apply(ch, ch.machine.leave())
        ch.postgres_ids = ids
        ch._settle_join(None)
        self._log.info("resilient_conn.realtime.joined", topic=ch.topic, rejoined=action.rejoined)
        if action.rejoined:
            self.stats["rejoins"] += 1
            ch._gap_hooks.emit(ch)
        frames = []
        if (
            action.rejoined
            and ch._tracked is not None
            and not any(p.event == "presence" for p in ch._buffer)
        ):
            loop = asyncio.get_running_loop()
            retrack = _Push("presence", ch._track_body(), True, None, loop.create_future())
            frames.append(self._prepare(ch, retrack))
        frames += [self._prepare(ch, push) for push in ch._buffer if not push.future.done()]
        ch._buffer.clear()
        return frames

    def _prepare(self, ch: Channel, push: _Push) -> _Frame:
        push.ref = self._refs.next()
        push.topic = ch.topic
        if push.expects_reply:
            deadline = anyio.current_time() + self.push_timeout * 3
            self._replies.add(push.ref, push, deadline)
        msg = Message(ch.topic, push.event, push.payload, push.ref, ch.machine.join_ref, push.kind)
        return msg, push

    async def _send_frames(self, ch: Channel, frames: list[_Frame]) -> None:
        for index, (msg, push) in enumerate(frames):
            if push is not None and push.future.done():
                continue
            try:
                frame = self._ser.encode(msg)
            except RealtimeProtocolError as exc:
                if push is not None:
                    self._replies.pop(push.ref)
                    _settle(push, exc)
                continue
            try:
                await self._conn.send(frame, buffer=False)
            except NotConnectedError:
                # A transport is opening (its on_open is running) or just died: pushes wait in
                # the channel buffer; control frames are sent again once it is live, if still
                # meaningful (a new transport's on_open rejoins with a new ref anyway).
                self._requeue(ch, frames[index:])
                control = [m for m, p in frames[index:] if p is None]
                if control and self._tg is not None:
                    self._tg.start_soon(self._resend_when_live, ch, control)
                return
            except (ConnectionClosedError, ConnectionFailedError) as exc:
                for _, later in frames[index:]:
                    if later is not None:
                        _settle(later, exc)
                return
            if push is not None and not push.expects_reply and not push.future.done():
                push.future.set_result(None)

    def _requeue(self, ch: Channel, frames: list[_Frame]) -> None:
        pushes = [p for _, p in frames if p is not None and not p.future.done()]
        for push in pushes:
            self._replies.pop(push.ref)
            push.ref = None
        if not pushes:
            return
        ch._buffer.extendleft(reversed(pushes))
        if not ch._flush_pending and self._tg is not None:
            ch._flush_pending = True
            self._tg.start_soon(self._flush_when_live, ch)

    async def _resend_when_live(self, ch: Channel, messages: list[Message]) -> None:
        with contextlib.suppress(ConnectionClosedError, ConnectionFailedError):
            await self._conn.wait_connected()
        current = ch.machine.join_ref
        for msg in messages:
            still = (
                (msg.event == PHX_JOIN and ch.state is ChannelState.JOINING)
                or (msg.event == PHX_LEAVE and ch.state is ChannelState.LEAVING)
                or ch.state is ChannelState.JOINED
            )
            if still and msg.join_ref == current:
                await self._send_frames(ch, [(msg, None)])

    async def _flush_when_live(self, ch: Channel) -> None:
        try:
            with contextlib.suppress(ConnectionClosedError, ConnectionFailedError):
                await self._conn.wait_connected()
        finally:
            ch._flush_pending = False
        if ch.machine.can_push and ch._buffer:
            frames = [self._prepare(ch, p) for p in ch._buffer if not p.future.done()]
            ch._buffer.clear()
            await self._send_frames(ch, frames)

    # --- timers ----------------------------------------------------------------------------

    def _start_timer(
        self, ch: Channel, name: str, delay: float, fn: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        self._cancel_timer(ch, name)
        if self._tg is None:
            return
        scope = anyio.CancelScope()
        ch._timers[name] = scope
        self._tg.start_soon(self._timer, ch, name, scope, delay, fn, args)

    def _cancel_timer(self, ch: Channel, name: str) -> None:
        scope = ch._timers.pop(name, None)
        if scope is not None:
            scope.cancel()

    async def _timer(
        self,
        ch: Channel,
        name: str,
        scope: anyio.CancelScope,
        delay: float,
        fn: Callable[..., Awaitable[None]],
        args: tuple[Any, ...],
    ) -> None:
        with scope:
            if name == "rejoin":
                await self._clock.sleep(delay)
            else:
                await anyio.sleep(delay)
            if ch._timers.get(name) is scope:
                del ch._timers[name]
            await fn(*args)

    async def _join_expired(self, ch: Channel, join_ref: str) -> None:
        await self._run(ch, ch.machine.join_timed_out(join_ref))

    async def _leave_expired(self, ch: Channel) -> None:
        if ch.machine.leave_ref is not None:
            await self._run(ch, ch.machine.leave_timed_out(ch.machine.leave_ref))

    async def _rejoin(self, ch: Channel, token: int) -> None:
        await self._refresh_token()
        await self._run(ch, ch.machine.rejoin_due(token))

    # --- connection hooks ------------------------------------------------------------------

    async def _on_open(self, conn: ResilientConnection) -> None:
        if self._closing:
            return
        self._hb_pending = None
        await self._refresh_token()
        for ch in list(self._channels.values()):
            if ch.machine.socket_open:  # we never saw the previous transport end
                self._transport_lost()
            await self._run(ch, ch.machine.socket_opened())

    def _on_state(self, change: StateChange) -> None:
        if change.old is ConnectionState.CONNECTED and change.new is not ConnectionState.CONNECTED:
            self._transport_lost()
        if change.new is ConnectionState.FAILED:
            for ch in list(self._channels.values()):
                self._apply(ch, ch.machine.abort(f"connection failed: {change.reason}"))

    def _transport_lost(self) -> None:
        """The transport ended: error the channels, re-buffer pushes still awaiting replies.

        Their reply can no longer come, so they are sent again after the rejoin (while their
        timeout lasts): at-least-once, like a retry after a timeout.
        """
        self._hb_pending = None
        for ch in list(self._channels.values()):
            self._apply(ch, ch.machine.socket_closed())
        unanswered: dict[str, list[_Push]] = {}
        for push in self._replies.drain():
            if not push.future.done():
                push.ref = None
                unanswered.setdefault(push.topic, []).append(push)
        for topic, pushes in unanswered.items():
            owner = self._channels.get(topic)
            if owner is None:
                for push in pushes:
                    _settle(push, RealtimeError(f"{push.event} on {topic}: channel gone"))
            else:
                owner._buffer.extendleft(reversed(pushes))

    async def _probe(self, conn: ResilientConnection) -> float:
        ref = self._refs.next()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._probes[ref] = (future, anyio.current_time())
        try:
            await conn.send(
                self._ser.encode(Message(PHOENIX_TOPIC, HEARTBEAT, {}, ref)), buffer=False
            )
            return await future
        finally:
            self._probes.pop(ref, None)

    # --- the two tasks ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_interval)
            self._sweep(anyio.current_time())
            conn = self._conn
            pending, self._hb_pending = self._hb_pending, None
            if pending is not None and pending[2] == conn.generation and conn.is_connected:
                self.stats["heartbeat_timeouts"] += 1
                self._log.warning(
                    "resilient_conn.realtime.heartbeat_timeout", interval=self.heartbeat_interval
                )
                conn.fail_current(
                    "heartbeat_timeout",
                    TimeoutError(f"no heartbeat reply within {self.heartbeat_interval}s"),
                )
                continue
            ref = self._refs.next()
            self._hb_pending = (ref, anyio.current_time(), conn.generation)
            frame = self._ser.encode(Message(PHOENIX_TOPIC, HEARTBEAT, {}, ref))
            try:
                await conn.send(frame, buffer=False)
            except NotConnectedError:
                self._hb_pending = None
            except (ConnectionClosedError, ConnectionFailedError):
                return

    def _sweep(self, now: float) -> None:
        for push in self._replies.expire(now):
            _settle(push, RealtimeError(f"reply to {push.event!r} never came"))

    async def _reader(self) -> None:
        try:
            async for frame in self._conn:
                try:
                    msg = self._ser.decode(frame)
                    await self._dispatch(msg)
                except RealtimeProtocolError as exc:
                    self.stats["malformed"] += 1
                    self._log.warning(
                        "resilient_conn.realtime.malformed_frame", error=redact_text(str(exc))
                    )
        except ConnectionFailedError as exc:
            for ch in list(self._channels.values()):
                self._apply(ch, ch.machine.abort(f"connection failed: {exc}"))

    async def _dispatch(self, msg: Message) -> None:
        if msg.event == PHX_REPLY:
            status, response = parse_reply(msg)
            if msg.topic == PHOENIX_TOPIC:
                self._heartbeat_reply(msg.ref)
                return
            push = self._replies.pop(msg.ref)
            if push is not None:
                if push.future.done():
                    return
                if status == "ok":
                    push.future.set_result(response)
                else:
                    reason = response.get("reason") if isinstance(response, dict) else response
                    _settle(push, RealtimeError(f"{push.event} on {msg.topic} refused: {reason}"))
                return
            ch = self._channels.get(msg.topic)
            if ch is not None:
                await self._run(ch, ch.machine.reply(msg.ref, status, response))
            return
        ch = self._channels.get(msg.topic)
        if ch is None:
            return
        if msg.event == PHX_CLOSE:
            await self._run(ch, ch.machine.server_close(close_ref(msg)))
            return
        if msg.event == PHX_ERROR:
            await self._run(ch, ch.machine.server_error(close_ref(msg)))
            return
        if msg.join_ref is not None and msg.join_ref != ch.machine.join_ref:
            return  # pushed for a join that is no longer current
        payload = msg.payload
        if (
            msg.event == "system"
            and isinstance(payload, dict)
            and payload.get("extension") == "system"
            and payload.get("status") == "error"
        ):
            await self._run(ch, ch.machine.system_error(str(payload.get("message", "error"))))
        if ch.state is not ChannelState.CLOSED:
            ch._deliver(msg)

    def _heartbeat_reply(self, ref: str | None) -> None:
        now = anyio.current_time()
        pending = self._hb_pending
        if pending is not None and pending[0] == ref:
            self._hb_pending = None
            self._conn.report_alive(now - pending[1])
            return
        probe = self._probes.get(ref or "")
        if probe is not None and not probe[0].done():
            probe[0].set_result(now - probe[1])
            self._conn.report_alive(now - probe[1])

    def _dial_url(self) -> str:
        parts = urlsplit(self._base_url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("vsn", "apikey")]
        if self.apikey is not None:
            query.append(("apikey", self.apikey))
        query.append(("vsn", self.vsn))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _normalise_url(url: object) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(f"url must be a ws://, wss://, http:// or https:// URL, got {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/realtime/v1/websocket"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _join_error(topic: str, reason: str) -> RealtimeError:
    return ChannelJoinError(topic, reason)


def _pair_postgres_ids(wanted: list[dict[str, Any]], response: dict[str, Any]) -> list[int] | None:
    """Pair the server's echoed postgres_changes with ours by index (None on a mismatch)."""
    if not wanted:
        return []
    echoed = response.get("postgres_changes")
    if not isinstance(echoed, list) or len(echoed) != len(wanted):
        return None
    ids: list[int] = []
    for mine, theirs in zip(wanted, echoed, strict=True):
        if not isinstance(theirs, dict) or not isinstance(theirs.get("id"), int):
            return None
        for key, default in (("event", "*"), ("schema", "public"), ("table", "*")):
            if theirs.get(key, default) != mine.get(key, default):
                return None
        if theirs.get("filter") != mine.get("filter"):
            return None
        ids.append(theirs["id"])
    return ids
