"""Health: statuses, reports, the one snapshot -> status mapping, and a registry for orchestrators.

* :func:`evaluate` is the single place where a :class:`~resilient_conn.metrics.ConnectionSnapshot`
  becomes a :class:`HealthStatus`; ``ResilientConnection.health()`` / ``check()`` call it.
* :func:`breaker_report` / :func:`policy_report` do the same for a bare ``CircuitBreaker`` and a
  ``ResiliencePolicy``.
* :class:`HealthRegistry` aggregates many components (worst status wins), checks them
  concurrently under one overall timeout, and serves liveness / readiness / metrics through an
  ASGI app (:mod:`resilient_conn.asgi`).

Reports never contain secrets: ``last_error`` and ``detail`` are redacted when a report is built,
whoever builds it.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._log import get_logger, redact_text
from .breaker import BreakerState
from .config import check_positive, resolve
from .errors import ConfigError
from .events import ConnectionState
from .metrics import ConnectionSnapshot

if TYPE_CHECKING:
    from .asgi import ASGIApp

__all__ = [
    "BreakerLike",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "HealthStatus",
    "PolicyLike",
    "breaker_report",
    "evaluate",
    "policy_report",
]

_log = get_logger()


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


class BreakerLike(Protocol):
    """What :func:`breaker_report` needs of a ``CircuitBreaker``."""

    @property
    def state(self) -> BreakerState:
        """The current ``BreakerState``."""
        ...

    @property
    def retry_after(self) -> float:
        """Seconds until a probe is admitted."""
        ...

    def metrics(self) -> Any:
        """A frozen metrics snapshot (has ``consecutive_failures``)."""
        ...


class PolicyLike(Protocol):
    """What :func:`policy_report` needs of a ``ResiliencePolicy``."""

    @property
    def breaker(self) -> BreakerLike:
        """The policy's breaker."""
        ...

    def metrics(self) -> Any:
        """The policy's metrics snapshot."""
        ...


def breaker_report(
    breaker: BreakerLike,
    *,
    name: str | None = None,
    checked_at: float | None = None,
    kind: str = "breaker",
) -> HealthReport:
    """Report on a bare circuit breaker.

    CLOSED -> HEALTHY; HALF_OPEN -> DEGRADED; OPEN and FORCED_OPEN -> UNHEALTHY;
    DISABLED -> HEALTHY (with a detail saying calls pass unguarded).

    Args:
        breaker: A ``CircuitBreaker`` (anything with ``state``, ``retry_after``, ``metrics()``).
        name: Report name; default the breaker's ``name`` attribute, else ``"breaker"``.
        checked_at: Wall-clock stamp; default ``time.time()``.
        kind: ``"breaker"``, or ``"policy"`` when called by :func:`policy_report`.
    """
    state = breaker.state
    retry_after = float(breaker.retry_after)
    consecutive = getattr(breaker.metrics(), "consecutive_failures", 0)
    if state is _B.CLOSED:
        status, detail = _H.HEALTHY, "circuit closed"
    elif state is _B.HALF_OPEN:
        status, detail = _H.DEGRADED, "circuit half-open (probing)"
    elif state in (_B.OPEN, _B.FORCED_OPEN):
        how = "forced open" if state is _B.FORCED_OPEN else "open"
        status, detail = _H.UNHEALTHY, f"circuit {how}; next probe in {_secs(retry_after)}"
    else:  # DISABLED
        status, detail = _H.HEALTHY, "circuit breaker disabled (calls pass unguarded)"
    return HealthReport(
        status=status,
        name=name or str(getattr(breaker, "name", None) or "breaker"),
        detail=detail,
        checked_at=time.time() if checked_at is None else checked_at,
        kind=kind,
        breaker_state=state,
        retry_after=retry_after,
        consecutive_failures=consecutive if isinstance(consecutive, int) else 0,
    )


def policy_report(
    policy: PolicyLike, *, name: str | None = None, checked_at: float | None = None
) -> HealthReport:
    """Report on a ``ResiliencePolicy``: the health of its breaker (see :func:`breaker_report`)."""
    label = name or str(getattr(policy, "name", None) or "policy")
    return breaker_report(policy.breaker, name=label, checked_at=checked_at, kind="policy")


