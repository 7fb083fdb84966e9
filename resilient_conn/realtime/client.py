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
  ignored; a frame that fails to decode or to dispatch (whatever it raises) is counted in
  ``stats["malformed"]``, logged once per kind (rate-limited) and skipped.

Timing: heartbeats and push/join timeouts are network timeouts and run in real time (like the
connection's keepalive); rejoin backoff waits go through the injected clock.

Here: the public surface, the channel registry, the inbound dispatch. Next to it: ``_heartbeat``,
``_outbox`` (pushes, replies), ``_driver`` (the machine's actions), ``_machine`` (pure),
``_tasks`` (its tasks, its one close).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import anyio.abc

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import ConnectionFailedError, RealtimeError
from .._core.log import get_logger, redact_text, redact_url
from ..connection.connection import ResilientConnection, in_supervisor
from ..connection.events import ConnectionState, StateChange
from ..resilience import config
from ..resilience.backoff import Backoff
from ._driver import ChannelDriver
from ._heartbeat import Heartbeat
from ._machine import Action, ChannelState
from ._outbox import Outbox, Push
from ._ratelog import RateLimitedLog
from ._tasks import ClientTasks
from ._url import build_dial_url, check_client_args, full_topic, normalise_url, topic_prefix_for
from .channel import Channel
from .protocol import (
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_REPLY,
    Message,
    RefCounter,
    close_ref,
    make_serializer,
    parse_reply,
)

__all__ = ["RealtimeClient", "TokenSource"]

TokenSource = str | Callable[[], str | Awaitable[str]]
"""An access token, or a sync/async callable returning a fresh one."""


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
        topic_prefix: Put before every channel topic that lacks it. Default: ``"realtime:"``
            for Supabase (a ``/realtime/v1/...`` path or a ``*.supabase.co`` host), ``""``
            (topics exactly as given) for any other Phoenix server. Self-hosted Supabase
            Realtime on ``/socket/websocket`` needs ``topic_prefix="realtime:"``.
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
        topic_prefix: str | None = None,
        **conn_options: Any,
    ) -> None:
        self._base_url = normalise_url(url)
        self.topic_prefix = topic_prefix_for(self._base_url, topic_prefix)
        """What :meth:`channel` puts before a topic that lacks it."""
        check_client_args(vsn, push_buffer_size, rejoin_backoff, access_token, conn_options)
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
        self._channels: dict[str, Channel] = {}
        self._token_source: TokenSource | None = access_token
        self._token: str | None = access_token if isinstance(access_token, str) else apikey
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._log = get_logger(connection=self._conn.name)
        self._tasks = ClientTasks(self._conn.name, self._log)
        self._malformed = RateLimitedLog(self._log, "resilient_conn.realtime.malformed_frame")
        self.stats: Counter[str] = Counter()
        """Counters: ``malformed``, ``heartbeat_timeouts``, ``rejoins``, ``token_refreshes``,
        ``pushes_dropped``, ``join_errors``, ``handler_dropped``, ``handler_errors``."""
        self._outbox = Outbox(
            self._conn,
            self._ser,
            self._refs,
            push_timeout=lambda: self.push_timeout,
            task_group=lambda: self._tg,
        )
        self._heartbeat = Heartbeat(
            self._conn,
            self._ser,
            self._refs,
            interval=lambda: self.heartbeat_interval,
            stats=self.stats,
            log=self._log,
            on_beat=self._outbox.sweep,
        )
        self._driver = ChannelDriver(self)

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
        if self._tasks.started:
            raise RuntimeError("RealtimeClient is already running")
        await self._conn.__aenter__()
        try:
            self._tg = await self._tasks.start(self._reader, self._heartbeat.run)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave every channel (best effort, 1 s), close the connection, end every task.

        Safe to cancel, callable from anywhere; bounded by the connection's close plus 1 s.
        A handler of this client awaiting it is cancelled with the client's tasks.
        """
        if self._tasks.started:
            await self._tasks.close_once(self._shutdown, inside=in_supervisor(self._conn))

    async def _shutdown(self) -> None:
        self._closing = True
        with anyio.move_on_after(1.0):
            for ch in list(self._channels.values()):
                if ch.state is ChannelState.JOINED:
                    await self._run(ch, ch.machine.leave())
        for ch in list(self._channels.values()):
            self._driver.apply(ch, ch.machine.abort("client closed"))
        self._tasks.stop()
        try:
            await self._tasks.wait()
        finally:
            self._tg = None
            await self._conn.aclose()
            retired, self._driver.retired = self._driver.retired, set()
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
        handler_queue_size: int = 100,
        handler_overflow: str = "drop_oldest",
        handler_timeout: float | None = None,
        handler_concurrency: int = 1,
    ) -> Channel:
        """Return the channel for ``topic`` (not joined yet: call ``subscribe()``).

        Args:
            topic: As the server knows it (``"rooms:lobby"``), after :attr:`topic_prefix`
                (Supabase: ``"room1"`` becomes ``"realtime:room1"``). If a channel for the
                topic is already open, it is returned as is.
            broadcast: ``{"ack": bool, "self": bool}``.
            presence: ``{"key": "..."}`` enables presence (``None`` leaves it off).
            postgres_changes: Entries ``{"event", "schema", "table", "filter"?}``.
            private: Join as a private (RLS-authorised) channel.
            queue_size: Bound of the ``async for`` queue (0 disables it; oldest dropped).
            handler_queue_size: Bound of each async ``on()`` handler's queue of pending calls.
            handler_overflow: What a full one drops: ``"drop_oldest"`` or ``"drop_newest"``.
            handler_timeout: Longest one async handler call may run (None: no limit).
            handler_concurrency: Calls of one async handler run at once (1: in order).
        """
        full = full_topic(self.topic_prefix, topic)
        config.check_int(queue_size, "queue_size")
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
            handler_queue_size=handler_queue_size,
            handler_overflow=handler_overflow,
            handler_timeout=handler_timeout,
            handler_concurrency=handler_concurrency,
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
                await self._outbox.send(ch, [(msg, None)])

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
        await self._driver.run(ch, actions)

    async def _send_push(self, ch: Channel, push: Push) -> None:
        await self._outbox.send(ch, [self._outbox.prepare(ch, push)])

    # --- connection hooks ------------------------------------------------------------------

    async def _on_open(self, conn: ResilientConnection) -> None:
        if self._closing:
            return
        self._heartbeat.reset()
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
                self._driver.apply(ch, ch.machine.abort(f"connection failed: {change.reason}"))

    def _transport_lost(self) -> None:
        """The transport ended: error the channels, re-buffer pushes still awaiting replies.

        Their reply can no longer come, so they are sent again after the rejoin (while their
        timeout lasts): at-least-once, like a retry after a timeout.
        """
        self._heartbeat.reset()
        for ch in list(self._channels.values()):
            self._driver.apply(ch, ch.machine.socket_closed())
        self._outbox.requeue_unanswered(self._channels)

    async def _probe(self, conn: ResilientConnection) -> float:
        return await self._heartbeat.probe(conn)

    # --- inbound ---------------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            async for frame in self._conn:
                stage = "decode"
                try:
                    msg = self._ser.decode(frame)
                    stage = "dispatch"
                    await self._dispatch(msg)
                except Exception as exc:  # no frame may kill the reader: count, log, skip
                    self.stats["malformed"] += 1
                    kind, error = f"{stage}:{type(exc).__name__}", redact_text(str(exc))[:300]
                    self._malformed.warn(kind, anyio.current_time(), error=error)
        except ConnectionFailedError as exc:
            for ch in list(self._channels.values()):
                self._driver.apply(ch, ch.machine.abort(f"connection failed: {exc}"))

    async def _dispatch(self, msg: Message) -> None:
        if msg.event == PHX_REPLY:
            status, response = parse_reply(msg)
            if msg.topic == PHOENIX_TOPIC:
                self._heartbeat.on_reply(msg.ref)
                return
            if self._outbox.resolve(msg, status, response):
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

    def _dial_url(self) -> str:
        return build_dial_url(self._base_url, self.apikey, self.vsn)
