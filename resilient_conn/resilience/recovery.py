"""What a connection gets by default: a schedule and a breaker for fast, gentle recovery.

A standalone :class:`~resilient_conn.CircuitBreaker` keeps the seed's defaults (5 failures,
60 s open, 2 successes): right for a call that many callers share, wrong for one reconnecting
connection, where a 60 s open time turns a 4 s server restart into a minute of downtime. The
backoff already spaces a connection's dials; its breaker only has to stop the backoff from
growing past a documented cap and report ``CIRCUIT_OPEN``. So a connection given no
``backoff=`` gets :func:`connection_backoff` (0.5 s windows growing x1.5 to 4 s, ``"banded"``
jitter) and, given no ``breaker=``, :func:`connection_breaker` derives every number from the
connection's :class:`~resilient_conn.Backoff`:

==========================  =================================================================
failure_threshold           :data:`CONNECTION_FAILURE_THRESHOLD` = 3 consecutive failures
first open time             ``backoff.initial_delay`` (0.5 s by default)
growth                      each re-open after a failed probe multiplies the open time by
                            ``backoff.multiplier``
cap                         :func:`recovery_cap`: ``backoff.exponential(failure_threshold - 1)``
                            (4 s with ``Backoff()``): the widest backoff range the connection
                            drew before the circuit opened; ``max_delay`` for ``"banded"``
                            (4 s by default)
success_threshold           :data:`CONNECTION_SUCCESS_THRESHOLD` = 1: a probe connection that
                            stayed up ``stable_after`` (or answered a keepalive) closes the
                            circuit, and closing resets the open time to the first one
==========================  =================================================================

With a ``"banded"`` schedule, while its own breaker is open a connection still waits out the
schedule's next delay (capped at the cap) before the probe: the breaker never makes it dial
sooner than its windows say, so the windows stay even across the opening (the breaker's own
open time, which grows from ``initial_delay``, is always shorter than the window).

The guarantee (docs/recovery.md has the table against outage length): once the server is
back, a connection with the default breaker starts its next dial within :func:`recovery_cap`
seconds, unless the server itself asked for longer (close 1013, ``Retry-After``).
"""

from __future__ import annotations

import os

from .._core.clock import Clock
from .._core.errors import ConfigError
from . import config
from .backoff import Backoff
from .breaker import CircuitBreaker

__all__ = [
    "CONNECTION_BACKOFF",
    "CONNECTION_FAILURE_THRESHOLD",
    "CONNECTION_SUCCESS_THRESHOLD",
    "connection_backoff",
    "connection_breaker",
    "recovery_cap",
]

CONNECTION_BACKOFF: dict[str, float | str] = {
    "initial_delay": 0.5,
    "max_delay": 4.0,
    "multiplier": 1.5,
    "jitter": "banded",
}
"""What :func:`connection_backoff` uses where no ``RESILIENT_CONN_BACKOFF_*`` variable is set."""

CONNECTION_FAILURE_THRESHOLD = 3
"""Consecutive failed dials (or connections lost before ``stable_after``) that open a
connection's default breaker."""

CONNECTION_SUCCESS_THRESHOLD = 1
"""Successes in HALF_OPEN that close a connection's default breaker (one stable probe)."""


def connection_backoff() -> Backoff:
    """Return the schedule a :class:`~resilient_conn.ResilientConnection` gets by default.

    ``Backoff(0.5, 4.0, 1.5, "banded")`` (:data:`CONNECTION_BACKOFF`): windows of 0.5, 0.75,
    1.125, 1.69, 2.53, 3.80 s, then 4 s, laid end to end from the moment a stable connection
    was lost, each client dialing at its own phase through each window. A lone client is back
    within the window it is in when its server returns (0.7 s median after a 2 s outage, at
    most 4 s after any outage); 1,000 clients fill the windows evenly instead of bunching
    in the first ones as full jitter's sums do (docs/recovery.md has the measurements). A
    ``RESILIENT_CONN_BACKOFF_*`` environment variable still overrides its field. The
    standalone :class:`~resilient_conn.Backoff` keeps the seed's defaults (1 s, 60 s, x2,
    full jitter) for retries. Calls that give equal schedules return one shared instance
    (a Backoff is immutable).
    """
    global _last_backoff
    fields = {
        name: (None if config.SETTINGS[f"backoff_{name}"].env in os.environ else value)
        for name, value in CONNECTION_BACKOFF.items()
    }
    backoff = Backoff(**fields)  # type: ignore[arg-type]
    # A Backoff is immutable (frozen, and its rng the shared default): connections whose
    # schedules are equal share one instance instead of holding one each.
    last = _last_backoff
    if last is not None and last == backoff:
        return last
    _last_backoff = backoff
    return backoff