class HealthCheck(Protocol):
    """A component that reports its own health (``ResilientConnection``, a nested registry)."""

    def health(self) -> HealthReport:
        """A cheap synchronous report."""
        ...

    async def check(self, timeout: float | None = None) -> HealthReport:
        """An active check; never raises for an unhealthy component."""
        ...


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    kind: str
    critical: bool
    source: object
    health: Callable[[], HealthReport]
    check: Callable[[float], Awaitable[HealthReport]]


def _adapt(name: str, component: object, critical: bool) -> _Entry:
    health_fn = getattr(component, "health", None)
    check_fn = getattr(component, "check", None)
    if callable(health_fn) and callable(check_fn):
        kind = "connection" if callable(getattr(component, "snapshot", None)) else "component"
        return _Entry(name, kind, critical, component, health_fn, check_fn)
    if hasattr(component, "breaker") and callable(getattr(component, "metrics", None)):
        policy: PolicyLike = component  # type: ignore[assignment]

        def policy_health() -> HealthReport:
            return policy_report(policy, name=name)

        return _Entry(name, "policy", critical, component, policy_health, _async(policy_health))
    if hasattr(component, "state") and hasattr(component, "retry_after"):
        breaker: BreakerLike = component  # type: ignore[assignment]

        def breaker_health() -> HealthReport:
            return breaker_report(breaker, name=name)

        return _Entry(name, "breaker", critical, component, breaker_health, _async(breaker_health))
    raise TypeError(
        "component must have health() and check() (a connection), or be a CircuitBreaker or a "
        f"ResiliencePolicy; got {type(component).__name__}"
    )


def _async(fn: Callable[[], HealthReport]) -> Callable[[float], Awaitable[HealthReport]]:
    async def check(timeout: float) -> HealthReport:
        return fn()

    return check


