"""resilient_conn: long-lived WebSocket and Realtime connections that stay alive.

The public API is flat: import everything from ``resilient_conn`` (test helpers live in
``resilient_conn.testing``, the Phoenix / Supabase Realtime client in
``resilient_conn.realtime``).
"""

from __future__ import annotations

from ._clock import SYSTEM_CLOCK, Clock, SystemClock, is_testing, set_testing
from .alerting import Alert, AlertKind, AlertPolicy
from .asgi import HealthServer, health_app, serve_health
from .backoff import JITTER_STRATEGIES, Backoff, JitterStrategy
from .breaker import (
    BreakerLease,
    BreakerMetrics,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from .buffer import DeadLetter, DeadLetterReason, Overflow
from .classify import Action, Verdict, classifier, default_classify
from .connection import ResilientConnection
from .errors import (
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
from .events import ConnectionState, StateChange
from .health import (
    HealthReport,
    HealthStatus,
    breaker_report,
    evaluate,
    policy_report,
)
from .health_registry import HealthRegistry
from .metrics import ConnectionSnapshot, ConnectionStats
from .options import ConnectionOptions
from .policy import PolicyMetrics, PolicyRegistry, ResiliencePolicy
from .prometheus import RegistryCollector
from .retry import (
    RetryMetrics,
    RetryState,
    RetryStats,
    reset_retry_metrics,
    retry,
    retry_metrics,
    retrying,
)

__version__ = "0.1.0"

__all__ = [
    "JITTER_STRATEGIES",
    "Backoff",
    "BreakerLease",
    "BreakerMetrics",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "JitterStrategy",
    "PolicyMetrics",
    "PolicyRegistry",
    "ResiliencePolicy",
    "RetryMetrics",
    "RetryState",
    "RetryStats",
    "reset_retry_metrics",
    "retry",
    "retry_metrics",
    "retrying",
    "Action",
    "ConnectionSnapshot",
    "ConnectionStats",
    "DeadLetter",
    "DeadLetterReason",
    "NotConnectedError",
    "Overflow",
    "ResilientConnection",
    "Verdict",
    "classifier",
    "default_classify",
    "SYSTEM_CLOCK",
    "BufferFullError",
    "ChannelClosedError",
    "ChannelJoinError",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "ConnectionOptions",
    "ConnectionState",
    "PushTimeoutError",
    "RealtimeError",
    "RealtimeProtocolError",
    "ResilientConnError",
    "RetryError",
    "StateChange",
    "SystemClock",
    "__version__",
    "is_testing",
    "set_testing",
    "Alert",
    "AlertKind",
    "AlertPolicy",
    "HealthRegistry",
    "HealthReport",
    "HealthServer",
    "HealthStatus",
    "RegistryCollector",
    "breaker_report",
    "evaluate",
    "health_app",
    "policy_report",
    "serve_health",
]
