"""Recovery that is fast and gentle: the connection's breaker on the backoff's scale.

Pure checks of :func:`connection_breaker` / :func:`recovery_cap` and of the recovery model
(the real decisions and breaker, no network), then loopback runs on a FakeClock: a server that
stays away long enough to open the breaker, then returns; a close 1001; a Phoenix server
restarted behind a RealtimeClient. Every timing claim is checked on the fake clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection

from resilient_conn import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    ConfigError,
    ConnectionState,
    ResilientConnection,
    StateChange,
    connection_backoff,
    connection_breaker,
    recovery_cap,
)
from resilient_conn.connection.decide import Decisions
from resilient_conn.realtime import RealtimeClient
from resilient_conn.resilience.classify import Action, Verdict
from resilient_conn.testing import FakeClock, PhoenixServer, ScriptedServer
from tests._recorder import StateRecorder
from tests._recovery_model import DIAL_TIME, recover

S = ConnectionState


class _Tick:
    """A clock for the pure breaker tests: time moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        """The current reading."""
        return self.t

    async def sleep(self, seconds: float) -> None:
        """Never awaited here."""
        self.t += seconds


# -- the breaker a connection gets ------------------------------------------------------------


def test_standalone_breaker_keeps_the_seed_defaults() -> None:
    """CircuitBreaker() is unchanged: 5 failures, 60 s open, 2 successes, a fixed open time."""
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.recovery_timeout, breaker.success_threshold) == (
        5,
        60.0,
        2,
    )


def test_connection_breaker_takes_its_scale_from_the_backoff() -> None:
    """With the default backoff: 3 failures open it for 1 s; each failed probe doubles the
    open time up to the cap (4 s); one success closes it and the next opening is 1 s again."""
    clock = _Tick()
    breaker = connection_breaker(Backoff(), name="feed", clock=clock)
    assert (breaker.failure_threshold, breaker.success_threshold) == (3, 1)
    assert breaker.name == "feed"
    assert breaker.clock is clock
    for _ in range(3):
        breaker.record_failure()
    open_times = []
    for _ in range(5):
        open_times.append(breaker.retry_after)
        clock.t += breaker.retry_after
        breaker.acquire().failure()  # the probe fails: open again, longer
    assert open_times == [1.0, 2.0, 4.0, 4.0, 4.0]
    clock.t += breaker.retry_after
    breaker.acquire().success()
    assert breaker.state is BreakerState.CLOSED
    for _ in range(3):
        breaker.record_failure()
    assert breaker.retry_after == 1.0


@pytest.mark.parametrize(
    ("backoff", "cap"),
    [
        (Backoff(), 4.0),
        (Backoff(0.2, 1.0), 0.8),
        (Backoff(1.0, 3.0), 3.0),
        (Backoff(jitter="proportional"), 4.4),
        (Backoff(jitter="decorrelated"), 27.0),
        (Backoff(jitter="decorrelated", max_delay=10.0), 10.0),
        (Backoff(0.0, 1.0), 0.0),
    ],
)
def test_recovery_cap_is_the_widest_range_drawn_before_opening(
    backoff: Backoff, cap: float
) -> None:
    """The cap is the widest backoff range of attempts 0-2 (per jitter strategy), within
    max_delay, and the breaker's open time never grows past it."""
    assert recovery_cap(backoff) == pytest.approx(cap)
    breaker = connection_breaker(backoff)
    assert breaker.recovery_timeout == min(backoff.initial_delay, cap)
    assert breaker.metrics().recovery_timeout <= cap


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_failure_threshold_is_a_config_error(bad: Any) -> None:
    """A failure threshold that is not an int >= 1 is refused with a clear error."""
    with pytest.raises(ConfigError, match="failure_threshold"):
        recovery_cap(Backoff(), bad)
    with pytest.raises(ConfigError, match="failure_threshold"):
        connection_breaker(Backoff(), failure_threshold=bad)


