"""The supervisor's decision object, without an event loop: every move is in the table.

A hypothesis state machine plays the supervisor's loop (admit, dial, serve, pause) and, at any
moment in between, the events that race it: the user's close, a dead or live peer report, a
late dial result, a breaker that opens. Whatever the interleaving, every state the decisions
name is a legal move of ``events.TRANSITIONS``, nothing but ``CLOSING -> CLOSED`` follows a
close, and a final state never changes.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_conn.connection.decide import Decisions, Step
from resilient_conn.connection.events import TRANSITIONS, ConnectionState, IllegalTransition
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.resilience.breaker import BreakerState
from resilient_conn.resilience.classify import Action, Verdict

S = ConnectionState

VERDICTS = st.sampled_from(
    [
        Verdict(Action.RETRY, "refused"),
        Verdict(Action.RETRY, "close_1012", soon=True),
        Verdict(Action.RETRY_AFTER, "http_503", delay=2.0),
        Verdict(Action.FATAL, "http_401", status=401),
        Verdict(Action.RETRY, "ping_timeout"),
    ]
)
BREAKER = st.sampled_from(list(BreakerState))


class SupervisorLoop(RuleBasedStateMachine):
    """The loop's phases, driven in a random order with closes and pings in between."""

    def __init__(self) -> None:
        super().__init__()
        self.d = Decisions(Backoff(initial_delay=0.1, max_delay=1.0, jitter="none"))
        self.state = S.IDLE  # what the supervisor has set, from the steps it was given
        self.phase = "admit"  # admit | dialing | serving | pausing | stopped
        self.started = True
        self.closed_by_user = False
        self.after_close: list[ConnectionState] = []

    def apply(self, step: Step) -> None:
        """Carry out a step as the supervisor does, checking it against the table."""
        if step.state is not None and step.state is not self.state:
            assert step.state in TRANSITIONS[self.state], (self.state, step)
            assert not self.state.is_final
            if self.closed_by_user:
                self.after_close.append(step.state)
            self.state = step.state
        if step.stop:
            self.phase = "stopped"

    @precondition(lambda self: self.phase == "admit")
    @rule()
    def admitted(self) -> None:
        """The breaker admitted a dial."""
        step = self.d.admitted()
        self.apply(step)
        if not step.stop:
            self.phase = "dialing"

    @precondition(lambda self: self.phase == "admit")
    @rule()
    def refused(self) -> None:
        """The breaker refused: the circuit is open."""
        self.apply(self.d.refused())  # then waits on the breaker and admits again

    @precondition(lambda self: self.phase == "dialing")
    @rule()
    def dialed(self) -> None:
        """The handshake completed."""
        step = self.d.dialed()
        self.apply(step)
        if not step.stop:
            self.phase = "serving"

    @precondition(lambda self: self.phase in ("dialing", "serving"))
    @rule(verdict=VERDICTS, stable=st.booleans(), breaker=BREAKER)
    def ended(self, verdict: Verdict, stable: bool, breaker: BreakerState) -> None:
        """The dial or transport ended with a verdict, the breaker told of it."""
        step = self.d.after(
            verdict,
            stable=stable and self.phase == "serving",
            breaker_state=breaker,
            retry_after=1.0,
        )
        self.apply(step)
        if not step.stop:
            assert step.state in (S.BACKOFF, S.CIRCUIT_OPEN)
            assert step.sleep >= 0
            self.phase = "pausing"
        elif step.state is S.FAILED:
            assert verdict.fatal

    @precondition(lambda self: self.phase == "admit")
    @rule(ramp=st.booleans())
    def coordinator_holds_the_dial(self, ramp: bool) -> None:
        """A shared coordinator makes the dial wait (its circuit, or its reconnect ramp)."""
        for step in self.d.waiting("waiting", ramp=ramp):
            self.apply(step)

    @precondition(lambda self: self.phase == "pausing")
    @rule()
    def paused(self) -> None:
        """The backoff pause is over: round the loop again."""
        self.phase = "admit"

    @rule()
    def peer_dead(self) -> None:
        """A keepalive or heartbeat report, at any moment: abort only a served transport."""
        abort = self.d.peer_dead()
        assert abort == (self.state is S.CONNECTED and not self.closed_by_user)

    @precondition(lambda self: self.phase == "serving")
    @rule()
    def stable(self) -> None:
        """The transport stayed up stable_after."""
        self.d.proved_stable()
        assert self.d.attempt == 0

    @rule()
    def user_close(self) -> None:
        """The user closes, at any moment."""
        before = self.state
        self.closed_by_user = True
        self.apply(self.d.close(started=self.started))
        if before.is_final:
            assert self.state is before
        elif before is not S.CLOSING:
            assert self.state is S.CLOSING

    @precondition(lambda self: self.closed_by_user)
    @rule()
    def close_finished(self) -> None:
        """The closer finished."""
        before = self.state
        self.apply(self.d.closed())
        assert self.state is (S.CLOSED if before in (S.CLOSING, S.CLOSED) else before)

    @precondition(lambda self: self.closed_by_user)
    @rule(verdict=VERDICTS, breaker=BREAKER)
    def late_events_after_close(self, verdict: Verdict, breaker: BreakerState) -> None:
        """What the loop may still report after the close (a dial that completed, a refusal,
        a transport ending) is answered with stop and no state."""
        for step in (
            self.d.admitted(),
            self.d.refused(),
            self.d.dialed(),
            self.d.after(verdict, stable=False, breaker_state=breaker, retry_after=0.0),
            self.d.crashed(),
        ):
            assert step.stop
            assert step.state is None

    @invariant()
    def decisions_agree_with_the_supervisor(self) -> None:
        """The supervisor set exactly the states it was given."""
        assert self.d.state is self.state

    @invariant()
    def only_closed_follows_a_close(self) -> None:
        """After a close only CLOSING and CLOSED are entered."""
        assert set(self.after_close) <= {S.CLOSING, S.CLOSED}


