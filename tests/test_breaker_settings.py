"""Breakers configured alike share one settings object, and nothing else.

A thousand connections to one upstream each have a breaker with the same thresholds, timeouts,
failure rule and clock: they hold one shared :class:`BreakerSettings` (one slot per breaker,
not nine). Sharing must never mix up what is per breaker: its state, and its clock when it was
given one of its own.
"""

from __future__ import annotations

import anyio
import pytest

from resilient_conn import CircuitOpenError, ResilientConnection
from resilient_conn.resilience import _breaker_settings
from resilient_conn.resilience.breaker import BreakerState, CircuitBreaker
from tests._clock_fake import ManualClock


class _EqualClock(ManualClock):
    """A clock that compares equal to every other one: sharing must still keep each its own."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EqualClock)

    def __hash__(self) -> int:
        return 0


def test_connections_configured_alike_share_settings_but_not_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two default connections' breakers hold one settings object; opening one leaves the
    other closed and admitting calls."""
    monkeypatch.setattr(_breaker_settings, "_SHARED", {})
    a = ResilientConnection("ws://127.0.0.1:1/")
    b = ResilientConnection("ws://127.0.0.1:1/")
    assert a.breaker is not b.breaker
    assert a.breaker._cfg is b.breaker._cfg
    for _ in range(a.breaker.failure_threshold):
        a.breaker.record_failure()
    assert a.breaker.state is BreakerState.OPEN
    assert b.breaker.state is BreakerState.CLOSED
    b.breaker.acquire().success()
    assert (b.breaker.failure_threshold, b.breaker.recovery_timeout) == (
        a.breaker.failure_threshold, a.breaker.recovery_timeout,
    )


def test_breakers_with_their_own_clocks_keep_them_even_when_the_clocks_compare_equal() -> None:
    """Two breakers built alike, each with a clock of its own (the two clocks compare equal):
    each reads its own clock, so advancing one moves only its breaker to HALF_OPEN."""
    first, second = _EqualClock(), _EqualClock()
    assert first == second
    b1 = CircuitBreaker(1, 10.0, clock=first)
    b2 = CircuitBreaker(1, 10.0, clock=second)
    assert b1.clock is first
    assert b2.clock is second
    b1.record_failure()
    b2.record_failure()
    first.advance(10.0)
    assert b1.state is BreakerState.HALF_OPEN
    assert b2.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        b2.acquire()


def test_a_predicate_breaker_keeps_its_own_predicate() -> None:
    """failure_on as a predicate is never shared: each breaker judges with its own."""
    b1 = CircuitBreaker(1, failure_on=lambda exc: isinstance(exc, KeyError))
    b2 = CircuitBreaker(1, failure_on=lambda exc: isinstance(exc, ValueError))
    assert b1._cfg is not b2._cfg
    with b1.acquire() as lease:
        lease.report(ValueError("not a failure for b1"))
    assert b1.state is BreakerState.CLOSED
    b2.acquire().report(ValueError("a failure for b2"))
    assert b2.state is BreakerState.OPEN


def test_many_distinct_configurations_keep_a_bounded_cache_and_their_own_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the sharing bound, new configurations get settings of their own (right values,
    nothing cached); those seen before the bound are still shared."""
    monkeypatch.setattr(_breaker_settings, "_SHARED", {})
    bound = _breaker_settings._MAX_SHARED
    breakers = [CircuitBreaker(3, 1.0 + i / 1000) for i in range(bound + 50)]
    assert len(_breaker_settings._SHARED) == bound
    assert [b.recovery_timeout for b in breakers] == [1.0 + i / 1000 for i in range(bound + 50)]
    assert CircuitBreaker(3, 1.0)._cfg is breakers[0]._cfg
    late = CircuitBreaker(3, 1.0 + (bound + 10) / 1000)
    assert late._cfg is not breakers[bound + 10]._cfg
    assert late._cfg == breakers[bound + 10]._cfg


@pytest.mark.anyio
async def test_a_shared_settings_breaker_still_waits_on_its_own_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """wait_until_ready() of one of two alike breakers returns at once while the other one
    is open (the guard reads the shared settings, the state is its own)."""
    monkeypatch.setattr(_breaker_settings, "_SHARED", {})
    a = CircuitBreaker(1, 30.0)
    b = CircuitBreaker(1, 30.0)
    assert a._cfg is b._cfg
    a.record_failure()
    with anyio.fail_after(1):
        await b.wait_until_ready()
    assert a.state is BreakerState.OPEN
