"""ResilientConnection: one logical WebSocket connection that survives its transports.

A supervisor task owns the connection's life: it dials through an adapter (websockets by
default, picows with ``transport="picows"``), watches the
transport (close, error, silent peer), classifies what went wrong, waits with jittered backoff
gated by a circuit breaker, and dials again. The application keeps one object::

    async with ResilientConnection("wss://feed.example/ws") as conn:
        await conn.send('{"op": "subscribe"}')
        async for message in conn:          # continues across reconnects
            handle(message)

The receive path adds no queue: ``recv()`` takes a message the current transport already
holds, or awaits the transport's own ``recv()`` directly, and only when that transport ends
does it wait for the next one.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import (
    ConfigError,
    ConnectionFailedError,
)
from .._core.hooks import HookSet, Unsubscribe
from .._core.log import connection_logger, redact_url
from .._core.notify import Deadline, Notifier
from ..adapters.base import Transport
from ..adapters.checks import (
    check_callables,
    check_connect_kwargs,
    check_handler,
    check_headers,
)
from ..adapters.websocket import (
    HeadersSource,
    UrlSource,
    check_ws_url,
)
from ..coordination import RecoveryCoordinator
from ..resilience.backoff import Backoff
from ..resilience.breaker import BreakerLease, CircuitBreaker
from ..resilience.classify import Classifier, default_classify
from ..resilience.recovery import connection_backoff, connection_breaker, recovery_cap
from ._closing import Closing, in_supervisor
from ._marks import supervisor_task_name
from ._observe import Observing
from ._receiving import Receiving
from ._sending import Sending
from ._supervisor import Message
from .buffer import DeadLetter
from .decide import Decisions
from .events import ConnectionState, StateChange
from .metrics import ConnectionStats
from .options import ConnectionOptions, dial_options
from .outbox import Outbox

__all__ = ["ResilientConnection", "in_supervisor"]

OnOpen = Callable[["ResilientConnection"], Awaitable[None] | None]
OnMessage = Callable[[Message], object]
Probe = Callable[["ResilientConnection"], Awaitable[float]]

_S = ConnectionState

class ResilientConnection(Observing, Receiving, Sending, Closing):
    """A WebSocket connection that reconnects by itself and loses nothing silently.

    Args:
        url: ``ws://`` or ``wss://`` URL, or a callable (sync or async) returning one, evaluated
            before every dial.
        backoff: Delay schedule between dials (default
            :func:`~resilient_conn.connection_backoff`: ``"banded"`` windows of 0.5 s growing
            x1.5 to 4 s; see docs/recovery.md).
        breaker: Circuit breaker gating every dial (default
            :func:`~resilient_conn.connection_breaker` on ``backoff``: opens after 3 failures,
            one stable probe closes it; while it is open the backoff still paces the probes,
            and the next dial after the server is back comes within
            :func:`~resilient_conn.recovery_cap`, 4 s by default; see docs/recovery.md).
        coordinator: A :class:`~resilient_conn.RecoveryCoordinator` shared with other
            connections to the same upstream: one circuit, one probe and a reconnect ramp for
            all of them (see ``docs/recovery.md``). It gates every dial; unless ``breaker`` is
            also given, the private breaker is disabled and the backoff only paces a first
            short jittered pause. Default ``None``.
        open_timeout: Dial + handshake timeout in seconds (default 10).
        ping_interval: Seconds between keepalive pings; 0 turns keepalive off (default 20).
        ping_timeout: Seconds to wait for a pong before the transport is declared dead and
            aborted (default 20). A silent peer is noticed within ``ping_interval +
            ping_timeout``.
        close_timeout: Seconds to wait for the closing handshake, its write included, before
            the transport is aborted; also the longest one buffered write may take (default
            10).
        stable_after: Seconds a connection must stay up to count as a success: only then is the
            backoff reset (flap guard) and a breaker success recorded (default 10).
        buffer_size: Outbound buffer capacity in messages (default 1000).
        buffer_bytes: Outbound buffer capacity in bytes (default 1 MiB).
        overflow: ``"block"`` (default), ``"drop_oldest"``, ``"drop_newest"`` or ``"raise"``.
        send_timeout: How long a ``"block"`` send waits for room, and how long a send waits
            for a peer that stopped reading before its transport is aborted (default 10 s).
        drain_timeout: How long closing may spend flushing the buffer (default 5 s). The
            state is ``CLOSED`` within ``drain_timeout + close_timeout`` of ``aclose()``.
        message_ttl: Buffered messages older than this are dead-lettered ``"expired"`` instead
            of sent (default: no limit).
        max_size: Largest inbound message in bytes (default 1 MiB).
        max_queue: Inbound frames websockets queues before it stops reading (default 16).
        on_dead_letter: Callback (sync or async) receiving each :class:`DeadLetter`.
        dead_letter_capacity: How many recent dead letters :attr:`dead_letters` keeps.
        on_open: Callback (sync or async) run after every (re)connect, before buffered
            messages are flushed; its sends go first (re-subscribe here).
        on_message: A plain function given each message as it arrives, in order, instead
            of ``recv()`` / ``async for`` (no queue, no await; it must not block; answer with
            :meth:`send_nowait`). What it raises is logged and counted (docs/connection.md).
        headers: Extra handshake headers, or a callable (sync or async) returning them,
            evaluated before every dial (fresh tokens). Names must be HTTP tokens, values
            free of CR/LF/NUL; the handshake's own headers (``Sec-WebSocket-*``, ``Host``)
            are refused. A callable's bad headers make the connection FAILED.
        name: Name used in logs, hooks, health and metrics (default: host of the URL).
        classify: Failure classifier (default :func:`~resilient_conn.classify.default_classify`).
        probe: Async callable measuring a round trip for :meth:`check` (default: WebSocket ping).
        clock: Clock for backoff, breaker and timers (default: the system clock).
        hook_timeout: Longest an async hook may run before it is cancelled (seconds).
        unhealthy_after: Disconnected this long makes health UNHEALTHY (default 30 s).
        rtt_limit: A round trip slower than this makes health DEGRADED (default: no limit).
        buffer_high_water: Buffer fill ratio that makes health DEGRADED (default 0.8).
        transport: ``"websockets"`` (default) or ``"picows"`` (the ``resilient-conn[picows]``
            extra: up to ~4x the messages per second when the client is the bottleneck; no
            compression). See docs/performance.md.
        compression: ``"deflate"`` (permessage-deflate), ``None`` (off) or ``"auto"`` (default:
            websockets' default, deflate, on ``transport="websockets"``; off on picows, which
            cannot compress: ``"deflate"`` there is a ``ConfigError``). Deflate costs CPU per
            message and about 46 KB of zlib state per connection; see docs/performance.md.
        **connect_kwargs: Passed to the transport's connect (``ssl``, ``subprotocols``,
            ``origin``, ``user_agent_header``; on websockets, the other names in
            :data:`~resilient_conn.adapters.checks.CONNECT_KWARGS`). Anything else (a typo,
            ``additional_headers``) is a ConfigError listing the accepted names.

    Raises:
        ConfigError: A bad argument (a ``ValueError``) naming the parameter.
    """

    __slots__ = ()  # the fields are slots of Supervising (connection/_supervisor.py)

    def __init__(
        self,
        url: UrlSource,
        *,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        coordinator: RecoveryCoordinator | None = None,
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
        on_message: OnMessage | None = None,
        headers: HeadersSource | None = None,
        name: str | None = None,
        classify: Classifier | None = None,
        probe: Probe | None = None,
        clock: Clock | None = None,
        hook_timeout: float = 5.0,
        unhealthy_after: float | None = None,
        rtt_limit: float | None = None,
        buffer_high_water: float = 0.8,
        transport: str = "websockets",
        compression: str | None = "auto",
        **connect_kwargs: Any,
    ) -> None:
        if callable(url):
            self._url_source: UrlSource = url
            display = getattr(url, "__qualname__", "<url callable>")
        else:
            self._url_source = check_ws_url(url)
            display = redact_url(url)
            display = url if display == url else display  # one string for many connections
        self.url = display
        """The URL for display (redacted), or the name of the URL callable."""
        host = urlsplit(url).hostname if isinstance(url, str) else display
        default_name = sys.intern(host or "connection")  # connections to one host share it
        self.name = name or default_name
        """The connection's name in logs, hooks, health and metrics."""
        self.backoff = backoff if backoff is not None else connection_backoff()
        if not isinstance(self.backoff, Backoff):
            raise ConfigError(f"backoff must be a Backoff, got {type(backoff).__name__}")
        self.breaker = (
            breaker
            if breaker is not None
            else connection_breaker(self.backoff, name=self.name, clock=clock)
        )
        if not isinstance(self.breaker, CircuitBreaker):
            raise ConfigError(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
        if coordinator is not None and not isinstance(coordinator, RecoveryCoordinator):
            raise ConfigError(
                f"coordinator must be a RecoveryCoordinator, got {type(coordinator).__name__}"
            )
        self.coordinator = coordinator
        """The shared recovery coordinator gating every dial, or ``None``."""
        if coordinator is not None and breaker is None:
            self.breaker.disable()  # the shared circuit replaces the private one
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
        check_callables(
            on_open=on_open, on_dead_letter=on_dead_letter, classify=classify, probe=probe
        )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        if headers is not None and not callable(headers):
            headers = check_headers(headers)  # a callable's headers are checked at each dial
        connect_kwargs = check_connect_kwargs(connect_kwargs)
        self._on_open = on_open
        self._on_message = check_handler(on_message)
        self._headers_source = headers
        self._classify: Classifier = classify or default_classify
        self._probe = probe
        self._clock: Clock = clock or SYSTEM_CLOCK
        connect_kwargs["compression"] = compression
        self.transport = transport
        """The transport adapter's name (``"websockets"`` or ``"picows"``)."""
        self._dial_options = dial_options(options, transport, connect_kwargs)
        self._log = connection_logger(self.name)

        self.stats = ConnectionStats()
        """Live counters (dials, reconnects, failures by kind, messages and bytes each way...)."""
        self._changed = Notifier()  # notified on every transport/state/buffer change
        self._box: Outbox | None = None  # made on first use (most consumers never buffer)
        if on_dead_letter is not None:
            self._outbox.subscribe(on_dead_letter)
        self._state_hooks: HookSet[StateChange] | None = None  # made by the first hook

        self._state = _S.IDLE
        self._ws: Transport | None = None
        self._opened = False  # the transport in _ws reached CONNECTED (the closer drains it)
        self._live = False  # transport open, on_open done, buffer flushed: sends go direct
        self.generation = 0
        """Increments each time a new transport opens."""
        # a banded schedule's windows go on while its own breaker is open (docs/recovery.md)
        paced = breaker is None and coordinator is None and self.backoff.phased
        self._decisions = Decisions(self.backoff, recovery_cap(self.backoff) if paced else None)
        self._last_error: BaseException | None = None
        self._fatal: ConnectionFailedError | None = None
        self._abort: tuple[str, BaseException | None] | None = None
        self._rtt: float | None = None
        self._connected_at: float | None = None  # clock reading
        self._connected_wall: float | None = None
        self._disconnected_at: float | None = None
        self._lease: BreakerLease | None = None
        self._permit = None
        self._stable = False
        self._stable_handle: asyncio.TimerHandle | None = None  # the flap guard's loop timer
        self._supervisor: asyncio.Task[None] | None = None
        self._parked = False  # no task while the transport serves (_parking.py)
        self._alive = None
        # With a coordinator, aclose() stops the supervisor through this scope (made by start()),
        # so the coordinator's shielded sections finish first; without, through Task.cancel(),
        # but never inside the one shielded section of its own (_holding): see _closing.
        self._scope: anyio.CancelScope | None = None
        self._holding = False
        self._opener = self._opener_scope = None  # on_open + flush, or a later flush
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._closed_event: asyncio.Event | None = None

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
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose on the current transport (None if none or down)."""
        ws = self._ws
        return None if ws is None else ws.subprotocol

    @property
    def buffered(self) -> int:
        """Messages waiting in the outbound buffer."""
        box = self._box
        return 0 if box is None else len(box.buffer)

    def _new_outbox(self) -> Outbox:
        options = self.options
        return Outbox(
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
            changed=self._changed,
            log=self._log,
        )

    @property
    def dead_letters(self) -> deque[DeadLetter]:
        """The most recent dead letters, oldest first (bounded by ``dead_letter_capacity``)."""
        return self._outbox.dead_letters

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
        hooks = self._state_hooks
        if hooks is None:
            hooks = self._state_hooks = HookSet("state_change", self.options.hook_timeout)
        return hooks.add(callback)

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
        if self.coordinator is not None:  # nothing per connection otherwise (anyio's scope
            self._scope = anyio.CancelScope()  # and its task state: ~0.8 KB while idle)
        self._disconnected_at = self._clock.now()  # "down since start" until the first connect
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=supervisor_task_name(self.name)
        )

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a transport is open and the buffer has been flushed.

        A timeout of a second or more ends at the next tenth of a second after it (never
        before it): waits started together share one loop timer.

        Raises:
            TimeoutError: Not connected within ``timeout`` seconds.
            ConnectionFailedError: The connection failed.
            ConnectionClosedError: The connection was closed.
        """
        deadline = None
        try:
            while not (self._live and (ws := self._ws) is not None and ws.is_open):
                self._raise_if_over()
                if deadline is None:
                    if timeout is not None:  # one timer for the whole wait
                        deadline = Deadline(self._changed, timeout)
                elif deadline.passed:
                    raise TimeoutError(f"{self.name}: not connected within {timeout} s")
                await self._changed.wait()
        finally:
            if deadline is not None:
                deadline.cancel()

    async def aclose(self) -> None:
        """Close gracefully and end every task this object started.

        Stops dialing, flushes the buffer for up to ``drain_timeout``, closes with 1000 within
        ``close_timeout`` (then aborts the transport) and dead-letters what was not sent: the
        state is ``CLOSED`` within ``drain_timeout + close_timeout``, and async hooks get one
        more second to finish. Idempotent; concurrent calls wait for the first.

        Safe to cancel: the close runs in a task of its own, and a cancelled caller waits for
        it (it is bounded) before its cancellation goes on. Callable from anywhere: from a
        state-change or dead-letter hook it returns once the state is ``CLOSED``; from
        ``on_open`` (or another task inside the supervisor) it starts the close and the caller
        is cancelled with the supervisor, so nothing after the ``await`` runs there.
        """
        await self._aclose()
