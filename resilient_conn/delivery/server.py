"""The server side of acknowledged streams: a hub of sessions, for websockets and for ASGI.

A :class:`DeliveryHub` keeps each session's state (its outbound window, what it received) in
memory across the client's reconnects; each WebSocket connection attaches to its session for
as long as it lasts. A websockets server adds three lines::

    hub = DeliveryHub()

    async def handler(ws):
        async with hub.serve(ws) as session:        # hello, re-send of what is unacked
            async for message in session:           # each message once, in order
                await session.send(f"got {message}")

An ASGI application uses :meth:`DeliveryHub.serve_asgi` the same way with ``(scope,
receive, send)``. The hub's memory is bounded: at most ``max_sessions`` sessions, each with a
bounded window and queue; sessions detached longer than ``idle_ttl`` are forgotten (their
unacknowledged messages are dead-lettered ``closed``).

If the server process restarts, the hub's state is gone: clients then get a
:attr:`~resilient_conn.delivery.GapKind.PEER_RESTARTED` notice and re-send what this server
had not acknowledged; this side reports :attr:`~resilient_conn.delivery.GapKind.UNKNOWN_BEFORE`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .._core.errors import ConfigError, ConnectionClosedError
from ..adapters.websocket import recv_nowait
from ..connection.buffer import DeadLetterReason, Overflow
from ..resilience.config import check_int
from ._endpoint import Attachment, Endpoint, LinkDown
from ._epoch import new_epoch
from ._links import AsgiLink, ASGIReceive, ASGIScope, ASGISend, Closed, ServerLink, WebsocketsLink
from ._options import (
    DEFAULT_ACK_DELAY,
    DEFAULT_ACK_EVERY,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    StreamOptions,
)
from ._session import HubSession, ServerSession
from .envelope import MAX_SEQ, EnvelopeError, Hello, check_epoch, decode
from .records import DeliveryDeadLetter
from .state import GapNotice, OutboundWindow, StreamState

__all__ = ["DEFAULT_IDLE_TTL", "DEFAULT_MAX_SESSIONS", "DeliveryHub", "ServerSession"]

_log = structlog.get_logger("resilient_conn.delivery")

DEFAULT_MAX_SESSIONS = 10_000
"""Most sessions a hub keeps."""
DEFAULT_IDLE_TTL = 3600.0
"""Seconds a detached session is kept for its client's return."""


