"""A connection's health: statuses, reports, and the one snapshot -> status mapping.

:func:`evaluate` is the single place where a connection's snapshot
(:class:`~resilient_conn.connection.metrics.ConnectionSnapshot`) becomes a
:class:`HealthStatus`; ``ResilientConnection.health()`` and ``check()`` call it. The health
layer above (:mod:`resilient_conn.health`) builds the same :class:`HealthReport` for bare
breakers and policies, and aggregates many of them.

Reports never contain secrets: ``last_error`` and ``detail`` are redacted when a report is
built, whoever builds it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._core.errors import ConfigError
from .._core.log import redact_text
from ..resilience.breaker import BreakerState
from ..resilience.config import check_positive, resolve
from .events import ConnectionState
from .metrics import ConnectionSnapshot

__all__ = ["HealthReport", "HealthStatus", "evaluate"]


class HealthStatus(enum.Enum):
    """How well a component is doing. Ordered: ``HEALTHY < DEGRADED < UNHEALTHY`` (worst wins)."""

    HEALTHY = "healthy"
    """Working as intended."""
    DEGRADED = "degraded"
    """Working, or expected to recover on its own; worth a look (still counts as ready)."""
    UNHEALTHY = "unhealthy"
    """Not working: closed, failed, circuit open, or disconnected too long."""

    @property
    def severity(self) -> int:
        """0 for HEALTHY, 1 for DEGRADED, 2 for UNHEALTHY."""
        return _SEVERITY[self]

    @classmethod
    def worst(cls, statuses: Iterable[HealthStatus]) -> HealthStatus:
        """Return the worst of ``statuses`` (HEALTHY when there are none)."""
        return max(statuses, key=_SEVERITY.__getitem__, default=cls.HEALTHY)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.severity < other.severity

    def __le__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.severity <= other.severity

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.severity > other.severity

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, HealthStatus):
            return NotImplemented
        return self.severity >= other.severity


_SEVERITY = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}
_EMPTY: Mapping[str, HealthReport] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The health of one component (or, with ``components``, of many), at one instant.

    Attributes:
        status: The verdict.
        name: The component's name (its key in a registry).
        detail: Why this status, worst reason first (redacted).
        checked_at: Wall-clock time of the evaluation (``time.time()``).
        kind: ``"connection"``, ``"breaker"``, ``"policy"``, ``"component"`` or ``"aggregate"``.
        critical: False when a registry was told this component may fail without making the
            whole service unhealthy (its UNHEALTHY counts as DEGRADED in the aggregate).
        state: The connection state, or None for breakers, policies and aggregates.
        breaker_state: The ``BreakerState`` member of the (connection's) breaker, or None.
        retry_after: Seconds until the breaker admits a probe (``inf`` when forced open).
        connected_since: Wall-clock time the current connection opened, or None.
        uptime: Seconds the current connection has been up, or None.
        last_error: The last error, redacted, or None.
        reconnects: Reconnects so far.
        consecutive_failures: Failures since the last success / stable connection.
        rtt: The round trip in seconds (measured by ``check()`` or the last keepalive), or None.
        buffered: Messages waiting in the outbound buffer.
        dead_letters: Messages dead-lettered so far.
        components: For an aggregate, each component's report by name (read-only).
    """

    status: HealthStatus
    name: str
    detail: str
    checked_at: float
    kind: str = "connection"
    critical: bool = True
    state: ConnectionState | None = None
    breaker_state: BreakerState | None = None
    retry_after: float | None = None
    connected_since: float | None = None
    uptime: float | None = None
    last_error: str | None = None
    reconnects: int = 0
    consecutive_failures: int = 0
    rtt: float | None = None
    buffered: int = 0
    dead_letters: int = 0
    components: Mapping[str, HealthReport] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        # Defence in depth: whoever built the report, secrets never leave through it.
        object.__setattr__(self, "detail", redact_text(self.detail))
        if self.last_error is not None:
            object.__setattr__(self, "last_error", redact_text(self.last_error))
        if self.components is not _EMPTY:
            object.__setattr__(self, "components", MappingProxyType(dict(self.components)))

    @property
    def ok(self) -> bool:
        """True unless the status is UNHEALTHY."""
        return self.status is not HealthStatus.UNHEALTHY

    def is_ready(self, *, ready_on_degraded: bool = True) -> bool:
        """Whether an orchestrator should send traffic: not UNHEALTHY (or only HEALTHY)."""
        if self.status is HealthStatus.DEGRADED:
            return ready_on_degraded
        return self.status is HealthStatus.HEALTHY

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict: enums as strings, non-finite numbers as None, no secrets.

        ``json.dumps(report.to_dict(), allow_nan=False)`` always works.
        """
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status.value,
            "detail": self.detail,
            "critical": self.critical,
            "checked_at": _finite(self.checked_at),
            "state": _enum_text(self.state),
            "breaker_state": _enum_text(self.breaker_state),
            "retry_after": _finite(self.retry_after),
            "connected_since": _finite(self.connected_since),
            "uptime": _finite(self.uptime),
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            "consecutive_failures": self.consecutive_failures,
            "rtt": _finite(self.rtt),
            "buffered": self.buffered,
            "dead_letters": self.dead_letters,
            "components": {k: v.to_dict() for k, v in self.components.items()},
        }


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _enum_text(member: enum.Enum | None) -> str | None:
    if member is None:
        return None
    return member.value if isinstance(member.value, str) else member.name.lower()


_B = BreakerState


def _secs(value: float) -> str:
    return "forever" if math.isinf(value) else f"{value:.1f} s"


_S = ConnectionState
_H = HealthStatus


def evaluate(
    snapshot: ConnectionSnapshot,
    *,
    checked_at: float,
    unhealthy_after: float | None = None,
    rtt_limit: float | None = None,
    buffer_high_water: int | None = None,
    rtt: float | None = None,
) -> HealthReport:
    """Map a connection snapshot to a health report (pure: no I/O, no clock reads).

    The mapping (every rule that matches adds a reason; the worst status wins and its reasons
    come first in ``detail``):

    ========================================================  ==========
    condition                                                 status
    ========================================================  ==========
    state FAILED, CLOSED or CLOSING                           UNHEALTHY
    state CIRCUIT_OPEN, or breaker OPEN / FORCED_OPEN         UNHEALTHY
    state CONNECTING / BACKOFF, disconnected_for >=
    ``unhealthy_after``                                       UNHEALTHY
    state CONNECTING / BACKOFF, disconnected shorter (or
    unknown)                                                  DEGRADED
    state IDLE (not started yet)                              DEGRADED
    breaker HALF_OPEN (probing)                               DEGRADED
    CONNECTED and rtt > ``rtt_limit``                         DEGRADED
    buffered >= ``buffer_high_water`` (any state)             DEGRADED
    none of the above (CONNECTED, breaker CLOSED or
    DISABLED, rtt and buffer within limits)                   HEALTHY
    ========================================================  ==========

    Args:
        snapshot: ``conn.snapshot()``.
        checked_at: Wall-clock time to stamp on the report (``time.time()``).
        unhealthy_after: Seconds disconnected before CONNECTING/BACKOFF counts as UNHEALTHY;
            None resolves the ``unhealthy_after`` setting (30 s by default, environment
            variable ``RESILIENT_CONN_UNHEALTHY_AFTER``).
        rtt_limit: Round trip above which a connection is DEGRADED; None disables the rule.
        buffer_high_water: Buffered message count from which the connection is DEGRADED;
            None disables the rule.
        rtt: A round trip just measured by ``check()``; None uses ``snapshot.rtt``.

    Returns:
        The report, with ``detail`` saying why.

    Raises:
        ConfigError: A limit is not a valid number.
    """
    limit = resolve("unhealthy_after", unhealthy_after, param="unhealthy_after")
    if rtt_limit is not None:
        check_positive(rtt_limit, "rtt_limit")
    if buffer_high_water is not None and (
        isinstance(buffer_high_water, bool)
        or not isinstance(buffer_high_water, int)
        or buffer_high_water < 1
    ):
        raise ConfigError(f"buffer_high_water must be an int >= 1, got {buffer_high_water!r}")
    state = snapshot.state
    breaker = snapshot.breaker_state
    measured = rtt if rtt is not None else snapshot.rtt
    gone = snapshot.disconnected_for
    findings: list[tuple[HealthStatus, str]] = []

    if state is _S.FAILED:
        findings.append((_H.UNHEALTHY, f"failed: {snapshot.last_error or 'fatal error'}"))
    elif state is _S.CLOSED:
        findings.append((_H.UNHEALTHY, "closed"))
    elif state is _S.CLOSING:
        findings.append((_H.UNHEALTHY, "closing"))
    if state is _S.CIRCUIT_OPEN or breaker in (_B.OPEN, _B.FORCED_OPEN):
        how = "forced open" if breaker is _B.FORCED_OPEN else "open"
        findings.append(
            (_H.UNHEALTHY, f"circuit {how}; next probe in {_secs(snapshot.retry_after)}")
        )
    if state in (_S.CONNECTING, _S.BACKOFF):
        verb = "connecting" if state is _S.CONNECTING else "waiting to reconnect (backoff)"
        if gone is not None and gone >= limit:
            findings.append(
                (_H.UNHEALTHY, f"disconnected for {gone:.1f} s (unhealthy_after {limit:g} s)")
            )
        else:
            since = f", disconnected for {gone:.1f} s" if gone is not None else ""
            findings.append((_H.DEGRADED, f"{verb}{since}"))
    if state is _S.IDLE:
        findings.append((_H.DEGRADED, "not started"))
    if breaker is _B.HALF_OPEN:
        findings.append((_H.DEGRADED, "circuit half-open (probing)"))
    connected = state is _S.CONNECTED
    if connected and rtt_limit is not None and measured is not None and measured > rtt_limit:
        findings.append((_H.DEGRADED, f"rtt {measured:.3f} s > rtt_limit {rtt_limit:g} s"))
    if buffer_high_water is not None and snapshot.buffered >= buffer_high_water:
        findings.append(
            (_H.DEGRADED, f"{snapshot.buffered} messages buffered (high water {buffer_high_water})")
        )
    if state is _S.CONNECTED and not findings:
        up = f" for {snapshot.uptime:.1f} s" if snapshot.uptime is not None else ""
        findings.append((_H.HEALTHY, f"connected{up}"))
    if not findings:  # an unknown state object: say so rather than guess
        findings.append((_H.UNHEALTHY, f"unknown state {state!r}"))

    findings.sort(key=lambda f: -f[0].severity)
    stats = snapshot.stats
    reconnects = stats.get("reconnects", 0)
    return HealthReport(
        status=findings[0][0],
        name=snapshot.name,
        detail="; ".join(reason for _, reason in findings),
        checked_at=checked_at,
        kind="connection",
        state=state if isinstance(state, ConnectionState) else None,
        breaker_state=breaker if isinstance(breaker, BreakerState) else None,
        retry_after=snapshot.retry_after,
        connected_since=snapshot.connected_since,
        uptime=snapshot.uptime,
        last_error=snapshot.last_error,
        reconnects=reconnects if isinstance(reconnects, int) else 0,
        consecutive_failures=snapshot.consecutive_failures,
        rtt=measured,
        buffered=snapshot.buffered,
        dead_letters=snapshot.dead_letters,
    )


