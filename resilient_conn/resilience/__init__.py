"""Resilience primitives, pure and usable on their own: backoff, breaker, classify, retry, policy.

No I/O beyond sleeping through the injected clock, and no ``websockets`` import.
"""

from __future__ import annotations

from .backoff import JITTER_STRATEGIES, Backoff, JitterStrategy
from .breaker import BreakerLease, BreakerMetrics, BreakerState, BreakerTransition, CircuitBreaker
from .classify import Action, Verdict, classifier, default_classify
from .policy import PolicyMetrics, PolicyRegistry, ResiliencePolicy
from .recovery import connection_backoff, connection_breaker, recovery_cap
from .retry import retry, retrying

__all__ = [
    "JITTER_STRATEGIES",
    "Action",
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
    "Verdict",
    "classifier",
    "connection_backoff",
    "connection_breaker",
    "default_classify",
    "recovery_cap",
    "retry",
    "retrying",
]
