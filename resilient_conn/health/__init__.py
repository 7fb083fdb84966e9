"""The health surface: reports, the registry, the ASGI app, Prometheus text, alerting.

``from resilient_conn.health import HealthReport, evaluate`` keeps working: the connection's own
report lives one layer down (:mod:`resilient_conn.connection.report`) and is re-exported here.
"""

from __future__ import annotations

from ..connection.report import HealthReport, HealthStatus, evaluate
from .alerting import Alert, AlertKind, AlertPolicy
from .asgi import HealthServer, health_app, serve_health
from .coordination import CoordinatorHealth, coordinator_report
from .dashboard import DashboardApp, DashboardConfig
from .prometheus import RegistryCollector
from .registry import HealthRegistry
from .reports import BreakerLike, PolicyLike, breaker_report, policy_report

__all__ = [
    "Alert",
    "AlertKind",
    "AlertPolicy",
    "BreakerLike",
    "CoordinatorHealth",
    "DashboardApp",
    "DashboardConfig",
    "HealthRegistry",
    "HealthReport",
    "HealthServer",
    "HealthStatus",
    "PolicyLike",
    "RegistryCollector",
    "breaker_report",
    "coordinator_report",
    "evaluate",
    "health_app",
    "policy_report",
    "serve_health",
]