def test_connection_breaker_wants_a_backoff() -> None:
    """Passing something else than a Backoff is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="backoff"):
        connection_breaker(1.0)  # type: ignore[arg-type]


def test_a_connection_without_a_breaker_gets_the_tuned_one_on_its_clock() -> None:
    """ResilientConnection builds connection_breaker(backoff) on its own clock and name; a
    breaker passed in is used as given."""
    clock = FakeClock()
    backoff = Backoff(0.5, 10.0)
    conn = ResilientConnection("ws://127.0.0.1:9/", backoff=backoff, clock=clock, name="x")
    assert conn.breaker.failure_threshold == 3
    assert conn.breaker.recovery_timeout == 0.5
    assert conn.breaker.clock is clock
    assert conn.breaker.name == "x"
    mine = CircuitBreaker()
    assert ResilientConnection("ws://127.0.0.1:9/", breaker=mine).breaker is mine


# -- the model: real decisions and breaker, no network -----------------------------------------


@pytest.mark.parametrize("outage", [1.0, 2.0, 5.0, 20.0, 120.0, 600.0])
def test_model_never_waits_longer_than_the_cap_after_the_return(outage: float) -> None:
    """Over many jitter seeds (200; 20 for the longest outages, whose runs are long) and the
    outage lengths of the docs' table, the next dial after the server's return starts within
    recovery_cap (4 s), and no single pause is longer."""
    backoff = Backoff()
    cap = recovery_cap(backoff)
    for seed in range(200 if outage <= 20 else 20):
        for close in (None, 1012):
            run = recover(outage, backoff, seed=seed, close_code=close)
            assert run.delay <= cap + DIAL_TIME
            assert run.longest_wait <= cap + 1e-9  # float rounding of (now + t) - now


def test_model_the_seed_breaker_kept_connections_down_for_most_of_a_minute() -> None:
    """The same model with the standalone defaults (the seed's behaviour) leaves a
    connection down 40 s or more after a 20 s outage for most seeds: what issue 11 measured."""
    delays = sorted(recover(20.0, Backoff(), seed=s, seed_breaker=True).delay for s in range(50))
    assert delays[len(delays) // 2] > 40.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.floats(0.05, 5.0),
    ratio=st.floats(1.0, 40.0),
    multiplier=st.floats(1.0, 4.0),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "proportional", "none", "banded"]),
    outage=st.floats(0.0, 200.0),
    close=st.sampled_from([None, 1001, 1012]),
    seed=st.integers(0, 2**32),
)
def test_model_the_cap_holds_for_any_backoff(
    initial: float,
    ratio: float,
    multiplier: float,
    jitter: str,
    outage: float,
    close: int | None,
    seed: int,
) -> None:
    """For any backoff, outage length, close code and jitter draw, a connection with the
    default breaker dials within recovery_cap(backoff) of its server's return."""
    backoff = Backoff(initial, initial * ratio, multiplier, jitter)
    cap = recovery_cap(backoff)
    run = recover(outage, backoff, seed=seed, close_code=close)
    assert run.longest_wait <= cap + 1e-9
    assert run.delay <= cap + DIAL_TIME + 1e-9


# -- loopback, on a fake clock ----------------------------------------------------------------


async def _drive(
    clock: FakeClock,
    done: Callable[[], bool],
    *,
    at: float | None = None,
    then: Callable[[], Awaitable[None]] | None = None,
    steps: int = 2000,
) -> None:
    """Advance ``clock`` from one sleeper's deadline to the next until ``done()``.

    If ``at`` is given, the clock stops there once (mid-sleep, if that is where it falls) to
    run ``then()`` (e.g. bring the server back) before going on.
    """
    for _ in range(steps):
        if done():
            return
        await clock.wait_for_sleepers(1, timeout=10)
        if done():
            return
        deadline = clock.next_deadline
        assert deadline is not None
        if at is not None and deadline >= at:
            clock.advance_to(at)
            at = None
            if then is not None:
                await then()
            continue
        clock.advance_to(deadline)
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"not done after {steps} clock steps")