_last_backoff: Backoff | None = None


def recovery_cap(
    backoff: Backoff, failure_threshold: int = CONNECTION_FAILURE_THRESHOLD
) -> float:
    """Return the longest a connection waits to dial once its server is back (seconds).

    It is the widest range the backoff draws from before the circuit opens (attempts 0 to
    ``failure_threshold - 1``), and the cap on the breaker's open time. With the default
    ``Backoff()`` (1 s, x2, 60 s, full jitter) and 3 failures: ``exponential(2)`` = 4 s.
    ``"proportional"`` jitter may draw up to ``(1 + jitter_ratio)`` times the exponential
    delay, and ``"decorrelated"`` up to ``initial_delay * 3 ** (attempt + 1)``; the cap
    covers those too, and never exceeds ``max_delay``. A ``"banded"`` schedule keeps laying
    its windows end to end while the circuit is open (the connection's own breaker never
    makes it dial sooner), so its cap is ``max_delay``: 4 s for :func:`connection_backoff`.

    Args:
        backoff: The connection's delay schedule.
        failure_threshold: Failures that open the circuit.

    Raises:
        ConfigError: ``failure_threshold`` is not an int >= 1.
    """
    _check_threshold(failure_threshold)
    if backoff.phased:
        return backoff.max_delay
    last = failure_threshold - 1
    if backoff.jitter == "decorrelated":
        if backoff.initial_delay == 0.0:
            return 0.0
        return min(backoff.max_delay, backoff.with_(multiplier=3.0).exponential(last + 1))
    widest = backoff.exponential(last)
    if backoff.jitter == "proportional":
        widest *= 1.0 + backoff.jitter_ratio
    return min(backoff.max_delay, widest)


def connection_breaker(
    backoff: Backoff,
    *,
    name: str | None = None,
    clock: Clock | None = None,
    failure_threshold: int = CONNECTION_FAILURE_THRESHOLD,
) -> CircuitBreaker:
    """Build the breaker :class:`~resilient_conn.ResilientConnection` uses when given none.

    The open time starts at ``backoff.initial_delay``, grows by ``backoff.multiplier`` with
    each consecutive re-opening and is capped at :func:`recovery_cap`; a stable probe closes
    the circuit and resets it (see the module docs for the table).

    Args:
        backoff: The connection's delay schedule, which sets the scale.
        name: The breaker's name (the connection's).
        clock: The clock it reads (the connection's).
        failure_threshold: Consecutive failures that open it
            (default :data:`CONNECTION_FAILURE_THRESHOLD` = 3).

    Returns:
        A new :class:`~resilient_conn.CircuitBreaker`; pass it as ``breaker=`` to share it.

    Raises:
        ConfigError: ``backoff`` is not a Backoff, or ``failure_threshold`` is not an int >= 1.
    """
    if not isinstance(backoff, Backoff):
        raise ConfigError(f"backoff must be a Backoff, got {type(backoff).__name__}")
    cap = recovery_cap(backoff, failure_threshold)
    first = min(backoff.initial_delay, cap)
    return CircuitBreaker(
        failure_threshold,
        first,
        CONNECTION_SUCCESS_THRESHOLD,
        1,
        name=name,
        clock=clock,
        recovery_multiplier=backoff.multiplier,
        max_recovery_timeout=cap,
    )


def _check_threshold(value: object) -> None:
    config.check_int(value, "failure_threshold", 1)
