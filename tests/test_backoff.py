"""Backoff: bounds, growth, jitter at the cap, huge attempts, reproducibility, bad input."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_conn import ConfigError
from resilient_conn.resilience.backoff import JITTER_STRATEGIES, Backoff

JITTERED = [s for s in JITTER_STRATEGIES if s != "none"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep RESILIENT_CONN_BACKOFF_* variables of the environment out of these tests."""
    for key in ("INITIAL_DELAY", "MAX_DELAY", "MULTIPLIER", "JITTER", "JITTER_RATIO"):
        monkeypatch.delenv(f"RESILIENT_CONN_BACKOFF_{key}", raising=False)


@st.composite
def backoffs(draw: st.DrawFn, jitter: str | None = None) -> Backoff:
    """Any valid Backoff, with a seeded rng."""
    cap = draw(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False))
    initial = draw(st.floats(min_value=0.0, max_value=cap, allow_nan=False))
    return Backoff(
        initial_delay=initial,
        max_delay=cap,
        multiplier=draw(st.floats(min_value=1.0, max_value=1e3, allow_nan=False)),
        jitter=jitter or draw(st.sampled_from(JITTER_STRATEGIES)),
        jitter_ratio=draw(st.floats(min_value=0.0, max_value=1.0)),
        rng=random.Random(draw(st.integers(0, 2**32))),
    )


def test_defaults_are_the_documented_ones() -> None:
    """Backoff() uses initial 1.0 s, max 60 s, multiplier 2, full jitter, ratio 0.10."""
    b = Backoff()
    assert (b.initial_delay, b.max_delay, b.multiplier, b.jitter, b.jitter_ratio) == (
        1.0,
        60.0,
        2.0,
        "full",
        0.10,
    )


@settings(max_examples=200, deadline=None)
@given(backoff=backoffs(), attempt=st.integers(min_value=0, max_value=10**6))
def test_delay_is_always_within_zero_and_max(backoff: Backoff, attempt: int) -> None:
    """Every strategy, any parameters, any attempt: 0 <= delay <= max_delay."""
    assert 0.0 <= backoff.delay(attempt) <= backoff.max_delay


@settings(max_examples=100, deadline=None)
@given(backoff=backoffs())
def test_schedule_stays_within_bounds(backoff: Backoff) -> None:
    """The first 60 delays of delays() (decorrelated feeds each into the next) are bounded."""
    for d in itertools.islice(backoff.delays(), 60):
        assert 0.0 <= d <= backoff.max_delay


@settings(max_examples=100, deadline=None)
@given(backoff=backoffs(jitter="none"))
def test_none_grows_exponentially_up_to_the_cap(backoff: Backoff) -> None:
    """Without jitter, delay n is min(max, initial * multiplier**n) and never decreases."""
    delays = list(itertools.islice(backoff.delays(), 40))
    assert delays == sorted(delays)
    for n, d in enumerate(delays[:10]):
        expected = min(backoff.max_delay, backoff.initial_delay * backoff.multiplier**n)
        assert d == pytest.approx(expected, rel=1e-9)


def test_none_doubles_from_one_second() -> None:
    """The plain schedule is 1, 2, 4, 8, ... capped at max_delay."""
    b = Backoff(1.0, 20.0, 2.0, "none")
    assert list(itertools.islice(b.delays(), 7)) == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


@pytest.mark.parametrize("jitter", JITTERED)
def test_jitter_survives_the_cap(jitter: str) -> None:
    """At attempt 50 (far past the cap) the draws of every jittered strategy stay spread."""
    b = Backoff(1.0, 30.0, 2.0, jitter, jitter_ratio=0.1, rng=random.Random(7))
    draws = [b.delay(50, previous=30.0) for _ in range(200)]
    assert len(set(draws)) > 150
    assert all(0.0 <= d <= 30.0 for d in draws)
    assert draws.count(30.0) < 5


