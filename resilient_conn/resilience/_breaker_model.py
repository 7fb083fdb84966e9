"""The breaker's vocabulary: its states and legal moves, transitions, metrics, failure rules.

Plain values with no behaviour of their own, shared by the breaker (:mod:`.breaker`), its
leases and its async guard, and re-exported from :mod:`resilient_conn.resilience.breaker`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .._core.errors import ConfigError

__all__ = [
    "TRANSITIONS",
    "BreakerMetrics",
    "BreakerState",
    "BreakerTransition",
    "FailurePredicate",
    "failure_rule",
]

FailurePredicate = Callable[[BaseException], bool]
"""Decides whether an exception counts as a failure of the guarded service."""


class BreakerState(enum.Enum):
    """Where a :class:`CircuitBreaker` is."""

    CLOSED = "closed"
    """Calls pass; consecutive failures are counted."""
    OPEN = "open"
    """Calls are refused until the recovery timeout elapses."""
    HALF_OPEN = "half_open"
    """A limited number of probe calls are admitted to test the service."""
    FORCED_OPEN = "forced_open"
    """Refuses every call until :meth:`CircuitBreaker.reset`."""
    DISABLED = "disabled"
    """Admits every call and records nothing until :meth:`CircuitBreaker.reset`."""


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED

TRANSITIONS: dict[BreakerState, frozenset[BreakerState]] = {
    _CLOSED: frozenset({_OPEN, _FORCED_OPEN, _DISABLED}),
    _OPEN: frozenset({_HALF_OPEN, _CLOSED, _FORCED_OPEN, _DISABLED}),
    _HALF_OPEN: frozenset({_CLOSED, _OPEN, _FORCED_OPEN, _DISABLED}),
    _FORCED_OPEN: frozenset({_CLOSED, _DISABLED}),
    _DISABLED: frozenset({_CLOSED, _FORCED_OPEN}),
}
"""Legal moves: ``TRANSITIONS[old]`` is the set of states ``old`` may move to."""


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One state change of a breaker, as listeners see it.

    Attributes:
        old: The state left.
        new: The state entered.
        at: The breaker clock's reading (monotonic seconds) at the change.
        reason: Why, in a few words (``"5 consecutive failures"``, ``"reset"``).
        name: The breaker's name, if it has one.
    """

    old: BreakerState
    new: BreakerState
    at: float
    reason: str
    name: str | None


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker's state and counters (totals since construction).

    Attributes:
        name: The breaker's name, if any.
        state: The state (an elapsed OPEN reads HALF_OPEN).
        calls: Calls admitted (DISABLED admits without counting).
        successes: Successes that counted.
        failures: Failures that counted.
        rejections: Calls refused with :class:`~resilient_conn.CircuitOpenError`.
        ignored: Outcomes reported when they could not count (see the module docs).
        consecutive_failures: Failures in a row in the current episode.
        half_open_successes: Successes counted in the current HALF_OPEN episode.
        half_open_in_flight: Probe leases outstanding.
        opened_at: Clock reading when the circuit last opened (``None`` when CLOSED).
        retry_after: Seconds until a probe is admitted (``inf`` when FORCED_OPEN).
        recovery_timeout: The open time in force (grows with ``recovery_multiplier``).
        times_opened: How often the circuit opened (including re-opens from HALF_OPEN).
        transitions: How many state changes happened.
        last_failure: ``repr`` of the last counted failure's exception (redacted), if any.
    """

    name: str | None
    state: BreakerState
    calls: int
    successes: int
    failures: int
    rejections: int
    ignored: int
    consecutive_failures: int
    half_open_successes: int
    half_open_in_flight: int
    opened_at: float | None
    retry_after: float
    recovery_timeout: float
    times_opened: int
    transitions: int
    last_failure: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (state as its value, an infinite ``retry_after`` as None)."""
        return {
            "name": self.name,
            "state": self.state.value,
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "rejections": self.rejections,
            "ignored": self.ignored,
            "consecutive_failures": self.consecutive_failures,
            "half_open_successes": self.half_open_successes,
            "half_open_in_flight": self.half_open_in_flight,
            "opened_at": self.opened_at,
            "retry_after": None if math.isinf(self.retry_after) else self.retry_after,
            "recovery_timeout": self.recovery_timeout,
            "times_opened": self.times_opened,
            "transitions": self.transitions,
            "last_failure": self.last_failure,
        }


def failure_rule(
    failure_on: object,
) -> tuple[tuple[type[BaseException], ...] | None, FailurePredicate | None]:
    """Split ``failure_on`` into (types, None) or (None, predicate), validating it."""
    if isinstance(failure_on, type) and issubclass(failure_on, BaseException):
        return (failure_on,), None
    if isinstance(failure_on, tuple):
        for item in failure_on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise ConfigError(
                    f"failure_on must hold exception classes or be a predicate, got {item!r}"
                )
        return failure_on, None
    if callable(failure_on):
        return None, cast(FailurePredicate, failure_on)
    raise ConfigError(
        f"failure_on must be a tuple of exception classes or a predicate, got {failure_on!r}"
    )
