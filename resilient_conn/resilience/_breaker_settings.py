"""A circuit breaker's configuration, one object shared by breakers configured alike.

Every connection has its own breaker, and a thousand connections to one upstream configure
theirs identically: thresholds, timeouts, failure rule, clock. :func:`breaker_settings` hands
them one frozen :class:`BreakerSettings` (a breaker then holds one slot for it, not nine), as
long as the clock is the system clock and failures are judged by exception types. A custom
clock or predicate gets settings of its own: two clocks that compare equal are still two clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._core.clock import SYSTEM_CLOCK, Clock
from ._breaker_model import FailurePredicate

__all__ = ["BreakerSettings", "breaker_settings"]


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """What a ``CircuitBreaker`` was configured with (checked by its constructor)."""

    failure_threshold: int
    recovery_timeout: float
    success_threshold: int
    half_open_max_calls: int
    recovery_multiplier: float
    max_recovery_timeout: float
    failure_types: tuple[type[BaseException], ...] | None
    failure_predicate: FailurePredicate | None
    clock: Clock


_SHARED: dict[tuple[object, ...], BreakerSettings] = {}
_MAX_SHARED = 256  # distinct configurations kept for sharing; beyond, each breaker its own


def breaker_settings(
    failure_threshold: int,
    recovery_timeout: float,
    success_threshold: int,
    half_open_max_calls: int,
    recovery_multiplier: float,
    max_recovery_timeout: float,
    failure_types: tuple[type[BaseException], ...] | None,
    failure_predicate: FailurePredicate | None,
    clock: Clock,
) -> BreakerSettings:
    """The settings for these values: a shared instance when they can be shared."""
    key = (failure_threshold, recovery_timeout, success_threshold, half_open_max_calls,
           recovery_multiplier, max_recovery_timeout, failure_types)
    shareable = clock is SYSTEM_CLOCK and failure_predicate is None
    shared = _SHARED.get(key) if shareable else None
    if shared is not None:
        return shared
    made = BreakerSettings(*key, failure_predicate, clock)
    if shareable and len(_SHARED) < _MAX_SHARED:
        _SHARED[key] = made
    return made
