"""ResilientConnection: one logical WebSocket connection that survives its transports.

A supervisor task owns the connection's life: it dials through websockets, watches the
transport (close, error, silent peer), classifies what went wrong, waits with jittered backoff
gated by a circuit breaker, and dials again. The application keeps one object::

    async with ResilientConnection("wss://feed.example/ws") as conn:
        await conn.send('{"op": "subscribe"}')
        async for message in conn:          # continues across reconnects
            handle(message)

The receive path adds no queue: ``recv()`` awaits the current transport's own ``recv()``
directly, and only when that transport ends does it wait for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.protocol import State

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import (
    BufferFullError,
    CircuitOpenError,
    ConfigError,
    ConnectionClosedError,
    ConnectionFailedError,
    NotConnectedError,
)
from .._core.hooks import HookSet, Unsubscribe
from .._core.log import get_logger, redact_text, redact_url
from .._core.notify import Notifier
from ..adapters.websocket import (
    DialOptions,
    HeadersSource,
    UrlSource,
    check_ws_url,
    dial,
    keepalive,
)
from ..resilience import config
from ..resilience.backoff import Backoff
from ..resilience.breaker import BreakerLease, BreakerState, CircuitBreaker
from ..resilience.classify import Action, Classifier, Verdict, default_classify
from .buffer import DeadLetter, DeadLetterReason
from .events import TRANSITIONS, ConnectionState, IllegalTransition, StateChange
from .metrics import ConnectionSnapshot, ConnectionStats
from .options import ConnectionOptions
from .outbox import Outbox
from .report import HealthReport, HealthStatus, evaluate

__all__ = ["ResilientConnection"]

Message = str | bytes
OnOpen = Callable[["ResilientConnection"], Awaitable[None]]
Probe = Callable[["ResilientConnection"], Awaitable[float]]

_S = ConnectionState

# Set inside the supervisor's own tasks: aclose() from there would wait for itself.
_SUPERVISOR: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "resilient_conn_supervisor", default=None
)

# Sends made from inside on_open (or a task it spawned while that transport is current) go
# straight to the new transport, ahead of what is buffered: (connection id, generation).
_ON_OPEN: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "resilient_conn_on_open", default=None
)


def _describe(error: BaseException) -> str:
    """``"TypeName: message"``, redacted: short enough for logs and health reports."""
    text = str(error)
    name = type(error).__name__
    return redact_text(f"{name}: {text}" if text else name)


class ResilientConnection:
    """A WebSocket connection that reconnects by itself and loses nothing silently.

    Args:
        url: ``ws://`` or ``wss://`` URL, or a callable (sync or async) returning one, evaluated
            before every dial.
        backoff: Delay schedule between dials (default ``Backoff()``: full jitter, 1 s to 60 s).
        breaker: Circuit breaker gating every dial (default ``CircuitBreaker()``: opens after 5
            failures, probes after 60 s, closes after 2 successes).
        open_timeout: Dial + handshake timeout in seconds (default 10).
        ping_interval: Seconds between keepalive pings; 0 turns keepalive off (default 20).
        ping_timeout: Seconds to wait for a pong before the transport is declared dead and
            aborted (default 20). A silent peer is noticed within ``ping_interval +
            ping_timeout``.
        close_timeout: Seconds to wait for the closing handshake (default 10).
        stable_after: Seconds a connection must stay up to count as a success: only then is the
            backoff reset (flap guard) and a breaker success recorded (default 10).
        buffer_size: Outbound buffer capacity in messages (default 1000).
        buffer_bytes: Outbound buffer capacity in bytes (default 1 MiB).
        overflow: ``"block"`` (default), ``"drop_oldest"``, ``"drop_newest"`` or ``"raise"``.
        send_timeout: How long a ``"block"`` send waits for room (default 10 s).
        drain_timeout: How long closing may spend flushing the buffer (default 5 s).
        message_ttl: Buffered messages older than this are dead-lettered ``"expired"`` instead
            of sent (default: no limit).
        max_size: Largest inbound message in bytes (default 1 MiB).
        max_queue: Inbound frames websockets queues before it stops reading (default 16).
        on_dead_letter: Callback (sync or async) receiving each :class:`DeadLetter`.
        dead_letter_capacity: How many recent dead letters :attr:`dead_letters` keeps.
        on_open: Async callback run after every (re)connect, before buffered messages are
            flushed; its sends go first (re-subscribe here).
        headers: Extra handshake headers, or a callable (sync or async) returning them,
            evaluated before every dial (fresh tokens).
        name: Name used in logs, hooks, health and metrics (default: host of the URL).
        classify: Failure classifier (default :func:`~resilient_conn.classify.default_classify`).
        probe: Async callable measuring a round trip for :meth:`check` (default: WebSocket ping).
        clock: Clock for backoff, breaker and timers (default: the system clock).
        hook_timeout: Longest an async hook may run before it is cancelled (seconds).
        unhealthy_after: Disconnected this long makes health UNHEALTHY (default 30 s).
        rtt_limit: A round trip slower than this makes health DEGRADED (default: no limit).
        buffer_high_water: Buffer fill ratio that makes health DEGRADED (default 0.8).
        **connect_kwargs: Passed to ``websockets.asyncio.client.connect`` (e.g. ``ssl``,
            ``subprotocols``, ``compression``).

    Raises:
        ConfigError: A bad argument (a ``ValueError``) naming the parameter.
    """

    def __init__(
        self,
        url: UrlSource,
        *,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        open_timeout: float | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        close_timeout: float | None = None,
        stable_after: float | None = None,
        buffer_size: int | None = None,
        buffer_bytes: int | None = None,
        overflow: str | None = None,
        send_timeout: float | None = None,
        drain_timeout: float | None = None,
        message_ttl: float | None = None,
        max_size: int | None = None,
        max_queue: int | None = None,
        on_dead_letter: Callable[[DeadLetter], Any] | None = None,
        dead_letter_capacity: int = 1000,
        on_open: OnOpen | None = None,
        headers: HeadersSource | None = None,
        name: str | None = None,
        classify: Classifier | None = None,
        probe: Probe | None = None,
        clock: Clock | None = None,
        hook_timeout: float = 5.0,
        unhealthy_after: float | None = None,
        rtt_limit: float | None = None,
        buffer_high_water: float = 0.8,
        **connect_kwargs: Any,
    ) -> None:
        if callable(url):
            self._url_source: UrlSource = url
            display = getattr(url, "__qualname__", "<url callable>")
        else:
            self._url_source = check_ws_url(url)
            display = redact_url(url)
        self.url = display
        """The URL for display (redacted), or the name of the URL callable."""
        default_name = (urlsplit(url).hostname or "connection") if isinstance(url, str) else display
        self.name = name or default_name
        """The connection's name in logs, hooks, health and metrics."""
        self.backoff = backoff if backoff is not None else Backoff()
        self.breaker = breaker if breaker is not None else CircuitBreaker(name=self.name)
        if not isinstance(self.backoff, Backoff):
            raise ConfigError(f"backoff must be a Backoff, got {type(backoff).__name__}")
        if not isinstance(self.breaker, CircuitBreaker):
            raise ConfigError(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
        self.options = options = ConnectionOptions.resolve(
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            stable_after=stable_after,
            send_timeout=send_timeout,
            drain_timeout=drain_timeout,
            unhealthy_after=unhealthy_after,
            buffer_size=buffer_size,
            buffer_bytes=buffer_bytes,
            overflow=overflow,
            max_size=max_size,
            max_queue=max_queue,
            message_ttl=message_ttl,
            rtt_limit=rtt_limit,
            buffer_high_water=buffer_high_water,
            hook_timeout=hook_timeout,
            dead_letter_capacity=dead_letter_capacity,
        )
        """The effective settings (arguments > environment > defaults)."""
        if on_open is not None and not callable(on_open):
            raise ConfigError("on_open must be an async callable")
        if headers is not None and not (callable(headers) or isinstance(headers, Mapping)):
            raise ConfigError("headers must be a mapping or a callable returning one")
        self._on_open = on_open
        self._headers_source = headers
        self._classify: Classifier = classify or default_classify
        self._probe = probe
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._dial_options = DialOptions(
            options.open_timeout,
            options.close_timeout,
            options.max_size,
            options.max_queue,
            connect_kwargs,
        )
        self._log = get_logger(connection=self.name)

        self.stats = ConnectionStats()
        """Live counters (dials, reconnects, failures by kind, messages and bytes each way...)."""
        self._outbox = Outbox(
            name=self.name,
            clock=self._clock,
            stats=self.stats,
            capacity=options.buffer_size,
            capacity_bytes=options.buffer_bytes,
            overflow=options.overflow,
            ttl=options.message_ttl,
            write_timeout=options.close_timeout,
            keep=options.dead_letter_capacity,
            hook_timeout=options.hook_timeout,
            on_change=self._wake,
            log=self._log,
        )
        self.dead_letters = self._outbox.dead_letters
        """The most recent dead letters (bounded by ``dead_letter_capacity``)."""
        if on_dead_letter is not None:
            self._outbox.subscribe(on_dead_letter)
        self._state_hooks: HookSet[StateChange] = HookSet("state_change", options.hook_timeout)

        self._state = _S.IDLE
        self._ws: ClientConnection | None = None
        self._live = False  # transport open, on_open done, buffer flushed: sends go direct
        self.generation = 0
        """Increments each time a new transport opens."""
        self._attempt = 0
        self._consecutive_failures = 0
        self._last_error: BaseException | None = None
        self._fatal: ConnectionFailedError | None = None
        self._abort: tuple[str, BaseException | None] | None = None
        self._rtt: float | None = None
        self._connected_at: float | None = None  # clock reading
        self._connected_wall: float | None = None
        self._disconnected_at: float | None = None
        self._lease: BreakerLease | None = None
        self._stable = False
        self._changed = Notifier()  # notified on every transport/state/buffer change
        self._supervisor: asyncio.Task[None] | None = None
        # aclose() stops the supervisor through this scope (not Task.cancel()), so shielded
        # sections (a buffered message being written) finish before it stops.
        self._scope: anyio.CancelScope | None = None
        self._closing = False
        self._close_done: asyncio.Event | None = None

    # ------------------------------------------------------------------ public surface
    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState`."""
        return self._state

    @property
    def is_connected(self) -> bool:
        """True while a transport is open."""
        return self._ws is not None

    @property
    def buffered(self) -> int:
        """Messages waiting in the outbound buffer."""
        return len(self._outbox.buffer)

    @property
    def last_error(self) -> BaseException | None:
        """The last error a dial or a transport ended with (None if none yet)."""
        return self._last_error

    def __repr__(self) -> str:
        return (
            f"<ResilientConnection {self.name!r} {self.url} state={self._state.name} "
            f"generation={self.generation} buffered={self.buffered}>"
        )

    def on_state_change(self, callback: Callable[[StateChange], Any]) -> Unsubscribe:
        """Call ``callback(change)`` on every transition; returns a handle that unsubscribes.

        The callback may be sync or async. One that raises is logged and ignored; an async one
        that runs longer than ``hook_timeout`` is cancelled. Neither stalls the supervisor.
        """
        return self._state_hooks.add(callback)

    def on_dead_letter(self, callback: Callable[[DeadLetter], Any]) -> Unsubscribe:
        """Call ``callback(dead_letter)`` for every message that cannot be delivered."""
        return self._outbox.subscribe(callback)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the supervisor (``async with`` does this); dialing goes on in the background.

        Returns at once. Must be called from a running event loop.
        """
        if self._supervisor is not None or self._state is not _S.IDLE:
            raise RuntimeError(f"{self!r} was already started")
        self._scope = anyio.CancelScope()
        self._disconnected_at = self._clock.now()  # "down since start" until the first connect
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"resilient_conn.supervisor[{self.name}]"
        )

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a transport is open and the buffer has been flushed.

        Raises:
            TimeoutError: Not connected within ``timeout`` seconds.
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed.
        """
        async with asyncio.timeout(timeout):
            while not (self._live and (ws := self._ws) is not None and ws.state is State.OPEN):
                self._raise_if_over()
                await self._changed.wait()

    async def send(self, message: Message, *, buffer: bool = True) -> None:
        """Send a message; while disconnected, buffer it (bounded) for after the reconnect.

        Args:
            message: Text (``str``) or binary (``bytes``) message.
            buffer: False to raise :class:`NotConnectedError` instead of buffering.

        Raises:
            BufferFullError: The buffer is full and ``overflow`` is ``"raise"``, or ``"block"``
                waited ``send_timeout`` in vain.
            NotConnectedError: ``buffer=False`` and no transport is open.
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed by its user.
        """
        ws = self._ws
        if ws is not None and (self._live or _ON_OPEN.get() == (id(self), self.generation)):
            try:
                await ws.send(message)
            except ConnectionClosed:
                # The transport died under us (the supervisor will notice too): buffer the
                # message for the next one, and stop treating this transport as live.
                if self._ws is ws:
                    self._live = False
            else:
                stats = self.stats
                stats.messages_out += 1
                stats.bytes_out += len(message)
                return
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")
        self._raise_if_over()
        if not buffer:
            raise NotConnectedError(f"{self.name}: no transport is open")
        if not self._outbox.admit(message):
            await self._wait_for_room(message)

    async def recv(self) -> Message:
        """Receive the next message, waiting across reconnects.

        Raises:
            ConnectionClosedError: The connection was closed by its user.
            ConnectionFailedError: The connection failed (``__cause__`` says why).
        """
        while True:
            ws = self._ws
            if ws is not None and not self._closing:
                try:
                    message = await ws.recv()
                except ConnectionClosed:
                    await self._wait_for_transport(ws)
                    continue
                stats = self.stats
                stats.messages_in += 1
                stats.bytes_in += len(message)
                return message
            await self._wait_for_transport(ws)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except ConnectionClosedError:
            raise StopAsyncIteration from None

    def fail_current(self, reason: str, error: BaseException | None = None) -> None:
        """Declare the current transport dead (e.g. a heartbeat went unanswered).

        The transport is aborted at once (no closing handshake: a dead peer never answers
        one), the failure counts against the breaker, and the supervisor reconnects with
        backoff. Does nothing when no transport is open.

        Args:
            reason: Failure kind for logs and metrics (``"heartbeat_timeout"``).
            error: The error behind it, if any.
        """
        ws = self._ws
        if ws is None or self._abort is not None:
            return
        self._abort = (reason, error)
        ws.transport.abort()

    def report_alive(self, rtt: float | None = None) -> None:
        """Record a completed round trip on the current transport (keepalive or heartbeat).

        Stores the RTT; while the breaker is HALF_OPEN it also counts a breaker success, so one
        good probe connection can close the circuit.
        """
        if rtt is not None:
            self._rtt = rtt
        if self._lease is not None and self.breaker.state is BreakerState.HALF_OPEN:
            self.breaker.record_success()

    async def aclose(self) -> None:
        """Close gracefully and end every task this object started.

        Stops dialing, flushes the buffer for up to ``drain_timeout``, closes with 1000 and
        dead-letters what was not sent. Idempotent; concurrent calls wait for the first.
        """
        if self._close_done is not None:
            await self._close_done.wait()
            return
        if _SUPERVISOR.get() == id(self):
            raise RuntimeError(
                "aclose() was awaited from inside the connection's supervisor (on_open, or a "
                "task started from it); close from the task that owns the connection instead"
            )
        self._close_done = done = asyncio.Event()
        try:
            await self._close()
        finally:
            done.set()

    # ------------------------------------------------------------------ health
    def snapshot(self) -> ConnectionSnapshot:
        """Return a frozen snapshot of state, breaker, timings and counters."""
        now = self._clock.now()
        connected = self._ws is not None and self._connected_at is not None
        stats = self.stats
        return ConnectionSnapshot(
            name=self.name,
            url=self.url,
            state=self._state,
            breaker_state=self.breaker.state,
            retry_after=self.breaker.retry_after,
            connected_since=self._connected_wall if connected else None,
            uptime=(now - self._connected_at) if connected and self._connected_at else None,
            disconnected_for=(
                None if connected or self._disconnected_at is None else now - self._disconnected_at
            ),
            last_error=None if self._last_error is None else _describe(self._last_error),
            consecutive_failures=self._consecutive_failures,
            rtt=self._rtt,
            buffered=len(self._outbox.buffer),
            buffered_bytes=self._outbox.buffer.nbytes,
            dead_letters=sum(stats.dead_letters.values()),
            stats={
                "dials": stats.dials,
                "connects": stats.connects,
                "reconnects": stats.reconnects,
                "failures": dict(stats.failures),
                "messages_in": stats.messages_in,
                "messages_out": stats.messages_out,
                "bytes_in": stats.bytes_in,
                "bytes_out": stats.bytes_out,
                "dead_letters": dict(stats.dead_letters),
                "circuit_opens": stats.circuit_opens,
                "disconnected_seconds": stats.disconnected_seconds,
                "generation": self.generation,
                "buffer_capacity": self.options.buffer_size,
            },
        )

    def health(self) -> HealthReport:
        """Return a cheap, synchronous health report (no I/O).

        The status mapping is :func:`resilient_conn.health.evaluate`'s.
        """
        return self._evaluate(None)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Actively check health: when connected, measure a real round trip.

        The round trip is the ``probe`` (e.g. a Phoenix heartbeat) or a WebSocket ping; it does
        not disturb the message stream. Never raises for an unhealthy connection: a round trip
        that fails or takes longer than ``timeout`` makes the report UNHEALTHY and says why.

        Args:
            timeout: Seconds to wait for the round trip (default: the ``check_timeout``
                setting, 5 s).
        """
        limit = config.resolve("check_timeout", timeout, param="timeout")
        if not self._live:
            return self._evaluate(None)
        try:
            rtt = await self.ping(limit)
        except (TimeoutError, NotConnectedError, ConnectionClosed, OSError) as exc:
            report = self._evaluate(None)
            why = "timed out" if isinstance(exc, TimeoutError) else _describe(exc)
            return dataclasses.replace(
                report,
                status=HealthStatus.UNHEALTHY,
                detail=f"round trip failed ({why}, timeout {limit:g} s); {report.detail}",
            )
        return self._evaluate(rtt)

    def _evaluate(self, rtt: float | None) -> HealthReport:
        return evaluate(
            self.snapshot(),
            checked_at=time.time(),
            unhealthy_after=self.options.unhealthy_after,
            rtt_limit=self.options.rtt_limit,
            buffer_high_water=max(
                1, int(self.options.buffer_high_water * self.options.buffer_size)
            ),
            rtt=rtt,
        )

    async def ping(self, timeout: float | None = None) -> float:
        """Measure one round trip on the current transport (the probe, or a WebSocket ping).

        Returns:
            The round trip in seconds.

        Raises:
            NotConnectedError: No transport is open.
            TimeoutError: No answer within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            if self._probe is not None:
                rtt = await self._probe(self)
            else:
                ws = self._ws
                if ws is None:
                    raise NotConnectedError(f"{self.name}: no transport is open")
                try:
                    rtt = await (await ws.ping())
                except ConnectionClosed as exc:
                    raise NotConnectedError(f"{self.name}: transport closed during ping") from exc
        self._rtt = rtt
        return rtt

    # ------------------------------------------------------------------ internals: state
    def _set_state(
        self, new: ConnectionState, reason: str, error: BaseException | None = None
    ) -> None:
        old = self._state
        if new is old:
            return
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{self.name}: {old.name} -> {new.name} ({reason})")
        self._state = new
        change = StateChange(old, new, reason, self._attempt, error, time.time(), self.name)
        self._log.info(
            "resilient_conn.state_changed",
            old=old.value,
            new=new.value,
            reason=reason,
            attempt=self._attempt,
            error=None if error is None else _describe(error),
        )
        self._wake()
        self._state_hooks.emit(change)

    def _wake(self) -> None:
        self._changed.notify()

    def _raise_if_over(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing or self._state is _S.CLOSED:
            raise ConnectionClosedError(f"{self.name} is closed")

    async def _wait_for_transport(self, old: ClientConnection | None) -> None:
        while True:
            self._raise_if_over()
            ws = self._ws
            if ws is not None and ws is not old:
                return
            await self._changed.wait()

    # ------------------------------------------------------------------ internals: buffer
    async def _wait_for_room(self, message: Message) -> None:
        """overflow="block": wait for room in the buffer, or for the transport to go live."""
        try:
            async with asyncio.timeout(self.options.send_timeout):
                while True:
                    await self._changed.wait()
                    self._raise_if_over()
                    if self._live and self._ws is not None:
                        await self.send(message)
                        return
                    if self._outbox.try_append(message):
                        return
        except TimeoutError:
            raise BufferFullError(
                f"{self.name}: outbound buffer still full after {self.options.send_timeout}s"
            ) from None

    # ------------------------------------------------------------------ internals: supervisor
    async def _supervise(self) -> None:
        _SUPERVISOR.set(id(self))  # inherited by on_open, keepalive and flush tasks
        try:
            assert self._scope is not None
            with self._scope:
                await self._dial_loop()
        except Exception as exc:  # a bug in the supervisor must not die silently
            self._log.exception("resilient_conn.supervisor_crashed")
            self._enter_failed(Verdict(Action.FATAL, "internal_error"), exc)

    async def _dial_loop(self) -> None:
        delays: Iterator[float] = self.backoff.delays()
        while True:
            try:
                lease = self.breaker.acquire()
            except CircuitOpenError as exc:
                if self._state is not _S.CIRCUIT_OPEN:
                    self.stats.circuit_opens += 1
                self._set_state(_S.CIRCUIT_OPEN, "circuit open", exc)
                await self.breaker.wait_until_ready()
                continue
            self._set_state(_S.CONNECTING, "dialing" if self.generation == 0 else "reconnecting")
            self.stats.dials += 1
            try:
                ws = await dial(self._url_source, self._headers_source, self._dial_options)
            except Exception as exc:
                verdict = self._classify(exc)
                lease.failure(exc)
                if self._after_failure(verdict, exc):
                    return
                delay = next(delays)
            except BaseException:
                lease.release()
                raise
            else:
                try:
                    verdict, error, stable = await self._run_transport(ws, lease)
                except BaseException:
                    lease.release()
                    raise
                if stable:
                    delays = self.backoff.delays()  # stayed up: start the schedule again
                else:
                    lease.failure(error)
                if self._after_failure(verdict, error, stable=stable):
                    return
                delay = next(delays)
            if verdict.soon:
                delay = self.backoff.delay(0)
            if verdict.action is Action.RETRY_AFTER:
                delay = max(delay, verdict.delay)
            await self._pause(delay, verdict, self._last_error)

    def _after_failure(
        self, verdict: Verdict, error: BaseException | None, *, stable: bool = False
    ) -> bool:
        """Count a failure; enter FAILED and return True if it is fatal."""
        self.stats.count_failure(verdict.kind)
        if error is not None:
            self._last_error = error
        if verdict.fatal:
            self._enter_failed(verdict, error)
            return True
        if not stable:
            self._attempt += 1
            self._consecutive_failures += 1
        self._log.info(
            "resilient_conn.failure",
            kind=verdict.kind,
            action=verdict.action.value,
            attempt=self._attempt,
            error=None if error is None else _describe(error),
        )
        return False

    async def _pause(self, delay: float, verdict: Verdict, error: BaseException | None) -> None:
        if self.breaker.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN):
            self.stats.circuit_opens += 1
            wait = max(self.breaker.retry_after, verdict.delay)
            reason = f"{verdict.kind}; circuit open, next probe in {wait:.3f}s"
            self._set_state(_S.CIRCUIT_OPEN, reason, error)
            if verdict.action is Action.RETRY_AFTER:
                await self._clock.sleep(verdict.delay)  # the server's hint still holds
            return  # the loop waits on the breaker
        self._set_state(_S.BACKOFF, f"{verdict.kind}; next dial in {delay:.3f}s", error)
        await self._clock.sleep(delay)

    async def _run_transport(
        self, ws: ClientConnection, lease: BreakerLease
    ) -> tuple[Verdict, BaseException | None, bool]:
        """Serve one transport until it ends; return how it ended and if it was stable."""
        now = self._clock.now()
        if self._disconnected_at is not None and self.stats.connects:
            self.stats.disconnected_seconds += now - self._disconnected_at
            self.stats.reconnects += 1
        self.stats.connects += 1
        self._connected_at, self._connected_wall = now, time.time()
        self._disconnected_at = None
        self._stable = False
        self._abort = None
        self._lease = lease
        self.generation += 1
        self._ws = ws
        self._set_state(_S.CONNECTED, "handshake complete")
        try:
            async with anyio.create_task_group() as tg:
                if self.options.ping_interval > 0:
                    tg.start_soon(self._keepalive, ws)
                tg.start_soon(self._stable_timer, lease)
                # on_open + flush run beside the watch on the transport: if the transport dies
                # while on_open is stuck, the supervisor still moves on.
                tg.start_soon(self._open_and_flush, ws)
                await ws.wait_closed()
                tg.cancel_scope.cancel()
        finally:
            stable, self._stable = self._stable, False
            self._live = False
            if not self._closing:  # aclose() takes the transport over to drain and close it
                self._ws = None
            self._lease = None
            self._disconnected_at = self._clock.now()
            self._connected_at = self._connected_wall = None
            self._wake()
        abort = self._take_abort()
        if abort is not None:
            kind, error = abort
            return Verdict(Action.RETRY, kind), error or ConnectionError(kind), stable
        exc = ws.protocol.close_exc
        return self._classify(exc), exc, stable

    def _take_abort(self) -> tuple[str, BaseException | None] | None:
        abort, self._abort = self._abort, None
        return abort

    async def _open_and_flush(self, ws: ClientConnection) -> None:
        """Run on_open, flush the buffer, then let sends go straight to the transport."""
        if self._on_open is not None:
            token = _ON_OPEN.set((id(self), self.generation))
            try:
                await self._on_open(self)
            except Exception as exc:
                self._log.warning("resilient_conn.on_open_failed", error=_describe(exc))
                self.fail_current("on_open_failed", exc)
                return
            finally:
                _ON_OPEN.reset(token)
        if await self._outbox.flush(ws):
            self._live = True
            self._wake()

    async def _stable_timer(self, lease: BreakerLease) -> None:
        await self._clock.sleep(self.options.stable_after)
        self._stable = True
        self._attempt = 0
        self._consecutive_failures = 0
        lease.success()
        self._log.debug("resilient_conn.stable", after=self.options.stable_after)

    async def _keepalive(self, ws: ClientConnection) -> None:
        opts = self.options
        await keepalive(
            ws,
            opts.ping_interval,
            opts.ping_timeout,
            on_alive=self.report_alive,
            on_dead=self.fail_current,
        )

    def _enter_failed(self, verdict: Verdict, error: BaseException | None) -> None:
        detail = redact_text(str(error)) if error is not None else verdict.kind
        failure = ConnectionFailedError(
            f"{self.name}: {verdict.kind}: {detail}", status=verdict.status
        )
        failure.__cause__ = error
        self._fatal = failure
        self._last_error = error
        self._set_state(_S.FAILED, verdict.kind, error)
        self._outbox.dead_letter_all(DeadLetterReason.FAILED, failure)

    # ------------------------------------------------------------------ internals: closing
    async def _close_transport(self, ws: ClientConnection) -> None:
        """Close with 1000 while discarding unread inbound frames.

        A consumer that stopped reading leaves frames queued; past ``max_queue`` websockets
        stops reading the socket, so the server's close frame would never be seen and the
        close would wait out ``close_timeout``. Reading (and dropping, counted) what is left
        lets the closing handshake finish at once.
        """
        unread = 0

        async def discard() -> None:
            nonlocal unread
            with contextlib.suppress(ConnectionClosed, ConcurrencyError):
                while True:  # ConcurrencyError: a consumer's recv() is reading anyway
                    await ws.recv()
                    unread += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(discard)
            await ws.close(1000, "client closing")
            tg.cancel_scope.cancel()
        if unread:
            self._log.info("resilient_conn.unread_at_close", messages=unread)

    async def _close(self) -> None:
        if self._state is _S.IDLE and self._supervisor is None:
            self._closing = True
            self._outbox.dead_letter_all(DeadLetterReason.CLOSED, None)
            self._set_state(_S.CLOSED, "closed before start")
            await self._state_hooks.aclose(grace=1.0)
            await self._outbox.hooks.aclose(grace=1.0)
            return
        already_failed = self._state is _S.FAILED
        self._closing = True
        if not already_failed and self._state is not _S.CLOSED:
            self._set_state(_S.CLOSING, "closed by user")
        self._wake()  # receivers and blocked senders see the close now
        task, self._supervisor = self._supervisor, None
        if task is not None and self._scope is not None:
            self._scope.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ws = self._ws
        self._ws = None
        if ws is not None:
            with anyio.move_on_after(self.options.drain_timeout):
                await self._outbox.flush(ws)
            with anyio.CancelScope(shield=True):
                await self._close_transport(ws)
        self._outbox.dead_letter_all(DeadLetterReason.CLOSED, None)
        if not already_failed:
            self._set_state(_S.CLOSED, "closed by user")
        self._wake()
        await self._state_hooks.aclose(grace=1.0)
        await self._outbox.hooks.aclose(grace=1.0)
        self._log.info("resilient_conn.closed", dead_letters=sum(self.stats.dead_letters.values()))
