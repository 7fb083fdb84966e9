"""A hypothesis state machine drives the breaker against a small model of its rules."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilient_conn import CircuitOpenError
from resilient_conn.resilience.breaker import BreakerLease, BreakerState, CircuitBreaker
from tests._clock_fake import ManualClock

S = BreakerState


@dataclass
class ModelLease:
    """What the model knows about a lease the breaker handed out."""

    real: BreakerLease
    probe: bool
    epoch: int


class BreakerModel(RuleBasedStateMachine):
    """Random successes, failures, releases (cancellations), resets and clock jumps."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.leases: list[ModelLease] = []

    @initialize(
        failure_threshold=st.integers(1, 4),
        success_threshold=st.integers(1, 3),
        max_calls=st.integers(1, 3),
        recovery=st.sampled_from([0.0, 1.0, 10.0]),
    )
    def setup(
        self, failure_threshold: int, success_threshold: int, max_calls: int, recovery: float
    ) -> None:
        """Build a breaker with drawn thresholds and the matching model."""
        self.breaker = CircuitBreaker(
            failure_threshold,
            recovery,
            success_threshold,
            max_calls,
            clock=self.clock,
        )
        self.ft, self.st, self.max_calls, self.recovery = (
            failure_threshold,
            success_threshold,
            max_calls,
            recovery,
        )
        self.state = S.CLOSED
        self.epoch = 0
        self.consecutive = 0
        self.half_successes = 0
        self.in_flight = 0
        self.open_until = 0.0

    # -- model -------------------------------------------------------------------------
    def move(self, new: BreakerState) -> None:
        """Model transition: new episode, slots and half-open successes cleared."""
        self.state = new
        self.epoch += 1
        self.in_flight = 0
        self.half_successes = 0
        if new is S.OPEN:
            self.open_until = self.clock.now() + self.recovery
        if new is S.CLOSED:
            self.consecutive = 0

    def lazy(self) -> None:
        """Model of the lazy OPEN -> HALF_OPEN move on read."""
        if self.state is S.OPEN and self.clock.now() >= self.open_until:
            self.move(S.HALF_OPEN)

    def count(self, ok: bool) -> None:
        """Model of a counted outcome in CLOSED or HALF_OPEN."""
        if ok:
            if self.state is S.HALF_OPEN:
                self.half_successes += 1
                if self.half_successes >= self.st:
                    self.move(S.CLOSED)
            else:
                self.consecutive = 0
        else:
            self.consecutive += 1
            if self.state is S.HALF_OPEN or self.consecutive >= self.ft:
                self.move(S.OPEN)

    # -- rules -------------------------------------------------------------------------
    @rule()
    def acquire(self) -> None:
        """Ask for a lease: admitted or refused exactly as the model says."""
        self.lazy()
        if self.state is S.CLOSED or (
            self.state is S.HALF_OPEN and self.in_flight < self.max_calls
        ):
            lease = self.breaker.acquire()
            probe = self.state is S.HALF_OPEN
            self.in_flight += probe
            assert lease.probe == probe
            self.leases.append(ModelLease(lease, probe, self.epoch))
        else:
            with pytest.raises(CircuitOpenError) as info:
                self.breaker.acquire()
            expected = 0.0 if self.state is S.HALF_OPEN else self.open_until - self.clock.now()
            assert info.value.retry_after == pytest.approx(expected)

    @precondition(lambda self: bool(self.leases))
    @rule(index=st.integers(0, 50), outcome=st.sampled_from(["success", "failure", "release"]))
    def settle(self, index: int, outcome: str) -> None:
        """Report an outcome (release = cancellation) on one outstanding lease."""
        lease = self.leases.pop(index % len(self.leases))
        getattr(lease.real, outcome)()
        ok = {"success": True, "failure": False, "release": None}[outcome]
        if lease.probe and lease.epoch == self.epoch:
            self.in_flight -= 1
            if ok is not None:
                self.count(ok)
        elif ok is not None and self.state is S.CLOSED:
            self.count(ok)

    @rule(ok=st.booleans())
    def record(self, ok: bool) -> None:
        """A lease-less outcome (e.g. heartbeats of a probe connection)."""
        if ok:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()
        self.lazy()
        if self.state in (S.CLOSED, S.HALF_OPEN):
            self.count(ok)

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 30.0]))
    def tick(self, seconds: float) -> None:
        """Let time pass."""
        self.clock.advance(seconds)

    @rule()
    def reset(self) -> None:
        """Reset the breaker: it closes and starts a new episode."""
        self.breaker.reset()
        if self.state is not S.CLOSED:
            self.move(S.CLOSED)
        self.consecutive = 0

    # -- invariants --------------------------------------------------------------------
    @invariant()
    def matches_model(self) -> None:
        """State, counters and slots match the model; retry_after is never negative."""
        self.lazy()
        m = self.breaker.metrics()
        assert m.state is self.state
        assert m.consecutive_failures == self.consecutive
        assert m.half_open_successes == self.half_successes
        assert m.half_open_in_flight == self.in_flight
        assert m.half_open_in_flight <= self.max_calls
        assert m.retry_after >= 0.0
        if self.state is not S.OPEN:
            assert m.retry_after == 0.0


BreakerModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerModel = BreakerModel.TestCase
TestBreakerModel.__doc__ = "The breaker follows the model under random operation sequences."
