"""AckedStream: at-least-once delivery with de-duplication over a ResilientConnection.

The client side of an acknowledged stream. Every message gets a sequence number; the peer
acknowledges cumulatively; what is not acknowledged is kept (bounded) and re-sent in order
after every reconnect; what arrives is de-duplicated by sequence number, so the application
sees each message once per session identity. Wire it with the connection's ``on_open`` hook::

    stream = AckedStream(session="sensor-7")
    async with (
        ResilientConnection(url, on_open=stream.on_open) as conn,
        stream.open(conn),
    ):
        await stream.send("reading 1")      # kept until the server acks it
        async for message in stream:        # each message once, in order
            handle(message)

or in one line with :func:`connect_acked`. The server side is
:class:`~resilient_conn.delivery.DeliveryHub`. Add a
:class:`~resilient_conn.delivery.DurableOutbox` and unacknowledged messages survive a crash.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from .._core.errors import (
    ConfigError,
    ConnectionClosedError,
    ConnectionFailedError,
    ResilientConnError,
)
from ..connection.buffer import DeadLetterReason, Overflow
from ..connection.connection import ResilientConnection
from ._conn_link import ConnLink
from ._endpoint import Attachment, Endpoint, LinkDown, Signal, closed_error
from ._epoch import new_epoch
from ._options import (
    DEFAULT_ACK_DELAY,
    DEFAULT_ACK_EVERY,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    StreamOptions,
)
from .durable import DurableOutbox
from .envelope import check_session
from .records import DeliveryDeadLetter, DeliveryStats
from .state import GapNotice, OutboundWindow, StreamState

__all__ = ["AckedStream", "connect_acked"]

OnOpen = Callable[["AckedStream"], Awaitable[None]]


class AckedStream:
    """The client side of an acknowledged stream, over a :class:`ResilientConnection`.

    Args:
        session: Session identity (1-128 characters of ``A-Z a-z 0-9 . _ : @ / + = -``); the
            server keeps the session's state under it across reconnects. None: a random one
            (or the one stored in ``outbox``).
        window: Most unacknowledged messages kept (default 1000).
        window_bytes: Most unacknowledged payload bytes kept (default 1 MiB).
        overflow: When the window is full: ``"block"`` (default; wait up to
            ``send_timeout`` for acks, then raise ``BufferFullError``), ``"drop_oldest"``,
            ``"drop_newest"`` (dead-lettered ``overflow``) or ``"raise"``.
        send_timeout: How long a blocked ``send()`` waits for room (default 10 s).
        message_ttl: Unacknowledged messages older than this are dead-lettered ``expired``
            at the next reconnect (default: no limit).
        max_queue: Received messages queued for the application before reading stops
            (default 1024; the peer's window then fills and its sends wait).
        ack_every: Ack at the latest after this many delivered messages (default 64)...
        ack_delay: ...or this long after the first unacknowledged one (default 0.01 s).
        hello_timeout: How long to wait for the server's hello on a new transport; past it
            the transport is dropped and the connection reconnects (default 10 s).
        drain_timeout: How long closing waits for outstanding acks (default 5 s).
        outbox: A :class:`DurableOutbox`: unacknowledged messages and dead letters are kept
            in SQLite, so a process that restarts re-sends what was not acknowledged.
        on_open: Async callback run after every (re)connect once the stream has resumed
            (re-subscribe here with ``stream.send``).
        on_gap: Callback (sync or async) receiving each :class:`GapNotice`.
        on_dead_letter: Callback (sync or async) receiving each :class:`DeliveryDeadLetter`.
        dead_letter_capacity: How many recent dead letters :attr:`dead_letters` keeps.
        clock: Monotonic clock for enqueue times and ``message_ttl`` (default
            ``time.monotonic``).

    Raises:
        ConfigError: A bad argument (the message names it).
    """

    def __init__(
        self,
        session: str | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        overflow: str | Overflow = "block",
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        message_ttl: float | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        ack_every: int = DEFAULT_ACK_EVERY,
        ack_delay: float = DEFAULT_ACK_DELAY,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        outbox: DurableOutbox | None = None,
        on_open: OnOpen | None = None,
        on_gap: Callable[[GapNotice], Any] | None = None,
        on_dead_letter: Callable[[DeliveryDeadLetter], Any] | None = None,
        dead_letter_capacity: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
            drain_timeout=drain_timeout,
            dead_letter_capacity=dead_letter_capacity,
        )
        """The effective settings."""
        if session is not None:
            try:
                check_session(session)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if outbox is not None and not isinstance(outbox, DurableOutbox):
            raise ConfigError(f"outbox must be a DurableOutbox, got {type(outbox).__name__}")
        if on_open is not None and not callable(on_open):
            raise ConfigError("on_open must be an async callable")
        self._outbox = outbox
        self._user_on_open = on_open
        self._clock = clock
        self._session_arg = session
        first_window = OutboundWindow(self.options.window, self.options.window_bytes)
        self._ep = self._endpoint(session or secrets.token_hex(12), new_epoch(), first_window)
        if on_gap is not None:
            self._ep.add_gap_hook(on_gap)
        if on_dead_letter is not None:
            self._ep.add_dead_letter_hook(on_dead_letter)
        self._conn: ResilientConnection | None = None
        self._link: ConnLink | None = None
        self._running = False
        self._used = False
        self._opened = Signal()

    def _endpoint(self, session: str, epoch: str, window: OutboundWindow) -> Endpoint:
        o = self.options
        return Endpoint(
            StreamState(session, epoch, window),
            overflow=o.overflow,
            send_timeout=o.send_timeout,
            message_ttl=o.message_ttl,
            max_queue=o.max_queue,
            ack_every=o.ack_every,
            ack_delay=o.ack_delay,
            dead_letter_capacity=o.dead_letter_capacity,
            store=self._outbox,
            clock=self._clock,
        )

    # ------------------------------------------------------------------ introspection
    @property
    def session(self) -> str:
        """The session identity (from the outbox once a durable stream is open)."""
        return self._ep.state.session

    @property
    def epoch(self) -> str:
        """This side's stream epoch (kept by a durable outbox across restarts)."""
        return self._ep.state.epoch

    @property
    def unacked(self) -> int:
        """Messages sent but not acknowledged yet."""
        return len(self._ep.state.window)

    @property
    def stats(self) -> DeliveryStats:
        """Live counters (sent, written, re-sent, acked, delivered, duplicates...)."""
        return self._ep.stats

    @property
    def dead_letters(self) -> list[DeliveryDeadLetter]:
        """The most recent dead letters (bounded by ``dead_letter_capacity``)."""
        return list(self._ep.dead_letters)

    @property
    def gaps(self) -> list[GapNotice]:
        """The most recent gap notices (the last 100)."""
        return list(self._ep.gaps)

    @property
    def position(self) -> tuple[str, int] | None:
        """``(server epoch, seq)`` of the message :meth:`recv` returned last (None before)."""
        return self._ep.position

    @property
    def connection(self) -> ResilientConnection | None:
        """The connection the stream runs on while open."""
        return self._conn

    def on_gap(self, callback: Callable[[GapNotice], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` for every gap notice; returns an unsubscribe handle."""
        return self._ep.add_gap_hook(callback)

    def on_dead_letter(self, callback: Callable[[DeliveryDeadLetter], Any]) -> Callable[[], None]:
        """Call ``callback(letter)`` for every dead letter; returns an unsubscribe handle."""
        return self._ep.add_dead_letter_hook(callback)

    def __repr__(self) -> str:
        state = "open" if self._running else "closed" if self._used else "new"
        return (
            f"<AckedStream session={self.session!r} epoch={self.epoch} {state} "
            f"unacked={self.unacked}>"
        )

    # ------------------------------------------------------------------ data
    async def send(self, message: str | bytes) -> int:
        """Send ``message`` at least once, in order; keep it until the peer acknowledges it.

        Returns once the message is in the window (and, with a durable outbox, committed to
        disk); it is written by the stream's pump, now or after the next reconnect.

        Returns:
            Its sequence number (0 if it was dead-lettered at once: ``too_large``, or
            ``overflow`` with ``"drop_newest"``).

        Raises:
            BufferFullError: The window is full (``overflow="raise"``, or a ``"block"`` wait
                of ``send_timeout`` in vain).
            ConnectionClosedError: The stream is closed.
            ConnectionFailedError: The connection failed.
            TypeError: ``message`` is neither str nor bytes.
        """
        if not self._running:
            if self._used:
                raise self._ep.ended or closed_error(self.session)
            raise RuntimeError("send() before open(): use `async with stream.open(conn)`")
        return await self._ep.send(message)

    async def recv(self) -> str | bytes:
        """Receive the next message of the server's stream (each once, in order).

        Raises:
            ConnectionClosedError: The stream was closed.
            ConnectionFailedError: The connection failed.
        """
        return await self._ep.recv()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosedError:
            raise StopAsyncIteration from None

    async def wait_acked(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far is acknowledged.

        Raises:
            TimeoutError: Not all acknowledged within ``timeout`` seconds.
            ConnectionClosedError: The stream closed first.
            ConnectionFailedError: The connection failed first.
        """
        await self._ep.wait_acked(timeout)

    # ------------------------------------------------------------------ the hook
    async def on_open(self, conn: ResilientConnection) -> None:
        """The connection's ``on_open`` hook: exchange hellos, re-send what is unacknowledged.

        Pass it as ``ResilientConnection(url, on_open=stream.on_open)``.
        """
        o = self.options
        try:
            await self._opened.wait_until(lambda: self._running, o.hello_timeout)
        except TimeoutError:
            raise RuntimeError(
                "the AckedStream is not open: use `async with stream.open(conn)`"
            ) from None
        ep = self._ep
        if conn is not self._conn:
            raise RuntimeError("on_open was called for a connection the stream is not open on")
        assert self._link is not None
        att = Attachment(self._link)
        async with ep.write_lock:
            ep.begin(att)
            ep.expire()
            frame, ours = ep.hello_frame()
            try:
                await self._link.send(frame)
            except LinkDown:
                return  # the transport is already gone; the supervisor moves on
            try:
                await ep.hello_seen.wait_until(
                    lambda: att.peer_hello is not None or att.down or ep.ended is not None,
                    o.hello_timeout,
                )
            except TimeoutError:
                conn.fail_current(
                    "hello_timeout",
                    TimeoutError(f"no hello from the server within {o.hello_timeout:g} s"),
                )
                return
            if att.peer_hello is None or att.down:
                return
            await ep.resume(att, ours)
        if self._user_on_open is not None:
            await self._user_on_open(self)
        async with ep.write_lock:  # what on_open sent goes out before the stream is live
            await ep.write_ready(att)
        # No await from here on: the connection goes live as soon as this hook returns, and
        # the pump and the acker must not write before that (the connection would refuse).
        ep.mark_ready(att)

    # ------------------------------------------------------------------ lifetime
    @asynccontextmanager
    async def open(self, conn: ResilientConnection) -> AsyncIterator[AckedStream]:
        """Run the stream on ``conn`` (whose ``on_open`` must be :meth:`on_open`).

        On exit, waits up to ``drain_timeout`` for outstanding acks, then stops. What is
        still unacknowledged is dead-lettered ``closed`` (``failed`` if the connection
        failed), or, with a durable outbox, kept on disk for the next run.
        """
        if self._used:
            raise RuntimeError(f"{self!r} was already opened; use a new AckedStream")
        if not isinstance(conn, ResilientConnection):
            raise TypeError(f"conn must be a ResilientConnection, got {type(conn).__name__}")
        if getattr(conn, "_on_open", False) is None:  # a hook that can never call us
            raise RuntimeError(
                "the connection has no on_open hook: create it with "
                "ResilientConnection(url, on_open=stream.on_open)"
            )
        self._used = True
        if self._outbox is not None:
            restored = await self._outbox.open(self._session_arg, new_epoch())
            window = OutboundWindow(
                self.options.window, self.options.window_bytes, restored.next_seq
            )
            for entry in restored.entries:
                window.restore(entry)
            old = self._ep
            self._ep = self._endpoint(restored.session, restored.epoch, window)
            for hook in old.hooks.gap:
                self._ep.add_gap_hook(hook)
            for dead in old.hooks.dead:
                self._ep.add_dead_letter_hook(dead)
            self._outbox.bind(self._ep.committed, self._ep.store_failed)
        ep = self._ep
        self._conn = conn
        self._link = ConnLink(conn)
        failure: list[BaseException] = []
        try:
            async with anyio.create_task_group() as tg:
                ep.start(tg)
                tg.start_soon(self._read, conn, failure)
                self._running = True
                self._opened.notify()
                clean = False
                try:
                    yield self
                    clean = True
                finally:
                    if clean:
                        ep.done_with_taken()
                    with (
                        anyio.CancelScope(shield=True),
                        anyio.move_on_after(self.options.drain_timeout),
                    ):
                        with contextlib.suppress(ResilientConnError):  # ended: nothing to wait
                            await ep.wait_acked(None)
                        await ep.flush_ack()
                    tg.cancel_scope.cancel()
        finally:
            self._running = False
            ep.stop()
            ep.end(failure[0] if failure else closed_error(self.session))
            if self._outbox is None:
                reason = DeadLetterReason.FAILED if failure else DeadLetterReason.CLOSED
                ep.dead_letter(ep.state.window.drain(), reason)
            else:
                with anyio.CancelScope(shield=True):
                    await self._outbox.aclose()

    async def _read(self, conn: ResilientConnection, failure: list[BaseException]) -> None:
        ep = self._ep
        try:
            while True:
                raw = await conn.recv()
                att = ep.current
                if att is None:
                    ep.stats.invalid_frames += 1  # a frame before any hello of ours
                    continue
                await ep.dispatch(raw, att)
        except ConnectionClosedError:
            ep.end(closed_error(self.session))
        except ConnectionFailedError as exc:
            failure.append(exc)
            ep.end(exc)


@asynccontextmanager
async def connect_acked(
    url: str,
    *,
    session: str | None = None,
    outbox: DurableOutbox | None = None,
    stream_options: dict[str, Any] | None = None,
    **connection_options: Any,
) -> AsyncIterator[AckedStream]:
    """Open a :class:`ResilientConnection` to ``url`` with an :class:`AckedStream` on it.

    Example::

        async with connect_acked("wss://ingest.example/ws", session="sensor-7") as stream:
            await stream.send("reading 1")

    Args:
        url: ``ws://`` or ``wss://`` URL (or a callable returning one).
        session: Session identity (see :class:`AckedStream`).
        outbox: A :class:`DurableOutbox` to keep unacknowledged messages on disk.
        stream_options: Further :class:`AckedStream` arguments (``window``, ``on_gap``...).
        **connection_options: :class:`ResilientConnection` arguments (``name``, ``backoff``,
            ``ping_interval``...). ``on_open`` goes to the stream (it runs after the resume).
    """
    options = dict(stream_options or {})
    if "on_open" in connection_options:
        options["on_open"] = connection_options.pop("on_open")
    stream = AckedStream(session, outbox=outbox, **options)
    async with (
        ResilientConnection(url, on_open=stream.on_open, **connection_options) as conn,
        stream.open(conn),
    ):
        yield stream