class DeliveryHub:
    """Sessions of acknowledged streams, kept across their clients' reconnects.

    Args:
        max_sessions: Most sessions kept (default 10,000). Past it the session detached the
            longest is forgotten; if all are attached, a new one is refused (close 1013).
        idle_ttl: Seconds a detached session is kept (default 3600).
        window, window_bytes, overflow, send_timeout, message_ttl, max_queue, ack_every,
            ack_delay, hello_timeout: Per-session settings, as for
            :class:`~resilient_conn.delivery.AckedStream`.
        resume: ``resume(session) -> (client_epoch, seq) | None``, asked for each session the
            hub does not know (after a restart): the position the application kept with its
            own data (:attr:`ServerSession.position`). Copies of messages up to it that the
            client re-sends are then dropped, so a restarted server applies nothing twice.
        on_gap: Callback (sync or async) receiving every session's gap notices.
        on_dead_letter: Callback (sync or async) receiving every session's dead letters.
        clock: Monotonic clock (default ``time.monotonic``).

    Raises:
        ConfigError: A bad argument.
    """

    def __init__(
        self,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_ttl: float = DEFAULT_IDLE_TTL,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        overflow: str | Overflow = "block",
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        message_ttl: float | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        ack_every: int = DEFAULT_ACK_EVERY,
        ack_delay: float = DEFAULT_ACK_DELAY,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        resume: Callable[[str], tuple[str, int] | None] | None = None,
        on_gap: Callable[[GapNotice], Any] | None = None,
        on_dead_letter: Callable[[DeliveryDeadLetter], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_int(max_sessions, "max_sessions", 1)
        if isinstance(idle_ttl, bool) or not isinstance(idle_ttl, int | float) or not idle_ttl > 0:
            raise ConfigError(f"idle_ttl must be a number > 0, got {idle_ttl!r}")
        self.options = StreamOptions.build(
            window=window,
            window_bytes=window_bytes,
            overflow=overflow,
            send_timeout=send_timeout,
            message_ttl=message_ttl,
            max_queue=max_queue,
            ack_every=ack_every,
            ack_delay=ack_delay,
            hello_timeout=hello_timeout,
        )
        """The effective per-session settings."""
        self.max_sessions = max_sessions
        self.idle_ttl = float(idle_ttl)
        if resume is not None and not callable(resume):
            raise ConfigError("resume must be a callable: resume(session) -> (epoch, seq) | None")
        self._resume = resume
        self._on_gap = on_gap
        self._on_dead_letter = on_dead_letter
        self._clock = clock
        self._sessions: OrderedDict[str, HubSession] = OrderedDict()
        self.evicted = 0
        """Sessions forgotten (idle too long, or to make room)."""
        self.refused = 0
        """Connections refused: no hello, a bad one, or no room for a new session."""

    def __len__(self) -> int:
        return len(self._sessions)

    def __repr__(self) -> str:
        return f"<DeliveryHub sessions={len(self._sessions)}/{self.max_sessions}>"

    def get(self, session: str) -> ServerSession | None:
        """The session named ``session`` (to send to it from anywhere), or None."""
        state = self._sessions.get(session)
        return None if state is None else ServerSession(state, None)

    def sessions(self) -> list[str]:
        """The session identities kept, least recently active first."""
        return list(self._sessions)

    # ------------------------------------------------------------------ attach
    @asynccontextmanager
    async def serve(self, ws: ServerConnection) -> AsyncIterator[ServerSession]:
        """Attach a websockets server connection to its session for as long as it lasts.

        Raises:
            EnvelopeError: The client's first frame was not a valid hello (the connection
                is closed with 1002), or the hub is full (closed with 1013).
            ConnectionClosedError: The connection closed before its hello.
        """
        async with self._attach(WebsocketsLink(ws)) as session:
            yield session

    @asynccontextmanager
    async def serve_asgi(
        self,
        scope: ASGIScope,
        receive: ASGIReceive,
        send: ASGISend,
        *,
        subprotocol: str | None = None,
    ) -> AsyncIterator[ServerSession]:
        """Accept an ASGI WebSocket and attach it to its session for as long as it lasts.

        Call it from an ASGI application for a ``"websocket"`` scope; it accepts the
        connection itself.

        Raises:
            EnvelopeError: Not a WebSocket scope, or a bad hello (closed with 1002).
            ConnectionClosedError: The client left before its hello.
        """
        if scope.get("type") != "websocket":
            raise EnvelopeError(f"serve_asgi needs a websocket scope, got {scope.get('type')!r}")
        link = AsgiLink(receive, send)
        await link.accept(subprotocol)
        async with self._attach(link) as session:
            yield session

    async def _first_hello(self, link: ServerLink) -> Hello:
        try:
            with anyio.fail_after(self.options.hello_timeout):
                raw = await link.recv()
            frame = decode(raw)
            if not isinstance(frame, Hello):
                raise EnvelopeError("the first frame must be a hello")
        except TimeoutError:
            self.refused += 1
            await link.close(1002, "no hello")
            raise EnvelopeError(f"no hello within {self.options.hello_timeout:g} s") from None
        except Closed:
            self.refused += 1
            raise ConnectionClosedError("the client left before its hello") from None
        except EnvelopeError as exc:
            self.refused += 1
            await link.close(1002, "bad hello")
            raise EnvelopeError(f"refused a connection: {exc}") from None
        return frame

    def _session_for(self, hello: Hello) -> HubSession | None:
        now = self._clock()
        sessions = self._sessions
        state = sessions.get(hello.session)
        if state is not None:
            sessions.move_to_end(hello.session)
            return state
        for name in list(sessions):  # oldest activity first
            old = sessions[name]
            if len(sessions) < self.max_sessions and now - old.last_seen <= self.idle_ttl:
                break
            if old.current is None and not old.lock.locked():
                self._evict(name, old)
        if len(sessions) >= self.max_sessions:
            return None
        o = self.options
        endpoint = Endpoint(
            StreamState(hello.session, new_epoch(), OutboundWindow(o.window, o.window_bytes)),
            overflow=o.overflow,
            send_timeout=o.send_timeout,
            message_ttl=o.message_ttl,
            max_queue=o.max_queue,
            ack_every=o.ack_every,
            ack_delay=o.ack_delay,
            dead_letter_capacity=o.dead_letter_capacity,
            clock=self._clock,
        )
        if self._resume is not None:
            self._preset(endpoint, hello.session)
        if self._on_gap is not None:
            endpoint.add_gap_hook(self._on_gap)
        if self._on_dead_letter is not None:
            endpoint.add_dead_letter_hook(self._on_dead_letter)
        state = HubSession(endpoint, now)
        sessions[hello.session] = state
        return state

    def _preset(self, endpoint: Endpoint, session: str) -> None:
        assert self._resume is not None
        try:
            position = self._resume(session)
            if position is None:
                return
            epoch, seq = position
            check_epoch(epoch)
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
                raise ValueError(f"seq must be an int from 0 to 2**63-1, got {seq!r}")
        except Exception as exc:
            _log.warning("resilient_conn.delivery.resume_failed", session=session, error=repr(exc))
            return
        endpoint.state.inbound.preset(epoch, seq)

    def _evict(self, name: str, state: HubSession) -> None:
        del self._sessions[name]
        self.evicted += 1
        ep = state.endpoint
        ep.dead_letter(ep.state.window.drain(), DeadLetterReason.CLOSED, "session evicted")
        ep.end(ConnectionClosedError(f"session {name!r} was evicted from the hub"))
        _log.info("resilient_conn.delivery.session_evicted", session=name)

    @asynccontextmanager
    async def _attach(self, link: ServerLink) -> AsyncIterator[ServerSession]:
        hello = await self._first_hello(link)
        state = self._session_for(hello)
        if state is None:
            self.refused += 1
            await link.close(1013, "too many sessions")
            raise EnvelopeError(f"refused session {hello.session!r}: the hub is full")
        old = state.current
        if old is not None:  # the client came back before we noticed it had gone
            old.fail("session taken over by a new connection")
        ep = state.endpoint
        try:
            with anyio.fail_after(self.options.hello_timeout):
                await state.lock.acquire()
        except TimeoutError:
            await link.close(1013, "session busy")
            raise EnvelopeError(f"session {hello.session!r} is still busy") from None
        try:
            att = Attachment(link)
            state.current = link
            state.last_seen = self._clock()
            with anyio.CancelScope() as scope:
                link.scope = scope
                if link.failure is None:
                    async with self._attached(state, att, hello, link) as view:
                        yield view
            if link.failure is not None:
                await link.close(1002 if "taken over" not in link.failure else 1000,
                                 link.failure[:120])  # fmt: skip
        finally:
            ep.detach(att)
            if state.current is link:
                state.current = None
            state.last_seen = self._clock()
            state.lock.release()

    @asynccontextmanager
    async def _attached(
        self, state: HubSession, att: Attachment, hello: Hello, link: ServerLink
    ) -> AsyncIterator[ServerSession]:
        ep = state.endpoint
        ep.begin(att)
        async with ep.write_lock:
            if not ep.apply_hello(hello, att):
                raise EnvelopeError(f"refused a connection: {link.failure}")
            ep.expire()
            frame, ours = ep.hello_frame()
            try:
                await link.send(frame)
            except LinkDown:
                raise ConnectionClosedError("the client left during the hello") from None
            await ep.resume(att, ours)
            ep.mark_ready(att)
        async with anyio.create_task_group() as tg:
            ep.start(tg)
            tg.start_soon(self._read, ep, att, link)
            clean = False
            try:
                yield ServerSession(state, att)
                clean = True
            finally:
                if clean:
                    ep.done_with_taken()
                else:  # the handler failed (or was cancelled) holding a message
                    ep.give_back_taken()
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    await ep.flush_ack()
                tg.cancel_scope.cancel()
                ep.stop()

    async def _read(self, ep: Endpoint, att: Attachment, link: ServerLink) -> None:
        recv = link.recv
        closed: tuple[type[BaseException], ...] = (Closed,)
        if isinstance(link, WebsocketsLink):  # the hot path: no wrapper per frame
            recv, closed = link.ws.recv, (Closed, ConnectionClosed)
        nowait: Callable[[], str | bytes | None] = _no_message
        if isinstance(link, WebsocketsLink) and type(link.ws).recv is ServerConnection.recv:
            nowait = partial(recv_nowait, link.ws)  # a queued message without a coroutine
        fast, dispatch = ep.dispatch_fast, ep.dispatch
        try:
            while not att.down:
                raw = nowait()
                if raw is None:
                    raw = await recv()
                if not fast(raw, att):
                    await dispatch(raw, att)
        except closed:
            pass
        ep.detach(att)
        ep.data_ready.notify()


def _no_message() -> None:
    """No queued message to take without a coroutine (an ASGI link, an overridden recv)."""
    return None
