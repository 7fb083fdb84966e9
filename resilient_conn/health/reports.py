"""Health reports for a bare ``CircuitBreaker`` or ``ResiliencePolicy``.

:func:`breaker_report` / :func:`policy_report` map a breaker's state to the same
:class:`~resilient_conn.connection.report.HealthReport` a connection gives, so a
:class:`~resilient_conn.health.registry.HealthRegistry` can aggregate all of them.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from ..connection.report import HealthReport, HealthStatus
from ..resilience.breaker import BreakerState

__all__ = ["BreakerLike", "PolicyLike", "breaker_report", "policy_report"]

_B = BreakerState
_H = HealthStatus


def _secs(value: float) -> str:
    return "forever" if math.isinf(value) else f"{value:.1f} s"


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