class HealthRegistry:
    """Aggregates the health of many connections, breakers and policies (worst status wins).

    Liveness (``/livez``) means the event loop answers; it never depends on upstreams, since
    restarting the process does not fix a dead upstream. Readiness (``/readyz``) means the
    aggregate is not UNHEALTHY; DEGRADED counts as ready unless ``ready_on_degraded=False``.

    Args:
        name: Name of the aggregate report.
        ready_on_degraded: Whether a DEGRADED aggregate counts as ready.
        check_timeout: Default overall timeout of :meth:`check_all`; None resolves the
            ``check_timeout`` setting (5 s, ``RESILIENT_CONN_CHECK_TIMEOUT``).
        wall_clock: Source of ``checked_at`` stamps (default ``time.time``).
    """

    __slots__ = ("_check_timeout", "_entries", "_wall", "name", "ready_on_degraded")

    def __init__(
        self,
        *,
        name: str = "resilient_conn",
        ready_on_degraded: bool = True,
        check_timeout: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.ready_on_degraded = ready_on_degraded
        self._check_timeout = resolve("check_timeout", check_timeout, param="check_timeout")
        self._wall = wall_clock
        self._entries: dict[str, _Entry] = {}

    def __repr__(self) -> str:
        return f"HealthRegistry(name={self.name!r}, components={list(self._entries)!r})"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @property
    def names(self) -> tuple[str, ...]:
        """Registered component names, in registration order."""
        return tuple(self._entries)

    def register(self, name: str, component: object, *, critical: bool = True) -> None:
        """Add a component under ``name``.

        Args:
            name: Unique, non-empty name (used in reports and metric labels).
            component: A connection (anything with ``health()`` and ``async check(timeout)``,
                including another registry), a ``CircuitBreaker`` or a ``ResiliencePolicy``.
            critical: False if this component failing should only make the aggregate DEGRADED.

        Raises:
            ConfigError: ``name`` is empty or already registered.
            TypeError: ``component`` is none of the supported kinds.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        if name in self._entries:
            raise ConfigError(f"name {name!r} is already registered")
        self._entries[name] = _adapt(name, component, critical)

    def unregister(self, name: str) -> None:
        """Remove the component registered as ``name``.

        Raises:
            KeyError: Nothing is registered under ``name``.
        """
        del self._entries[name]

    def is_ready(self, report: HealthReport) -> bool:
        """Readiness of an aggregate report under this registry's ``ready_on_degraded``."""
        return report.is_ready(ready_on_degraded=self.ready_on_degraded)

    def health(self) -> HealthReport:
        """Return the aggregate of every component's cheap ``health()`` (never raises)."""
        return self._aggregate({e.name: self._safe_health(e) for e in self._entries.values()})

    async def check_all(self, timeout: float | None = None) -> HealthReport:
        """Check every component concurrently under ONE overall timeout; never raises.

        A component whose check raises, returns something else than a report, or is still
        running when ``timeout`` expires is reported UNHEALTHY with the reason.

        Args:
            timeout: Overall seconds; None uses the registry's ``check_timeout``.

        Returns:
            The aggregate report with each component's report in ``components``.
        """
        limit = self._check_timeout if timeout is None else check_positive(timeout, "timeout")
        entries = tuple(self._entries.values())
        results: dict[str, HealthReport] = {}
        with anyio.move_on_after(limit):
            async with anyio.create_task_group() as tg:
                for entry in entries:
                    tg.start_soon(self._run_check, entry, limit, results)
        reports = {e.name: results.get(e.name) or self._timed_out(e, limit) for e in entries}
        return self._aggregate(reports)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Same as :meth:`check_all`, so a registry can be registered in another one."""
        return await self.check_all(timeout)

    def metrics(self) -> dict[str, Any]:
        """Return a JSON-safe snapshot of every component's metrics (see ``docs/health.md``)."""
        from .prometheus import component_metrics  # local: prometheus imports this module

        report = self.health()
        return {
            "name": self.name,
            "status": report.status.value,
            "components": {
                e.name: component_metrics(e.kind, e.source, report.components[e.name])
                for e in self._entries.values()
            },
        }

    def asgi_app(self, *, check_timeout: float | None = None) -> ASGIApp:
        """Return the ASGI 3 app serving ``/livez``, ``/readyz``, ``/healthz``, ``/metrics``."""
        from .asgi import health_app

        return health_app(self, check_timeout=check_timeout)

    async def _run_check(
        self, entry: _Entry, limit: float, results: dict[str, HealthReport]
    ) -> None:
        try:
            report = await entry.check(limit)
            if not isinstance(report, HealthReport):
                raise TypeError(f"check() returned {type(report).__name__}, not a HealthReport")
        except Exception as exc:
            _log.warning(
                "resilient_conn.health_check_failed",
                component=entry.name,
                error=redact_text(repr(exc)),
            )
            report = self._failed(entry, f"check raised {type(exc).__name__}: {exc}")
        results[entry.name] = self._label(entry, report)

    def _safe_health(self, entry: _Entry) -> HealthReport:
        try:
            report = entry.health()
            if not isinstance(report, HealthReport):
                raise TypeError(f"health() returned {type(report).__name__}, not a HealthReport")
        except Exception as exc:
            return self._failed(entry, f"health() raised {type(exc).__name__}: {exc}")
        return self._label(entry, report)

    def _timed_out(self, entry: _Entry, limit: float) -> HealthReport:
        _log.warning("resilient_conn.health_check_timeout", component=entry.name, timeout=limit)
        last = self._safe_health(entry)
        return replace(
            last,
            status=_H.UNHEALTHY,
            detail=f"check timed out after {limit:g} s (last known: {last.detail})",
            checked_at=self._wall(),
        )

    def _failed(self, entry: _Entry, detail: str) -> HealthReport:
        return HealthReport(
            status=_H.UNHEALTHY,
            name=entry.name,
            detail=detail,
            checked_at=self._wall(),
            kind=entry.kind,
            critical=entry.critical,
        )

    @staticmethod
    def _label(entry: _Entry, report: HealthReport) -> HealthReport:
        if report.name == entry.name and report.critical == entry.critical:
            return report
        return replace(report, name=entry.name, critical=entry.critical)

    def _aggregate(self, reports: Mapping[str, HealthReport]) -> HealthReport:
        def weight(r: HealthReport) -> HealthStatus:
            return _H.DEGRADED if not r.critical and r.status is _H.UNHEALTHY else r.status

        status = HealthStatus.worst(weight(r) for r in reports.values())
        if not reports:
            detail = "no components registered"
        elif status is _H.HEALTHY:
            detail = f"all {len(reports)} components healthy"
        else:
            bad = sorted(
                (r for r in reports.values() if r.status is not _H.HEALTHY),
                key=lambda r: -weight(r).severity,
            )
            detail = "; ".join(f"{r.name}: {r.status.value} ({r.detail})" for r in bad)
        return HealthReport(
            status=status,
            name=self.name,
            detail=detail,
            checked_at=self._wall(),
            kind="aggregate",
            components=reports,
        )
