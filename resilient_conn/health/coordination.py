"""Health of a recovery coordinator and its store, as a ``HealthReport`` a registry aggregates.

::

    registry.register("feed-recovery", CoordinatorHealth(coordinator), critical=False)

=============================================  ============  =================================
coordinator                                    status        detail
=============================================  ============  =================================
circuit closed, store reachable                HEALTHY       ``shared circuit closed``
circuit closed, ramp on                        HEALTHY       ``... reconnect ramp on``
Redis store unreachable (local fallback)       DEGRADED      ``store unreachable, deciding
                                                             locally: <last error>``
circuit half-open (a probe is out)             DEGRADED      ``shared circuit half-open``
circuit open                                   UNHEALTHY     ``shared circuit open ...``
=============================================  ============  =================================

The report's ``breaker_state`` is the circuit's phase as a ``BreakerState`` (so dashboards and
Prometheus show it like a breaker), ``consecutive_failures`` the shared failure count and
``last_error`` the store's last error. Cheap: no I/O (the state as this process last saw it).
"""

from __future__ import annotations

import time

from ..connection.report import HealthReport, HealthStatus
from ..coordination import Phase, RecoveryCoordinator
from ..resilience.breaker import BreakerState

__all__ = ["CoordinatorHealth", "coordinator_report"]

_PHASE = {
    Phase.CLOSED: BreakerState.CLOSED,
    Phase.OPEN: BreakerState.OPEN,
    Phase.HALF_OPEN: BreakerState.HALF_OPEN,
}


def coordinator_report(
    coordinator: RecoveryCoordinator, *, name: str | None = None, checked_at: float | None = None
) -> HealthReport:
    """Report on a recovery coordinator and its store (see the module's table).

    Args:
        coordinator: The coordinator.
        name: Report name; default the coordinator's name.
        checked_at: Wall-clock stamp; default ``time.time()``.
    """
    snap = coordinator.snapshot()
    store = snap.store
    if snap.phase is Phase.OPEN:
        status = HealthStatus.UNHEALTHY
        detail = f"shared circuit open (next open time {snap.next_open_time:.1f} s)"
    elif snap.phase is Phase.HALF_OPEN:
        status, detail = HealthStatus.DEGRADED, "shared circuit half-open (probing)"
    else:
        status = HealthStatus.HEALTHY
        detail = "shared circuit closed" + ("; reconnect ramp on" if snap.ramping else "")
    if store.fallback_active:
        if status is HealthStatus.HEALTHY:
            status = HealthStatus.DEGRADED
        detail = f"{store.backend} store unreachable, deciding locally: {store.last_error}; " + (
            detail
        )
    return HealthReport(
        status=status,
        name=name or snap.name,
        detail=detail,
        checked_at=time.time() if checked_at is None else checked_at,
        kind="coordinator",
        breaker_state=_PHASE[snap.phase],
        last_error=store.last_error,
        consecutive_failures=snap.failures,
    )


class CoordinatorHealth:
    """Adapts a :class:`~resilient_conn.RecoveryCoordinator` to a ``HealthRegistry`` component.

    Args:
        coordinator: The coordinator to report on.
        name: Report name; default the coordinator's name.
    """

    __slots__ = ("coordinator", "name")

    def __init__(self, coordinator: RecoveryCoordinator, *, name: str | None = None) -> None:
        if not isinstance(coordinator, RecoveryCoordinator):
            raise TypeError(f"expected a RecoveryCoordinator, got {type(coordinator).__name__}")
        self.coordinator = coordinator
        self.name = name

    def health(self) -> HealthReport:
        """The coordinator's report (no I/O)."""
        return coordinator_report(self.coordinator, name=self.name)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Same as :meth:`health` (the store's health is kept up to date by its own tasks)."""
        return self.health()