@pytest.mark.anyio
@pytest.mark.parametrize(("outage", "seed"), [(20.0, 1), (120.0, 2), (120.0, 3), (600.0, 4)])
async def test_outage_opens_the_breaker_then_reconnects_within_the_cap(
    outage: float, seed: int
) -> None:
    """A server away for 20 s to 10 min (fake time) behind a default connection: the breaker
    opens, its open time grows to the cap and no further, and once the server is back the
    connection is up again within recovery_cap (4 s) of fake time."""
    clock = FakeClock()
    backoff = Backoff(rng=random.Random(seed))
    cap = recovery_cap(backoff)
    seen: list[tuple[ConnectionState, float]] = []

    def note(change: StateChange) -> None:
        seen.append((change.new, clock.now()))

    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, backoff=backoff, clock=clock, ping_interval=0)
        conn.on_state_change(note)
        async with conn:
            with anyio.fail_after(10):
                await conn.wait_connected()
            await server.stop(1011)  # an internal error: not a hint to come back soon
            down_at = clock.now()
            back_at = down_at + outage
            await _drive(clock, lambda: conn.stats.connects >= 2, at=back_at, then=server.start)
            opens = conn.breaker.metrics().times_opened
    connected_at = [at for state, at in seen if state is S.CONNECTED][-1]
    assert S.CIRCUIT_OPEN in {state for state, _ in seen}
    assert opens >= 2
    assert connected_at - back_at <= cap + 1e-9
    # no pause was ever longer than the cap: the breaker's open times and backoff sleeps (the
    # stable timer's sleeps of stable_after, 10 s, are not pauses)
    assert max(s for s in clock.sleeps if s != conn.options.stable_after) <= cap + 1e-9


def _close_with(code: int) -> Callable[[ServerConnection, Any], Awaitable[None]]:
    """A ScriptedServer handler that accepts, then closes with ``code``."""

    async def handler(ws: ServerConnection, server: Any) -> None:
        await ws.close(code, "deploy")

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "soon"), [(1001, True), (1012, True), (1000, False)])
async def test_close_1001_redials_after_the_first_delay_like_1012(code: int, soon: bool) -> None:
    """A server that accepts and closes with 1001 (going away) or 1012 (restart) is redialled
    after the FIRST backoff delay every time; a 1000 close takes the next, growing step."""
    clock = FakeClock()  # manual: the stable timer never fires, every connection flaps
    backoff = Backoff(1.0, 60.0, 2.0, "none")
    breaker = CircuitBreaker(100, clock=clock)
    rec = StateRecorder()
    waits = []
    async with ScriptedServer(_close_with(code)) as server:
        conn = ResilientConnection(
            server.url, backoff=backoff, breaker=breaker, clock=clock, ping_interval=0
        )
        conn.on_state_change(rec)
        async with conn:
            for n in range(1, 5):
                await rec.wait_state(S.BACKOFF, n)
                await clock.wait_for_sleepers(1)  # the backoff sleep (the stable timer is gone)
                deadline = clock.next_deadline
                assert deadline is not None
                waits.append(deadline - clock.now())
                clock.advance_to(deadline)
    assert waits == ([1.0, 1.0, 1.0, 1.0] if soon else [1.0, 2.0, 4.0, 8.0])
    assert conn.stats.failures == {f"close_{code}": 4}