def test_cap_ranges_are_documented_ones() -> None:
    """At the cap: equal draws from [max/2, max], proportional from [max*(1-r), max]."""
    rng = random.Random(3)
    equal = Backoff(1.0, 10.0, jitter="equal", rng=rng)
    prop = Backoff(1.0, 10.0, jitter="proportional", jitter_ratio=0.2, rng=rng)
    decor = Backoff(1.0, 10.0, jitter="decorrelated", rng=rng)
    e = [equal.delay(80) for _ in range(500)]
    p = [prop.delay(80) for _ in range(500)]
    d = [decor.delay(80, previous=10.0) for _ in range(500)]
    for draws, low, spread in ((e, 5.0, 4.0), (p, 8.0, 1.5), (d, 1.0, 7.0)):
        assert min(draws) >= low
        assert max(draws) <= 10.0
        assert max(draws) - min(draws) > spread


def test_proportional_below_the_cap_spreads_around_the_base() -> None:
    """Below the cap, proportional jitter draws within base * (1 ± ratio)."""
    b = Backoff(4.0, 1000.0, jitter="proportional", jitter_ratio=0.1, rng=random.Random(1))
    draws = [b.delay(2) for _ in range(500)]  # base 16
    assert min(draws) >= 14.4
    assert max(draws) <= 17.6
    assert max(draws) - min(draws) > 2.5


@pytest.mark.parametrize("jitter", JITTER_STRATEGIES)
def test_huge_attempt_does_not_overflow(jitter: str) -> None:
    """Attempt 100_000 (and a huge multiplier) gives a bounded delay, not OverflowError."""
    for multiplier in (2.0, 1e6):
        b = Backoff(1.0, 60.0, multiplier, jitter, rng=random.Random(0))
        assert 0.0 <= b.delay(100_000, previous=60.0) <= 60.0
    assert Backoff(1e-300, 1e300, 10.0, "none").delay(100_000) == 1e300


@pytest.mark.parametrize("jitter", JITTER_STRATEGIES)
def test_seeded_rng_reproduces_the_schedule(jitter: str) -> None:
    """Two backoffs seeded alike produce the same delays."""
    a = Backoff(jitter=jitter, rng=random.Random(1234))
    b = Backoff(jitter=jitter, rng=random.Random(1234))
    assert list(itertools.islice(a.delays(), 30)) == list(itertools.islice(b.delays(), 30))


def test_delays_returns_a_fresh_iterator_each_call() -> None:
    """Calling delays() again starts over at attempt 0 (how callers reset the schedule)."""
    b = Backoff(1.0, 60.0, 2.0, "none")
    first = b.delays()
    assert [next(first) for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    again = b.delays()
    assert next(again) == 1.0
    assert next(first) == 16.0


def test_default_rng_is_not_the_global_random_state() -> None:
    """Seeding the global random module does not make the default schedule repeatable."""
    b = Backoff(1.0, 60.0, jitter="full")
    random.seed(5)
    first = [b.delay(5) for _ in range(5)]
    random.seed(5)
    second = [b.delay(5) for _ in range(5)]
    assert first != second


def test_zero_initial_delay_is_allowed() -> None:
    """initial_delay=0 means no waiting at all, for every strategy."""
    for jitter in JITTER_STRATEGIES:
        b = Backoff(0.0, 5.0, jitter=jitter)
        assert list(itertools.islice(b.delays(), 5)) == [0.0] * 5


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"initial_delay": -1.0}, "initial_delay"),
        ({"max_delay": 0.0}, "max_delay"),
        ({"max_delay": float("nan")}, "max_delay"),
        ({"initial_delay": 10.0, "max_delay": 5.0}, "initial_delay"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter_ratio": 1.5}, "jitter_ratio"),
        ({"jitter_ratio": -0.1}, "jitter_ratio"),
        ({"jitter": "gaussian"}, "jitter"),
        ({"jitter": 3}, "jitter"),
        ({"rng": 42}, "rng"),
    ],
)
def test_bad_input_raises_config_error_naming_the_parameter(
    kwargs: dict[str, object], param: str
) -> None:
    """A bad argument is a ConfigError (a ValueError) whose message names the parameter."""
    with pytest.raises(ConfigError, match=param):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_negative_attempt_is_rejected() -> None:
    """delay(-1) is a ValueError naming attempt."""
    with pytest.raises(ValueError, match="attempt"):
        Backoff().delay(-1)


