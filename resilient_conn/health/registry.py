"""HealthRegistry: many components' health in one aggregate, for orchestrators.

:class:`HealthRegistry` takes connections (anything with ``health()`` and ``async
check(timeout)``, another registry included), bare ``CircuitBreaker`` s and
``ResiliencePolicy`` s; it adapts each to one shape, aggregates their reports (worst status
wins, a non-critical UNHEALTHY counts as DEGRADED), checks them concurrently under one overall
timeout, and serves liveness / readiness / metrics through an ASGI app
(:mod:`resilient_conn.asgi`).

The statuses, the reports and the per-component mappings it aggregates live in
:mod:`resilient_conn.health`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from .._core.errors import ConfigError
from .._core.log import get_logger, redact_text
from ..connection.report import HealthReport, HealthStatus
from ..resilience.config import check_positive, resolve
from .asgi import ASGIApp, health_app
from .dashboard import DashboardConfig
from .prometheus import component_metrics
from .reports import BreakerLike, PolicyLike, breaker_report, policy_report

__all__ = ["HealthCheck", "HealthRegistry"]

_log = get_logger()
_H = HealthStatus


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

    def component(self, name: str) -> object:
        """Return the object registered as ``name`` (the dashboard hooks its state changes).

        Raises:
            KeyError: Nothing is registered under ``name``.
        """
        return self._entries[name].source

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
        report = self.health()
        return {
            "name": self.name,
            "status": report.status.value,
            "components": {
                e.name: component_metrics(e.kind, e.source, report.components[e.name])
                for e in self._entries.values()
            },
        }

    def asgi_app(
        self, *, check_timeout: float | None = None, dashboard: bool | DashboardConfig = True
    ) -> ASGIApp:
        """Return the ASGI 3 app serving ``/livez``, ``/readyz``, ``/healthz``, ``/metrics``.

        ``dashboard`` (see :func:`~resilient_conn.health_app`): False turns ``/dashboard`` off.
        """
        return health_app(self, check_timeout=check_timeout, dashboard=dashboard)

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
