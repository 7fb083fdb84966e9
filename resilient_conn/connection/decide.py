"""The supervisor's decisions: what the end of a dial or of a transport means next.

Pure: no clock, no socket, no task. The supervisor (:mod:`._supervisor`) carries out what this
returns. After a dial or a transport ends, with the breaker already told of the outcome:

========================  ====================================================================
verdict / breaker         next
========================  ====================================================================
fatal                     ``FAILED`` (no retry storm: 401/403/404, bad URL, TLS certificate)
breaker OPEN              ``CIRCUIT_OPEN``; sleep only a server's ``Retry-After`` hint, then
                          the loop waits on the breaker for its probe
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
from .events import ConnectionState

__all__ = ["Decisions", "Next"]

_OPEN = (BreakerState.OPEN, BreakerState.FORCED_OPEN)


@dataclass(frozen=True, slots=True)
class Next:
    """What the supervisor does after a dial or a transport ended."""

    state: ConnectionState
    """``FAILED``, ``CIRCUIT_OPEN`` or ``BACKOFF``."""
    reason: str
    """The state change's reason (``"close_1012; next dial in 0.015s"``)."""
    sleep: float = 0.0
    """Seconds to sleep before going round the loop (``CIRCUIT_OPEN`` then waits on the breaker)."""


class Decisions:
    """The backoff schedule and attempt counters of one connection, and what follows a failure.

    Args:
        backoff: The connection's delay schedule.
    """

    __slots__ = ("_backoff", "_delays", "attempt", "consecutive_failures")

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._delays: Iterator[float] = backoff.delays()
        self.attempt = 0
        """Failed attempts since the last stable connection (0 while stable)."""
        self.consecutive_failures = 0
        """Same count, reported in health."""

    def proved_stable(self) -> None:
        """The current transport stayed up ``stable_after``: the next failure starts afresh."""
        self.attempt = 0
        self.consecutive_failures = 0

    def after(
        self,
        verdict: Verdict,
        *,
        stable: bool,
        breaker_state: BreakerState,
        retry_after: float,
    ) -> Next:
        """Decide what follows a dial or transport that ended with ``verdict``.

        Args:
            verdict: The classifier's verdict on how it ended.
            stable: The transport had stayed up ``stable_after`` (False for a failed dial).
            breaker_state: The breaker's state after it was told of the outcome.
            retry_after: Seconds until the breaker admits a probe.
        """
        if verdict.fatal:
            return Next(ConnectionState.FAILED, verdict.kind)
        if stable:
            self._delays = self._backoff.delays()  # stayed up: start the schedule again
        else:
            self.attempt += 1
            self.consecutive_failures += 1
        delay = next(self._delays)
        if verdict.soon:
            delay = self._backoff.delay(0)
        hinted = verdict.action is Action.RETRY_AFTER
        if hinted:
            delay = max(delay, verdict.delay)
        if breaker_state in _OPEN:
            wait = max(retry_after, verdict.delay)
            return Next(
                ConnectionState.CIRCUIT_OPEN,
                f"{verdict.kind}; circuit open, next probe in {wait:.3f}s",
                verdict.delay if hinted else 0.0,  # the server's hint still holds
            )
        return Next(ConnectionState.BACKOFF, f"{verdict.kind}; next dial in {delay:.3f}s", delay)