@pytest.mark.anyio
async def test_realtime_channels_rejoin_within_the_cap_after_a_phoenix_restart() -> None:
    """A Phoenix server stopped with 1012 (dials refused for 6 s of fake time) and started
    again on the same port: the RealtimeClient's connection is back within recovery_cap of
    the return, and every channel is rejoined on the new socket (as the server sees it)."""
    clock = FakeClock()
    backoff = Backoff(rng=random.Random(11))
    cap = recovery_cap(backoff)
    topics = [f"room{i}" for i in range(5)]
    connected: list[float] = []
    async with PhoenixServer(idle_timeout=None) as server:
        client = RealtimeClient(
            server.realtime_url, apikey="anon", backoff=backoff, clock=clock, ping_interval=0
        )
        client.connection.on_state_change(
            lambda change: connected.append(clock.now()) if change.new is S.CONNECTED else None
        )
        async with client:
            with anyio.fail_after(10):
                for topic in topics:
                    await client.channel(topic).subscribe()
            first_joins = len(server.joins)
            await server.stop(1012)
            back_at = clock.now() + 6.0
            await _drive(
                clock, lambda: client.connection.stats.connects >= 2, at=back_at, then=server.start
            )
            connected_at = connected[-1]

            def rejoined() -> bool:
                fresh = {j.topic for j in list(server.joins)[first_joins:] if j.accepted}
                return all(f"realtime:{t}" in fresh for t in topics)

            with anyio.fail_after(10):
                await server.wait_for(rejoined)
    assert len(connected) == 2
    assert connected_at - back_at <= cap + 1e-9
    assert not math.isinf(cap)


# -- the connection's default schedule --------------------------------------------------------


def test_connection_backoff_is_banded_half_second_to_four(monkeypatch: pytest.MonkeyPatch) -> None:
    """connection_backoff(): 0.5 s windows growing x1.5 to 4 s, banded; its cap is 4 s; an
    environment variable still overrides a field; a connection given no backoff uses it."""
    for key in ("INITIAL_DELAY", "MAX_DELAY", "MULTIPLIER", "JITTER"):
        monkeypatch.delenv(f"RESILIENT_CONN_BACKOFF_{key}", raising=False)
    b = connection_backoff()
    assert (b.initial_delay, b.max_delay, b.multiplier, b.jitter) == (0.5, 4.0, 1.5, "banded")
    assert recovery_cap(b) == 4.0
    assert ResilientConnection("ws://127.0.0.1:9/").backoff == b
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_MAX_DELAY", "10")
    assert connection_backoff().max_delay == 10.0
    assert connection_backoff().initial_delay == 0.5


def test_own_breaker_open_still_waits_the_banded_window() -> None:
    """With its own breaker open, a banded connection waits its schedule's next window
    (capped), never dialing sooner; with a shared breaker (no pace cap) it waits on the
    breaker alone."""
    backoff = connection_backoff().with_(rng=random.Random(3))
    for paced in (True, False):
        decisions = Decisions(backoff, recovery_cap(backoff) if paced else None)
        decisions.admitted()
        decisions.dialed()
        refused = Verdict(Action.RETRY, "refused")
        decisions.after(refused, stable=True, breaker_state=BreakerState.CLOSED, retry_after=0)
        decisions.admitted()
        step = decisions.after(
            refused, stable=False, breaker_state=BreakerState.OPEN, retry_after=0.5
        )
        assert step.state is ConnectionState.CIRCUIT_OPEN
        if paced:
            assert 0.5 <= step.sleep <= 1.25  # the second window: 0.5 + u * 0.75
        else:
            assert step.sleep == 0.0


def test_model_banded_recovery_after_a_short_restart() -> None:
    """Over 400 seeds, a default connection is back well inside a second (median) after a
    2 s outage and within the 4 s cap after any outage; with 1012 the same."""
    backoff = connection_backoff()
    for close in (None, 1012):
        short = sorted(recover(2.0, backoff, seed=s, close_code=close).delay for s in range(400))
        assert short[200] < 0.8
        long = [recover(120.0, backoff, seed=s, close_code=close) for s in range(100)]
        assert max(r.delay for r in long) <= 4.0 + DIAL_TIME
        assert max(r.longest_wait for r in long) <= 4.0
