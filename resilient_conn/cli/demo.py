"""``resilient-conn demo``: a live connection through injected faults, with honest accounting.

An embedded WebSocket server (:class:`~resilient_conn.testing.ScriptedServer`) sits behind a
:class:`~resilient_conn.testing.ChaosProxy` on 127.0.0.1. A :class:`ResilientConnection`
dials through the proxy and streams sequence-numbered messages at a steady rate while faults
are injected on a schedule scaled to the duration:

1. server restart (close 1012),
2. blackhole: the network goes silent (no FIN, no RST); keepalive pings notice,
3. HTTP 503 with ``Retry-After`` on the reconnect,
4. flapping: the server accepts each handshake and drops it at once, until the breaker opens,
5. full outage, long enough to open the breaker; then recovery.

Every state change, breaker transition and dead letter is printed as it happens, then a
SUMMARY. ``lost = sent - delivered - dead_lettered`` is computed from what the server
application really received, and the run passes only when it is 0 (and no copy or reordered
message reached that application). The messages go through the library's
acknowledged stream (:class:`~resilient_conn.delivery.AckedStream` on the client,
:class:`~resilient_conn.delivery.DeliveryHub` on the server), which closes the gap WebSocket
leaves: acks, re-send after every reconnect, de-duplication (see
:mod:`resilient_conn.cli._demo_app`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TextIO

import anyio

from .._core.errors import ConfigError, ConnectionClosedError, ConnectionFailedError
from .._core.notify import Notifier
from ..connection.connection import ResilientConnection
from ..connection.events import ConnectionState, StateChange
from ..delivery import GapNotice
from ..health.asgi import ASGIApp, health_app, serve_health
from ..health.dashboard import DashboardApp, DashboardConfig
from ..health.registry import HealthRegistry
from ..resilience.backoff import Backoff
from ..resilience.breaker import BreakerState, BreakerTransition, CircuitBreaker
from ..resilience.config import check_int
from ..testing import ChaosProxy, ScriptedServer
from ._demo_app import DemoClient, DemoServerState
from ._demo_dashboard import VIEWER_WAIT, mount_dashboard, wait_for_viewer
from ._demo_report import STATE_COLORS, DemoSummary, Reporter

__all__ = ["MAX_DURATION", "MIN_DURATION", "DemoOptions", "DemoSummary", "run_demo"]

MIN_DURATION = 5.0
"""Shortest ``--duration`` the fault schedule fits in (seconds)."""
MAX_DURATION = 3600.0
"""Longest ``--duration`` (the accounting keeps every sequence number: memory stays small)."""
DASHBOARD_INTERVAL = 0.25
"""Seconds between dashboard samples with ``--dashboard``."""
MESSAGE_RATE = 20.0
"""Messages the demo client sends per second."""
PING_INTERVAL = 0.5
PING_TIMEOUT = 0.5
FAILURE_THRESHOLD = 3
FAULT_AT = (0.08, 0.22, 0.38, 0.54, 0.70)
"""When each fault starts, as a fraction of the duration (later if the previous one is still
recovering)."""

_S = ConnectionState


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Settings of one demo run.

    Attributes:
        duration: Seconds the fault schedule is scaled to (:data:`MIN_DURATION` to
            :data:`MAX_DURATION`).
        seed: Seed of every random choice (backoff jitter, proxy); None picks one.
        realtime: Also run the Realtime part, when the Realtime client is available.
        quiet: Print no event lines, only the summary.
        json: Print the summary as JSON (event lines then go to stderr).
        dashboard: Print the live dashboard's URL (even with ``quiet``) and refresh it faster.
        dashboard_port: Port of the health/dashboard server (0 picks a free one).
        transport: The connection's transport adapter (``"websockets"`` or ``"picows"``).
    """

    duration: float = 60.0
    seed: int | None = None
    realtime: bool = False
    quiet: bool = False
    json: bool = False
    dashboard: bool = False
    dashboard_port: int = 0
    transport: str = "websockets"

    def __post_init__(self) -> None:
        check_int(self.dashboard_port, "dashboard_port", 0, 65535)
        if not isinstance(self.duration, int | float) or not self.duration >= MIN_DURATION:
            raise ConfigError(
                f"duration must be a number >= {MIN_DURATION:g}, got {self.duration!r}"
            )
        if self.duration > MAX_DURATION:
            raise ConfigError(
                f"duration must be at most {MAX_DURATION:g} seconds, got {self.duration!r}"
            )

    @property
    def recovery_timeout(self) -> float:
        """Seconds the breaker stays open before a probe."""
        return _clamp(self.duration / 20, 1.0, 5.0)

    @property
    def retry_after(self) -> int:
        """The 503's ``Retry-After`` in seconds."""
        return int(_clamp(round(self.duration / 30), 1, 3))


