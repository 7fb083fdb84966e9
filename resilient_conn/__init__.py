"""resilient_conn: long-lived WebSocket and Realtime connections that stay alive.

The public API is flat: import everything from ``resilient_conn`` (test helpers live in
``resilient_conn.testing``, the Phoenix / Supabase Realtime client in
``resilient_conn.realtime``).
"""

from __future__ import annotations

from . import _compat
from ._core.clock import SYSTEM_CLOCK, Clock, SystemClock, is_testing, set_testing
from ._core.errors import (
    BufferFullError,
    ChannelClosedError,
    ChannelJoinError,
    CircuitOpenError,
    ConfigError,
    ConnectionClosedError,
    ConnectionFailedError,
    NotConnectedError,
    PushTimeoutError,
    RealtimeError,
    RealtimeProtocolError,
    ResilientConnError,
    RetryError,
)
from .connection.buffer import DeadLetter, DeadLetterReason, Overflow
from .connection.connection import ResilientConnection
from .connection.events import ConnectionState, StateChange
from .connection.metrics import ConnectionSnapshot, ConnectionStats
from .connection.options import ConnectionOptions
from .connection.report import HealthReport, HealthStatus, evaluate
from .coordination import (
    CoordinatorSnapshot,
    CoordinatorStore,
    DialKind,
    LocalStore,
    RecoveryCoordinator,
    RecoverySettings,
    RedisStore,
    StoreHealth,
)
from .delivery import (
    AckedStream,
    DeliveryDeadLetter,
    DeliveryHub,
    DurableOutbox,
    EnvelopeError,
    GapKind,
    GapNotice,
    OutboxError,
    ServerSession,
    connect_acked,
)
from .health.alerting import Alert, AlertKind, AlertPolicy
from .health.asgi import HealthServer, health_app, serve_health
from .health.coordination import CoordinatorHealth, coordinator_report
from .health.dashboard import DashboardConfig
from .health.prometheus import RegistryCollector
from .health.registry import HealthRegistry
from .health.reports import breaker_report, policy_report
from .resilience.backoff import JITTER_STRATEGIES, Backoff, JitterStrategy
from .resilience.breaker import (
    BreakerLease,
    BreakerMetrics,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from .resilience.classify import Action, Verdict, classifier, default_classify
from .resilience.policy import PolicyMetrics, PolicyRegistry, ResiliencePolicy
from .resilience.recovery import connection_backoff, connection_breaker, recovery_cap
from .resilience.retry import (
    RetryMetrics,
    RetryState,
    RetryStats,
    reset_retry_metrics,
    retry,
    retry_metrics,
    retrying,
)

__version__ = "0.1.0"

_compat.install()

__all__ = [
    "JITTER_STRATEGIES",
    "SYSTEM_CLOCK",
    "__version__",
    "AckedStream",
    "Action",
    "Alert",
    "AlertKind",
    "AlertPolicy",
    "Backoff",
    "BreakerLease",
    "BreakerMetrics",
    "BreakerState",
    "BreakerTransition",
    "BufferFullError",
    "ChannelClosedError",
    "ChannelJoinError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "ConnectionOptions",
    "ConnectionSnapshot",
    "ConnectionState",
    "ConnectionStats",
    "CoordinatorHealth",
    "CoordinatorSnapshot",
    "CoordinatorStore",
    "DashboardConfig",
    "DeadLetter",
    "DeadLetterReason",
    "DeliveryDeadLetter",
    "DeliveryHub",
    "DialKind",
    "DurableOutbox",
    "EnvelopeError",
    "GapKind",
    "GapNotice",
    "HealthRegistry",
    "HealthReport",
    "HealthServer",
    "HealthStatus",
    "JitterStrategy",
    "LocalStore",
    "NotConnectedError",
    "OutboxError",
    "Overflow",
    "PolicyMetrics",
    "PolicyRegistry",
    "PushTimeoutError",
    "RealtimeError",
    "RealtimeProtocolError",
    "RecoveryCoordinator",
    "RecoverySettings",
    "RedisStore",
    "RegistryCollector",
    "ResiliencePolicy",
    "ResilientConnError",
    "ResilientConnection",
    "RetryError",
    "RetryMetrics",
    "RetryState",
    "RetryStats",
    "ServerSession",
    "StateChange",
    "StoreHealth",
    "SystemClock",
    "Verdict",
    "breaker_report",
    "classifier",
    "connect_acked",
    "connection_backoff",
    "connection_breaker",
    "coordinator_report",
    "default_classify",
    "evaluate",
    "health_app",
    "is_testing",
    "policy_report",
    "recovery_cap",
    "reset_retry_metrics",
    "retry",
    "retry_metrics",
    "retrying",
    "serve_health",
    "set_testing",
]