def test_with_and_replace_copy_with_changes_and_validate() -> None:
    """with_() and dataclasses.replace() return a changed copy and re-validate."""
    rng = random.Random(0)
    b = Backoff(1.0, 60.0, jitter="full", rng=rng)
    c = b.with_(jitter="none", max_delay=5.0)
    assert (c.jitter, c.max_delay, c.initial_delay, c.rng) == ("none", 5.0, 1.0, rng)
    assert (b.jitter, b.max_delay) == ("full", 60.0)
    assert dataclasses.replace(b, multiplier=3.0).multiplier == 3.0
    with pytest.raises(ConfigError, match="max_delay"):
        b.with_(max_delay=-1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.max_delay = 3.0  # type: ignore[misc]


def test_repr_and_equality() -> None:
    """The repr shows the parameters (not the rng); equal parameters compare equal."""
    b = Backoff(0.5, 30.0, 3.0, "equal", jitter_ratio=0.2)
    assert repr(b) == (
        "Backoff(initial_delay=0.5, max_delay=30.0, multiplier=3.0, jitter='equal', "
        "jitter_ratio=0.2)"
    )
    assert b == Backoff(0.5, 30.0, 3.0, "equal", jitter_ratio=0.2, rng=random.Random(9))
    assert b != b.with_(max_delay=31.0)


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESILIENT_CONN_BACKOFF_* variables change the defaults; arguments still win."""
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_MAX_DELAY", "5")
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_JITTER", "equal")
    assert (Backoff().max_delay, Backoff().jitter) == (5.0, "equal")
    assert Backoff(max_delay=7.0, jitter="none").max_delay == 7.0


def _dial_times(backoff: Backoff, count: int) -> list[float]:
    """The moments a schedule dials, from its start (its delays summed)."""
    times, now = [], 0.0
    for delay in itertools.islice(backoff.delays(), count):
        now += delay
        times.append(now)
    return times


def test_banded_dials_once_per_window_at_one_phase() -> None:
    """A banded schedule dials once in each window of width exp(n) laid end to end, always
    the same fraction u of the way through it, and past the cap every window is max wide."""
    b = Backoff(0.5, 4.0, 1.5, "banded", rng=random.Random(11))
    times = _dial_times(b, 12)
    start, phases = 0.0, []
    for n, t in enumerate(times):
        width = b.exponential(n)
        assert start <= t <= start + width
        phases.append((t - start) / width)
        start += width
    assert max(phases) - min(phases) < 1e-9
    assert list(itertools.islice(b.delays(), 12))[-3:] == [4.0, 4.0, 4.0]


def _first_after(schedules: list[list[float]], moment: float) -> list[float]:
    return [next(t for t in times if t >= moment) for times in schedules]


def _peak_to_mean(times: list[float], bucket: float = 0.1) -> float:
    """Peak over mean count per bucket, from the first time to the last (as the benchmark)."""
    low, high = min(times), max(times)
    buckets = max(1, math.ceil((high - low) / bucket))
    counts = [0] * buckets
    for t in times:
        counts[min(buckets - 1, int((t - low) / bucket))] += 1
    return max(counts) / (len(times) / buckets)


@pytest.mark.parametrize("moment", [1.2, 2.2, 3.4, 7.0])
def test_banded_schedules_started_together_come_back_evenly(moment: float) -> None:
    """3,000 clients that lost one server at t = 0: with banded jitter their first dials
    after the server's return are spread evenly (peak/mean per 100 ms under 1.8), where
    full jitter over the same steps bunches them (the wave issue 11 measured)."""
    rng = random.Random(5)
    banded = [_dial_times(Backoff(0.5, 4.0, 1.5, "banded", rng=rng), 40) for _ in range(3000)]
    full = [_dial_times(Backoff(0.5, 4.0, 1.5, "full", rng=rng), 40) for _ in range(3000)]
    even = _peak_to_mean(_first_after(banded, moment))
    bunched = _peak_to_mean(_first_after(full, moment))
    assert even < 1.8
    assert even < bunched
