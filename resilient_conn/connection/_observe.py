"""The observing half of a connection: snapshot, health report, active check, round trips.

Mixed into :class:`~resilient_conn.ResilientConnection` above :class:`._supervisor.Supervising`,
whose fields it reads; it changes nothing but the last round-trip time and, while the breaker is
HALF_OPEN, the breaker's success count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from .._core.errors import NotConnectedError
from ..resilience import config
from ..resilience.breaker import BreakerState
from ._supervisor import Supervising, describe
from .metrics import ConnectionSnapshot
from .report import HealthReport, HealthStatus, evaluate

__all__ = ["Observing"]


class Observing(Supervising):
    """Health and round trips of a ``ResilientConnection`` (its fields are set by ``__init__``)."""

    __slots__ = ()  # the fields are ResilientConnection's slots

    url: str
    _probe: Callable[[Any], Awaitable[float]] | None

    def snapshot(self) -> ConnectionSnapshot:
        """Return a frozen snapshot of state, breaker, timings and counters."""
        now = self._clock.now()
        connected = self._ws is not None and self._connected_at is not None
        stats = self.stats
        failures, dead_letters = stats.counts()
        box = self._box
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
            last_error=None if self._last_error is None else describe(self._last_error),
            consecutive_failures=self._decisions.consecutive_failures,
            rtt=self._rtt,
            buffered=0 if box is None else len(box.buffer),
            buffered_bytes=0 if box is None else box.buffer.nbytes,
            dead_letters=sum(dead_letters.values()),
            stats={
                "dials": stats.dials,
                "connects": stats.connects,
                "reconnects": stats.reconnects,
                "failures": failures,
                "messages_in": stats.messages_in,
                "messages_out": stats.messages_out,
                "bytes_in": stats.bytes_in,
                "bytes_out": stats.bytes_out,
                "dead_letters": dead_letters,
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
            why = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
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

    def report_alive(self, rtt: float | None = None) -> None:
        """Record a completed round trip on the current transport (keepalive or heartbeat).

        Stores the RTT; while the breaker is HALF_OPEN it also counts a breaker success, so one
        good probe connection can close the circuit.
        """
        if rtt is not None:
            self._rtt = rtt
        if self._lease is not None and self.breaker.state is BreakerState.HALF_OPEN:
            self.breaker.record_success()
