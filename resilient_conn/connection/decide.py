"""The supervisor's decisions: one object that knows every state, closing included.

Pure: no clock, no socket, no task. :class:`Decisions` takes the events of a connection's life
(the breaker admitted or refused a dial, a dial succeeded, a transport or dial ended, a peer
went silent, the user closed, the close finished) and returns a :class:`Step`: the state to
enter, if any, and whether the supervisor's loop must stop. The supervisor
(:mod:`._supervisor`) carries out what it returns and never picks a state itself, so a close
racing a dial, a backoff or a probe cannot produce a move outside
:data:`~resilient_conn.connection.events.TRANSITIONS`: once the user closed, every event but
:meth:`Decisions.closed` returns ``stop`` and no state.

What follows a dial or transport that ended, with the breaker already told of the outcome:

========================  ====================================================================
verdict / breaker         next
========================  ====================================================================
fatal                     ``FAILED`` (no retry storm: 401/403/404, bad URL, TLS certificate)
breaker OPEN              ``CIRCUIT_OPEN``; sleep a server's ``Retry-After`` hint and, with
                          the connection's own breaker (``pace_cap``), the schedule's next
                          delay capped at ``pace_cap``; then the loop waits on the breaker
otherwise                 ``BACKOFF`` for the next delay of the schedule; ``soon`` (close 1012)
                          takes the first step's delay; ``RETRY_AFTER`` waits at least the hint
========================  ====================================================================

A transport that stayed up ``stable_after`` starts the schedule again (flap guard); every other
ending is one more attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..resilience.backoff import Backoff
from ..resilience.breaker import BreakerState
from ..resilience.classify import Action, Verdict
from .events import TRANSITIONS, ConnectionState, IllegalTransition

__all__ = ["Decisions", "Next", "Step"]

_OPEN = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_S = ConnectionState
_LIVE = (_S.CONNECTING, _S.CONNECTED)


@dataclass(frozen=True, slots=True)
class Step:
    """What the supervisor does next.

    Attributes:
        state: The state to enter (``None``: stay where it is).
        reason: The state change's reason (``"close_1012; next dial in 0.015s"``).
        sleep: Seconds to sleep before going round the loop (``CIRCUIT_OPEN`` then waits on
            the breaker).
        stop: The loop must stop now: the user is closing (or the connection failed); the
            closer takes over whatever transport is open.
    """

    state: ConnectionState | None
    reason: str = ""
    sleep: float = 0.0
    stop: bool = False


Next = Step
"""The former name of :class:`Step`."""

_STOP = Step(None, "closing", stop=True)
_STAY = Step(None)


class Decisions:
    """The state, backoff schedule and attempt counters of one connection, and what follows.

    Args:
        backoff: The connection's delay schedule.
        pace_cap: With the connection's own breaker and a ``"banded"`` schedule: its recovery
            cap. While that breaker is open the schedule's next delay (capped at this) still
            passes before the probe; ``None`` waits on the breaker alone.
    """

    __slots__ = (
        "_backoff",
        "_delays",
        "_pace_cap",
        "attempt",
        "closing",
        "connected_once",
        "consecutive_failures",
        "state",
    )

    def __init__(self, backoff: Backoff, pace_cap: float | None = None) -> None:
        self._backoff = backoff
        self._pace_cap = pace_cap
        # the schedule, made at the first failure (None: not started, or reset)
        self._delays: Iterator[float] | None = None
        self.state = _S.IDLE
        """The state the supervisor is in (every move goes through this object)."""
        self.closing = False
        """The user closed: nothing but ``CLOSING -> CLOSED`` happens from now on."""
        self.connected_once = False
        """A transport opened once: later dials say ``reconnecting``, earlier ones ``dialing``."""
        self.attempt = 0
        """Failed attempts since the last stable connection (0 while stable)."""
        self.consecutive_failures = 0
        """Same count, reported in health."""

    def _move(self, new: ConnectionState, reason: str, sleep: float = 0.0) -> Step:
        old = self.state
        if new is not old and new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{old.name} -> {new.name} ({reason})")
        self.state = new
        return Step(new, reason, sleep)

    def _over(self) -> bool:
        return self.closing or self.state.is_final

    # --- the loop's own events ------------------------------------------------------------

    def admitted(self) -> Step:
        """The breaker admitted a dial: dial now (``CONNECTING``), unless closing."""
        if self._over():
            return _STOP
        return self._move(_S.CONNECTING, "reconnecting" if self.connected_once else "dialing")

    def refused(self) -> Step:
        """The breaker is open: wait for it (``CIRCUIT_OPEN``), unless closing."""
        if self._over():
            return _STOP
        return self._move(_S.CIRCUIT_OPEN, "circuit open")

    def dialed(self) -> Step:
        """The handshake completed: serve the transport (``CONNECTED``), unless closing.

        When closing, ``stop`` tells the supervisor to hand the new transport to the closer.
        """
        if self._over():
            return _STOP
        if self.state is not _S.CONNECTING:
            raise IllegalTransition(f"dialed while {self.state.name}")
        self.connected_once = True
        return self._move(_S.CONNECTED, "handshake complete")

    def waiting(self, reason: str, *, ramp: bool) -> list[Step]:
        """A shared coordinator holds the dial: ``CIRCUIT_OPEN``, or ``BACKOFF`` for its ramp.

        For the ``coordinator=`` dial gate: its wait for admission shows as a state, decided
        here like every other move. A first dial shows ``CONNECTING`` before it (the connect
        phase has begun). Nothing when closing: the wait is about to be cancelled.
        """
        if self._over():
            return []
        steps = []
        if self.state is _S.IDLE:
            steps.append(self._move(_S.CONNECTING, "dialing"))
        steps.append(self._move(_S.BACKOFF if ramp else _S.CIRCUIT_OPEN, reason))
        return steps

    def proved_stable(self) -> None:
        """The current transport stayed up ``stable_after``: the next failure starts afresh."""
        self.attempt = 0
        self.consecutive_failures = 0

    def peer_dead(self) -> bool:
        """A keepalive or heartbeat went unanswered: True if the transport is to be aborted.

        Only a transport being served is aborted this way; a late report about a transport
        that already ended, or one arriving while closing (the closer bounds that itself), is
        ignored.
        """
        return self.state is _S.CONNECTED and not self.closing

    def after(
        self,
        verdict: Verdict,
        *,
        stable: bool,
        breaker_state: BreakerState,
        retry_after: float,
    ) -> Step:
        """Decide what follows a dial or transport that ended with ``verdict``.

        Args:
            verdict: The classifier's verdict on how it ended.
            stable: The transport had stayed up ``stable_after`` (False for a failed dial).
            breaker_state: The breaker's state after it was told of the outcome.
            retry_after: Seconds until the breaker admits a probe.

        Returns:
            ``FAILED``, ``CIRCUIT_OPEN`` or ``BACKOFF`` with the pause; ``stop`` when closing.
        """
        if self._over():
            return _STOP
        if self.state not in _LIVE:
            raise IllegalTransition(f"a dial or transport ended while {self.state.name}")
        if verdict.fatal:
            step = self._move(_S.FAILED, verdict.kind)
            return Step(step.state, step.reason, stop=True)
        if stable:
            self._delays = None  # stayed up: start the schedule again
        else:
            self.attempt += 1
            self.consecutive_failures += 1
        delays = self._delays
        if delays is None:
            delays = self._delays = self._backoff.delays()
        delay = next(delays)
        if verdict.soon and not (stable and self._backoff.phased):
            # the first step's delay; a banded schedule just restarted is in its first
            # window already, at its own phase (a fresh draw would bunch its later windows)
            delay = self._backoff.delay(0)
        hinted = verdict.action is Action.RETRY_AFTER
        if hinted:
            delay = max(delay, verdict.delay)
        if breaker_state in _OPEN:
            sleep = verdict.delay if hinted else 0.0  # the server's hint still holds
            if self._pace_cap is not None:  # its own breaker: the schedule still paces
                sleep = max(sleep, min(delay, self._pace_cap))
            wait = max(retry_after, sleep)
            return self._move(
                _S.CIRCUIT_OPEN, f"{verdict.kind}; circuit open, next probe in {wait:.3f}s", sleep
            )
        return self._move(_S.BACKOFF, f"{verdict.kind}; next dial in {delay:.3f}s", delay)

    def crashed(self, kind: str = "internal_error") -> Step:
        """The supervisor itself raised (a bug): ``FAILED``, unless closing or already final."""
        if self._over():
            return _STOP
        step = self._move(_S.FAILED, kind)
        return Step(step.state, step.reason, stop=True)

    # --- the user's close -----------------------------------------------------------------

    def close(self, *, started: bool) -> Step:
        """The user closes: ``CLOSING`` (``CLOSED`` at once if never started).

        Args:
            started: The supervisor was started (a never-started connection closes at once).

        Returns:
            The step to apply; no state when already ``FAILED``, ``CLOSED`` or closing.
        """
        if self.closing or self.state.is_final:
            self.closing = True
            return _STAY
        self.closing = True
        if self.state is _S.IDLE and not started:
            return self._move(_S.CLOSED, "closed before start")
        return self._move(_S.CLOSING, "closed by user")

    def closed(self) -> Step:
        """The closer finished (drained, closed the transport): ``CLOSED``.

        Returns:
            ``CLOSED`` from ``CLOSING``; no state when the connection had ``FAILED`` (final)
            or was closed already.
        """
        if self.state is _S.CLOSING:
            return self._move(_S.CLOSED, "closed by user")
        return _STAY