class _Watch:
    """Lets the schedule wait (event-driven) on the connection's and breaker's states."""

    def __init__(self) -> None:
        self.changed = Notifier()
        self.breaker_opens = 0

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        try:
            await self.changed.wait_until(predicate, timeout)
        except TimeoutError:
            return False
        return True


class _Demo:
    def __init__(
        self, options: DemoOptions, reporter: Reporter, seed: int, out: TextIO | None = None
    ) -> None:
        self.o = options
        self.out = out
        self.r = reporter
        self.seed = seed
        self.watch = _Watch()
        self.app = DemoServerState(on_gap=self._on_gap)
        self.client = DemoClient(on_give_up=self._on_give_up, on_gap=self._on_gap)
        self.summary = DemoSummary(seed=seed, duration=float(options.duration))
        self.breaker = CircuitBreaker(
            failure_threshold=FAILURE_THRESHOLD,
            recovery_timeout=options.recovery_timeout,
            success_threshold=2,
            name="demo",
        )
        self.breaker.add_listener(self._on_breaker)
        self.conn: ResilientConnection | None = None
        self.dashboard: DashboardApp | None = None
        self._stop_sending = False

    # --- hooks --------------------------------------------------------------------------
    def _on_state(self, change: StateChange) -> None:
        assert self.conn is not None
        health = self.conn.health()
        text = f"{change.old.value} -> {change.new.value} ({change.reason})"
        status = health.status.value
        self.r.line("state", f"{text}  health={status}", STATE_COLORS.get(change.new.value))
        self.watch.changed.notify()

    def _on_breaker(self, t: BreakerTransition) -> None:
        if t.new is BreakerState.OPEN:
            self.watch.breaker_opens += 1
        color = "red" if t.new is BreakerState.OPEN else "blue"
        self.r.line("breaker", f"{t.old.value} -> {t.new.value} ({t.reason})", color)
        self.watch.changed.notify()

    def _on_give_up(self, seq: int, reason: str) -> None:
        self.r.line("dead", f"the stream gave up on message #{seq} ({reason})", "red")

    def _on_gap(self, notice: GapNotice) -> None:
        self.summary.gap_notices += 1
        self.r.line("gap", f"{notice.kind.value} ({notice.direction}): {notice.detail}", "red")

    # --- tasks --------------------------------------------------------------------------
    async def _produce(self) -> None:
        # Stops cooperatively (never cancelled mid-send): every message it counts as sent was
        # really handed to the stream.
        seq = 0
        interval = 1.0 / MESSAGE_RATE
        next_at = time.monotonic()
        while not self._stop_sending:
            seq += 1
            await self.client.send(seq)
            next_at += interval
            await anyio.sleep(max(0.0, next_at - time.monotonic()))

    async def _ticker(self, conn: ResilientConnection) -> None:
        every = _clamp(self.o.duration / 10, 1.0, 10.0)
        while True:
            await anyio.sleep(every)
            h = conn.health()
            c = self.client
            self.r.line(
                "health",
                f"{h.status.value}: {h.detail} | sent {len(c.sent)} "
                f"delivered {len(self.app.delivered)} unacked {c.unacked} re-sent {c.resent}",
                "magenta",
            )

    # --- faults -------------------------------------------------------------------------
    def _connected(self) -> bool:
        return self.conn is not None and self.conn.state is _S.CONNECTED

    async def _recovered(self, timeout: float) -> None:
        if not await self.watch.until(self._connected, timeout):
            self.r.line("demo", f"still not reconnected after {timeout:g} s; going on", "red")

    def _fault(self, name: str, text: str) -> None:
        self.summary.faults.append(name)
        n = len(self.summary.faults)
        self.r.line(f"FAULT {n}/{len(FAULT_AT)}", text, "bold")

    async def _restart(self, server: ScriptedServer, proxy: ChaosProxy) -> None:
        self._fault("restart", "server restart: every connection closed with 1012")
        await server.restart(code=1012, reason="service restart")
        await self._recovered(10)

    async def _blackhole(self, server: ScriptedServer, proxy: ChaosProxy) -> None:
        self._fault("blackhole", "blackhole: the network drops every byte, no FIN, no RST")
        proxy.blackhole()
        limit = PING_INTERVAL + PING_TIMEOUT + 5
        await self.watch.until(lambda: not self._connected(), limit)
        await anyio.sleep(_clamp(self.o.duration / 40, 0.3, 2.0))
        proxy.heal()
        self.r.line("heal", "network healed", "green")
        await self._recovered(10 + self.o.recovery_timeout)

    async def _unavailable(self, server: ScriptedServer, proxy: ChaosProxy) -> None:
        after = self.o.retry_after
        self._fault(
            "503_retry_after",
            f"server goes away (1001); its next handshake: 503 Retry-After {after}",
        )
        server.reject_next(503, headers={"Retry-After": str(after)}, body="overloaded")
        await server.close_all(1001, "maintenance")
        await self._recovered(10 + after + self.o.recovery_timeout)

    async def _flapping(self, server: ScriptedServer, proxy: ChaosProxy) -> None:
        self._fault("flapping", "flapping: each handshake is accepted, then dropped at once (1011)")
        opens = self.watch.breaker_opens
        self.app.flapping = True
        await server.close_all(1011, "flapping")
        await self.watch.until(lambda: self.watch.breaker_opens > opens, 15)
        await anyio.sleep(0.2)
        self.app.flapping = False
        self.r.line("heal", "server stable again (after the breaker opened)", "green")
        await self._recovered(10 + self.o.recovery_timeout)

    async def _outage(self, server: ScriptedServer, proxy: ChaosProxy) -> None:
        self._fault("outage", "full outage: the server is down, every dial is refused")
        opens = self.watch.breaker_opens
        proxy.refuse()
        await server.stop(1001, "outage")
        await self.watch.until(lambda: self.watch.breaker_opens > opens, 15)
        await anyio.sleep(_clamp(self.o.duration / 15, 0.5, 4.0))
        await server.start()
        proxy.heal()
        self.r.line("heal", "server is back", "green")
        await self._recovered(10 + 2 * self.o.recovery_timeout)

    # --- the run ------------------------------------------------------------------------
    async def run(self) -> DemoSummary:
        o, r = self.o, self.r
        async with AsyncExitStack() as stack:
            server = await stack.enter_async_context(
                ScriptedServer(self.app.handler, ping_interval=None, close_timeout=1.0)
            )
            proxy = await stack.enter_async_context(
                ChaosProxy(
                    "127.0.0.1", server.port, connect_timeout=1.0, rng=random.Random(self.seed)
                )
            )
            self.conn = conn = ResilientConnection(
                proxy.url_for("/"),
                name="demo",
                backoff=Backoff(0.1, 1.0, jitter="full", rng=random.Random(self.seed)),
                breaker=self.breaker,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                open_timeout=1.0,
                close_timeout=1.0,
                stable_after=1.0,
                unhealthy_after=5.0,
                on_open=self.client.stream.on_open,
                transport=self.o.transport,
            )
            conn.on_state_change(self._on_state)
            r.line(
                "demo",
                f"server {server.url} <- chaos proxy {proxy.url_for('/')} <- client "
                f"(seed {self.seed}, {MESSAGE_RATE:g} msg/s, {o.duration:g} s, {o.transport})",
            )
            await self._serve_health(stack, conn)
            await stack.enter_async_context(conn)
            await stack.enter_async_context(self.client.stream.open(conn))
            try:
                await conn.wait_connected(10)
            except TimeoutError:
                self.summary.problems.append("the first connection did not open within 10 s")
                return self._finish(conn)
            await self._wait_for_viewer()
            async with anyio.create_task_group() as tg:
                if not o.quiet:
                    tg.start_soon(self._ticker, conn)
                async with anyio.create_task_group() as producer:
                    producer.start_soon(self._produce)
                    await self._schedule(server, proxy)
                    if o.realtime:
                        await self._realtime()
                    await anyio.sleep(max(0.0, o.duration - r.elapsed()))
                    self._stop_sending = True
                await self._drain()
                self.summary.final_health = conn.health().status.value
                tg.cancel_scope.cancel()
        return self._finish(conn)

    async def _schedule(self, server: ScriptedServer, proxy: ChaosProxy) -> None:
        faults: list[Callable[[ScriptedServer, ChaosProxy], Awaitable[None]]] = [
            self._restart,
            self._blackhole,
            self._unavailable,
            self._flapping,
            self._outage,
        ]
        calm = _clamp(self.o.duration / 30, 1.2, 3.0)  # let each recovery show before the next
        ready_at = 0.0
        for at, fault in zip(FAULT_AT, faults, strict=True):
            await anyio.sleep(
                max(0.0, at * self.o.duration - self.r.elapsed(), ready_at - self.r.elapsed())
            )
            await fault(server, proxy)
            ready_at = self.r.elapsed() + calm
        await anyio.sleep(max(0.0, ready_at - self.r.elapsed()))

    async def _drain(self) -> None:
        stream = self.client.stream
        self.r.line("demo", f"stopped sending; waiting for {stream.unacked} acks", "dim")
        try:
            await stream.wait_acked(10 + self.o.recovery_timeout)
        except TimeoutError:
            self.r.line("demo", f"{stream.unacked} messages still unacked; closing", "red")
        except (ConnectionClosedError, ConnectionFailedError) as exc:
            self.r.line("demo", f"the stream ended with {stream.unacked} unacked: {exc}", "red")

    async def _serve_health(self, stack: AsyncExitStack, conn: ResilientConnection) -> None:
        registry = HealthRegistry(name="demo")
        registry.register("demo", conn)
        app: ASGIApp = health_app(registry)
        if self.o.dashboard:
            self.dashboard = DashboardApp(registry, DashboardConfig(interval=DASHBOARD_INTERVAL))
            app = mount_dashboard(health_app(registry, dashboard=False), self.dashboard)
        server = await stack.enter_async_context(
            serve_health(registry, port=self.o.dashboard_port, app=app)
        )
        self.summary.health_url = f"{server.url}/healthz"
        self.r.line("health", f"endpoint {server.url}/healthz (also /readyz /livez /metrics)")
        if self.o.dashboard and self.out is not None:
            self.out.write(
                f"dashboard: open {server.url}/dashboard to watch the faults live "
                f"(they start once the page is open, or in {VIEWER_WAIT:g} s)\n"
            )
            self.out.flush()

    async def _wait_for_viewer(self) -> None:
        if self.dashboard is None:
            return
        seen = await wait_for_viewer(self.dashboard, VIEWER_WAIT)
        self.r.started = time.monotonic()  # the fault schedule starts now
        self.r.line("demo", "dashboard open: injecting faults" if seen else "no page yet; going on")

    async def _realtime(self) -> None:
        from ._demo_realtime import run_realtime_part

        result = await run_realtime_part(self.r, self.seed)
        self.summary.realtime = result
        if result.get("available") and not result.get("ok"):
            self.summary.problems.append(f"the Realtime part failed ({result.get('detail', '')})")

    def _finish(self, conn: ResilientConnection) -> DemoSummary:
        s, client, app = self.summary, self.client, self.app
        s.elapsed = self.r.elapsed()
        delivered = app.delivered & client.sent
        dead = client.dead - delivered
        s.sent = len(client.sent)
        s.delivered = len(delivered)
        s.dead_lettered = len(dead)
        s.lost = len(client.sent - delivered - dead)
        s.duplicates_suppressed = app.duplicates_suppressed
        s.duplicates_delivered = app.duplicates_delivered
        s.reordered = app.reordered
        s.resent = client.resent
        s.reconnects = conn.stats.reconnects
        s.dials = conn.stats.dials
        s.breaker_openings = self.watch.breaker_opens
        s.disconnected_seconds = conn.stats.disconnected_seconds
        s.faults_injected = len(s.faults)
        s.failures = dict(conn.stats.failures)
        if s.lost:
            s.problems.append(
                f"{s.lost} message(s) were neither delivered nor dead-lettered "
                f"(e.g. #{min(client.sent - delivered - dead)})"
            )
        if s.duplicates_delivered or s.reordered:
            s.problems.append(
                f"the server application saw {s.duplicates_delivered} duplicate(s) and "
                f"{s.reordered} message(s) out of order"
            )
        return s


async def run_demo(
    options: DemoOptions, out: TextIO | None = None, *, color: bool = False
) -> DemoSummary:
    """Run the demo and return its summary (the caller prints it).

    Args:
        options: Duration, seed and switches.
        out: Where event lines go (None: nowhere).
        color: Color the event lines.
    """
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    reporter = Reporter(None if options.quiet else out, color=color)
    return await _Demo(options, reporter, seed, out).run()