TestSupervisorLoop = SupervisorLoop.TestCase
TestSupervisorLoop.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_connection_never_started_closes_at_once() -> None:
    """close() before start goes IDLE -> CLOSED; closed() after it changes nothing."""
    d = Decisions(Backoff())
    assert d.close(started=False).state is S.CLOSED
    assert d.closed().state is None
    assert d.state is S.CLOSED


def test_a_failed_connection_stays_failed_when_closed() -> None:
    """FAILED is final: a later close and its end leave it FAILED."""
    d = Decisions(Backoff())
    d.admitted()
    step = d.after(
        Verdict(Action.FATAL, "http_401", status=401),
        stable=False,
        breaker_state=BreakerState.CLOSED,
        retry_after=0.0,
    )
    assert (step.state, step.stop) == (S.FAILED, True)
    assert d.close(started=True).state is None
    assert d.closed().state is None
    assert d.state is S.FAILED


def test_an_open_breaker_at_start_is_a_legal_move() -> None:
    """A breaker shared with others may be open before the first dial: IDLE -> CIRCUIT_OPEN."""
    d = Decisions(Backoff())
    assert d.refused().state is S.CIRCUIT_OPEN
    assert d.admitted().state is S.CONNECTING


def test_an_event_out_of_place_is_a_bug_that_raises() -> None:
    """dialed() without a dial, or an ending while paused, is a supervisor bug: it raises."""
    d = Decisions(Backoff())
    with pytest.raises(IllegalTransition):
        d.dialed()
    d.admitted()
    d.after(
        Verdict(Action.RETRY, "refused"),
        stable=False,
        breaker_state=BreakerState.CLOSED,
        retry_after=0.0,
    )
    with pytest.raises(IllegalTransition):
        d.after(
            Verdict(Action.RETRY, "refused"),
            stable=False,
            breaker_state=BreakerState.CLOSED,
            retry_after=0.0,
        )


def test_dials_say_dialing_until_a_transport_opened_then_reconnecting() -> None:
    """The CONNECTING reasons tell a first connect (however many dials it takes) from a
    reconnect after a transport was up."""
    d = Decisions(Backoff())
    refused = Verdict(Action.RETRY, "refused")
    assert d.admitted().reason == "dialing"
    d.after(refused, stable=False, breaker_state=BreakerState.CLOSED, retry_after=0.0)
    assert d.admitted().reason == "dialing"
    d.dialed()
    d.after(refused, stable=False, breaker_state=BreakerState.CLOSED, retry_after=0.0)
    assert d.admitted().reason == "reconnecting"


def test_a_coordinator_wait_shows_as_a_state_and_never_after_a_close() -> None:
    """waiting(): a first dial shows CONNECTING then CIRCUIT_OPEN (or BACKOFF for the ramp);
    once closing, no state at all."""
    d = Decisions(Backoff())
    assert [s.state for s in d.waiting("circuit open", ramp=False)] == [
        S.CONNECTING,
        S.CIRCUIT_OPEN,
    ]
    assert [s.state for s in d.waiting("waiting for reconnect ramp", ramp=True)] == [S.BACKOFF]
    d.close(started=True)
    assert d.waiting("circuit open", ramp=False) == []
