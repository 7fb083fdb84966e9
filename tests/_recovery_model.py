"""A pure model of one connection's recovery: the real decisions and breaker, no network.

It replays what the supervisor does after its server goes away at t = 0 and comes back at
``outage`` (every dial before then is refused): the real :class:`Decisions` (backoff, flap
guard, close hints) and the real breaker, on a clock that only moves when the loop sleeps.
``benchmarks/recovery_table.py`` prints docs/recovery.md's table from it, and
``tests/test_recovery.py`` checks the documented cap with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from resilient_conn import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    connection_breaker,
    recovery_cap,
)
from resilient_conn.connection.decide import Decisions
from resilient_conn.resilience.classify import Action, Verdict

DIAL_TIME = 0.002
"""Seconds a refused (or successful) dial takes in the model (loopback order)."""


class _Clock:
    """A clock that moves only when the model sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        """The model's time."""
        return self.t

    async def sleep(self, seconds: float) -> None:  # never awaited by the model
        """Move time forward."""
        self.t += max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class Recovery:
    """How one modelled connection came back.

    Attributes:
        delay: Seconds from the server's return to the start of the successful dial.
        dials: Dials during the outage (all refused).
        longest_wait: The longest single pause (backoff sleep or open time) in the run.
    """

    delay: float
    dials: int
    longest_wait: float


def recover(
    outage: float,
    backoff: Backoff,
    *,
    seed: int = 0,
    close_code: int | None = None,
    seed_breaker: bool = False,
) -> Recovery:
    """Model one connection, stable until t = 0, whose server is away for ``outage`` seconds.

    Args:
        outage: Seconds the server is away (dials refused).
        backoff: The connection's backoff (its rng is replaced by ``Random(seed)``).
        seed: Seeds the jitter.
        close_code: How the connection ended at t = 0 (None: lost, no close frame).
        seed_breaker: Use the standalone CircuitBreaker defaults instead of the connection's.
    """
    clock = _Clock()
    backoff = backoff.with_(rng=random.Random(seed))
    breaker = (
        CircuitBreaker(clock=clock)
        if seed_breaker
        else connection_breaker(backoff, clock=clock)
    )
    # the connection's own breaker paces its probes by the schedule, capped (as the supervisor)
    paced = not seed_breaker and backoff.phased
    decisions = Decisions(backoff, recovery_cap(backoff) if paced else None)
    decisions.admitted()  # the decision object walks the states as the supervisor does:
    decisions.dialed()  # CONNECTED until t = 0
    soon = close_code in (1001, 1012)
    kind = "lost" if close_code is None else f"close_{close_code}"
    verdict = Verdict(Action.RETRY, kind, soon=soon)
    stable = True
    dials = 0
    longest = 0.0
    while True:
        step = decisions.after(
            verdict, stable=stable, breaker_state=breaker.state, retry_after=breaker.retry_after
        )
        clock.t += step.sleep
        longest = max(longest, step.sleep)
        while True:
            try:
                lease = breaker.acquire()
                break
            except CircuitOpenError as refused:
                decisions.refused()
                clock.t += refused.retry_after
                longest = max(longest, refused.retry_after)
        decisions.admitted()
        start = clock.t
        clock.t += DIAL_TIME
        if clock.t >= outage:
            return Recovery(max(0.0, start - outage), dials, longest)
        dials += 1
        lease.failure(None)
        verdict, stable = Verdict(Action.RETRY, "refused"), False
