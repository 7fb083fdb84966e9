"""ResiliencePolicy (breaker-gated retries) and PolicyRegistry."""

from __future__ import annotations

import json

import anyio
import pytest

from resilient_conn import CircuitOpenError, ConfigError, RetryError
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.resilience.breaker import BreakerState, CircuitBreaker
from resilient_conn.resilience.policy import PolicyRegistry, ResiliencePolicy
from tests._clock_fake import ManualClock

NO_JITTER = Backoff(1.0, 60.0, 2.0, "none")


class Flaky:
    """An async callable failing ``failures`` times with ConnectionError, then echoing."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, value: str = "ok") -> str:
        """Fail the first ``failures`` calls, then return ``value``."""
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"failure {self.calls}")
        return value


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock: sleeps are recorded and skipped."""
    return ManualClock()


def make(clock: ManualClock, **kwargs: object) -> ResiliencePolicy:
    """A policy with a small breaker on the manual clock."""
    breaker = CircuitBreaker(3, 10.0, 1, clock=clock, name="svc")
    options: dict[str, object] = {"breaker": breaker, "backoff": NO_JITTER, "max_attempts": 3}
    options.update(kwargs)
    return ResiliencePolicy("svc", **options)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_success_passes_through(clock: ManualClock) -> None:
    """A succeeding call returns its value after one attempt, recorded on the breaker."""
    policy = make(clock)
    assert await policy.call(Flaky(0), "hello") == "hello"
    m = policy.metrics()
    assert (m.retry.attempts, m.retry.successes, m.breaker.successes) == (1, 1, 1)


@pytest.mark.anyio
async def test_retries_then_succeeds(clock: ManualClock) -> None:
    """Two failures, then success: the breaker saw two failures, the caller the value."""
    policy = make(clock)
    fn = Flaky(2)
    assert await policy.call(fn) == "ok"
    assert fn.calls == 3
    assert clock.sleeps == [1.0, 2.0]
    m = policy.metrics()
    assert (m.breaker.failures, m.breaker.successes, m.breaker.state) == (2, 1, BreakerState.CLOSED)
    assert (m.retry.retries, m.retry.successes) == (2, 1)


@pytest.mark.anyio
async def test_exhaustion_raises_retry_error(clock: ManualClock) -> None:
    """Attempts exhausted on call errors: RetryError from the last ConnectionError."""
    policy = make(clock, breaker=CircuitBreaker(10, clock=clock))
    with pytest.raises(RetryError) as info:
        await policy.call(Flaky(9))
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, ConnectionError)
    assert policy.metrics().retry.exhaustions == 1


@pytest.mark.anyio
async def test_breaker_opens_and_policy_fails_fast(clock: ManualClock) -> None:
    """Failures open the breaker; the refusal surfaces as CircuitOpenError at once: no
    backoff sleep after the failure that opened it, fn is not called again."""
    policy = make(clock, max_attempts=4)
    fn = Flaky(99)
    with pytest.raises(CircuitOpenError) as info:
        await policy.call(fn)
    # attempts 1-3 fail (sleeping 1, then 2 s); the third opens the circuit, so attempt 4
    # is refused at once, the full 10 s open period ahead.
    assert fn.calls == 3
    assert clock.sleeps == [1.0, 2.0]
    assert info.value.retry_after == pytest.approx(10.0)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert policy.breaker.state is BreakerState.OPEN
    m = policy.metrics()
    assert (m.fail_fast, m.breaker.rejections, m.retry.retries) == (1, 1, 2)
    one_shot = make(clock, breaker=policy.breaker, max_attempts=1)
    with pytest.raises(CircuitOpenError) as again:
        await one_shot.call(fn)
    assert again.value.__cause__ is None
    assert fn.calls == 3


@pytest.mark.anyio
async def test_open_breaker_fails_fast_without_being_asked_to_wait(clock: ManualClock) -> None:
    """With attempts left but no deadline and no wait_for_breaker, an open breaker is
    not slept out: CircuitOpenError at once, with its retry_after, fn never called."""
    policy = make(clock, max_attempts=5)
    for _ in range(3):
        policy.breaker.record_failure()
    clock.advance(4.0)
    fn = Flaky(0)
    with pytest.raises(CircuitOpenError) as info:
        await policy.call(fn)
    assert info.value.retry_after == pytest.approx(6.0)
    assert info.value.__cause__ is None
    assert (fn.calls, clock.sleeps) == (0, [])
    assert policy.metrics().fail_fast == 1


@pytest.mark.anyio
async def test_many_callers_all_fail_fast_on_an_open_breaker(clock: ManualClock) -> None:
    """1,000 concurrent callers of a policy whose breaker is open all get CircuitOpenError
    without sleeping at all (the seed's wrapper slept out the open time in each)."""
    policy = make(clock, max_attempts=3)
    for _ in range(3):
        policy.breaker.record_failure()
    fn = Flaky(0)
    outcomes: list[BaseException] = []

    async def caller() -> None:
        try:
            await policy.call(fn)
        except CircuitOpenError as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(caller)
    assert len(outcomes) == 1000
    assert (fn.calls, clock.sleeps) == (0, [])
    assert policy.metrics().fail_fast == 1000


@pytest.mark.anyio
async def test_open_breaker_is_waited_out_when_asked(clock: ManualClock) -> None:
    """wait_for_breaker=True: with attempts left, the policy sleeps retry_after, then probes."""
    policy = make(clock, max_attempts=5, wait_for_breaker=True)
    assert policy.wait_for_breaker
    for _ in range(3):
        policy.breaker.record_failure()
    clock.advance(4.0)
    fn = Flaky(0)
    assert await policy.call(fn, "probe") == "probe"
    assert clock.sleeps == [pytest.approx(6.0)]
    assert policy.breaker.state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_open_breaker_is_waited_out_when_the_deadline_fits(clock: ManualClock) -> None:
    """A deadline the wait fits is a request to wait: the policy sleeps retry_after and
    probes; the same call with a deadline too short for it fails fast (next test)."""
    policy = make(clock, max_attempts=5, deadline=8.0)
    for _ in range(3):
        policy.breaker.record_failure()
    clock.advance(4.0)
    fn = Flaky(0)
    assert await policy.call(fn, "probe") == "probe"
    assert clock.sleeps == [pytest.approx(6.0)]
    assert fn.calls == 1


@pytest.mark.anyio
async def test_failures_that_open_the_breaker_are_waited_out_when_asked(
    clock: ManualClock,
) -> None:
    """wait_for_breaker=True keeps the waiting behaviour through an opening: the failure that
    opens the circuit sleeps the backoff (4 s), the refusal then sleeps max(rest of the open
    time, next backoff delay) = max(6, 8) s, and the probe succeeds."""
    policy = make(clock, max_attempts=5, wait_for_breaker=True)
    fn = Flaky(3)
    assert await policy.call(fn) == "ok"
    assert fn.calls == 4
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]


@pytest.mark.anyio
async def test_open_breaker_fails_fast_when_wait_exceeds_deadline(clock: ManualClock) -> None:
    """A retry_after that would cross the deadline is not waited: CircuitOpenError at once."""
    policy = make(clock, max_attempts=5, deadline=5.0)
    for _ in range(3):
        policy.breaker.record_failure()
    fn = Flaky(0)
    with pytest.raises(CircuitOpenError):
        await policy.call(fn)
    assert fn.calls == 0
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_forced_open_always_fails_fast(clock: ManualClock) -> None:
    """A forced-open breaker (retry_after inf) is never waited for."""
    policy = make(clock, max_attempts=5)
    policy.breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await policy.call(Flaky(0))
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_deadline_stops_retries(clock: ManualClock) -> None:
    """Call errors under a deadline: RetryError once the next sleep would cross it."""
    policy = make(clock, max_attempts=10, deadline=2.5, breaker=CircuitBreaker(99, clock=clock))
    with pytest.raises(RetryError, match="deadline"):
        await policy.call(Flaky(99))
    assert clock.sleeps == [1.0]


@pytest.mark.anyio
async def test_non_retryable_error_propagates(clock: ManualClock) -> None:
    """An error outside retry_on propagates after one attempt (and counts on the breaker)."""
    policy = make(clock, retry_on=(TimeoutError,))
    fn = Flaky(5)
    with pytest.raises(ConnectionError):
        await policy.call(fn)
    assert fn.calls == 1
    assert policy.metrics().breaker.failures == 1


@pytest.mark.anyio
async def test_policy_as_decorator(clock: ManualClock) -> None:
    """@policy wraps an async function; calls retry through the breaker."""
    policy = make(clock)
    fn = Flaky(1)

    @policy
    async def fetch(value: str) -> str:
        """Fetch a value."""
        return await fn(value)

    assert await fetch("v") == "v"
    assert fetch.__name__ == "fetch"
    assert policy.metrics().retry.attempts == 2
    with pytest.raises(TypeError, match="async"):
        policy(lambda: None)  # type: ignore[arg-type, return-value]


@pytest.mark.anyio
async def test_metrics_and_reset(clock: ManualClock) -> None:
    """metrics() combines breaker and retry counters (JSON-safe); reset() clears both."""
    policy = make(clock, max_attempts=4)
    with pytest.raises(CircuitOpenError):
        await policy.call(Flaky(99))
    d = policy.metrics().to_dict()
    json.dumps(d, allow_nan=False)
    assert d["name"] == "svc"
    assert d["breaker"]["state"] == "open"
    assert d["retry"]["attempts"] == 4
    policy.reset()
    m = policy.metrics()
    assert m.breaker.state is BreakerState.CLOSED
    assert (m.retry.attempts, m.fail_fast) == (0, 0)


def test_default_breaker_is_named_after_the_policy() -> None:
    """Without a breaker argument the policy builds one named like itself."""
    policy = ResiliencePolicy("payments")
    assert policy.breaker.name == "payments"
    assert policy.name == "payments"
    assert "payments" in repr(policy)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"deadline": -1}, "deadline"),
        ({"retry_on": 1}, "retry_on"),
        ({"breaker": "b"}, "breaker"),
        ({"backoff": 1.0}, "backoff"),
        ({"clock": 1}, "clock"),
        ({"wait_for_breaker": "yes"}, "wait_for_breaker"),
    ],
)
def test_bad_policy_options(kwargs: dict[str, object], param: str) -> None:
    """A bad option is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=param):
        ResiliencePolicy("x", **kwargs)  # type: ignore[arg-type]


# -- registry ----------------------------------------------------------------------------


def test_registry_create_and_get_existing() -> None:
    """create() registers a policy under its name; get() returns the same object."""
    registry = PolicyRegistry()
    db = registry.create("db", max_attempts=5)
    assert registry.get("db") is db
    assert db.name == "db"
    assert "db" in registry
    assert len(registry) == 1
    assert list(registry) == ["db"]


def test_registry_get_missing_raises_key_error_listing_names() -> None:
    """get() of an unknown name is a KeyError naming it and the known policies."""
    registry = PolicyRegistry()
    registry.create("db")
    with pytest.raises(KeyError, match=r"'cache'.*known: db"):
        registry.get("cache")


def test_registry_duplicate_name_is_rejected() -> None:
    """Creating a second policy with the same name is a ConfigError (a ValueError)."""
    registry = PolicyRegistry()
    registry.create("db")
    with pytest.raises(ValueError, match="'db' exists already"):
        registry.create("db")
    with pytest.raises(ConfigError, match="name"):
        registry.create("")


def test_registry_get_or_create() -> None:
    """get_or_create() creates once and then returns the existing policy."""
    registry = PolicyRegistry()
    first = registry.get_or_create("api", max_attempts=2)
    assert registry.get_or_create("api", max_attempts=9) is first
    assert len(registry) == 1


@pytest.mark.anyio
async def test_registry_all_metrics_reset_all_and_clear(clock: ManualClock) -> None:
    """all_metrics() has every policy by name; reset_all() resets them; clear() forgets."""
    registry = PolicyRegistry()
    a = registry.create(
        "a", breaker=CircuitBreaker(1, clock=clock), backoff=NO_JITTER, max_attempts=2
    )
    registry.create("b", clock=clock)
    with pytest.raises(CircuitOpenError):
        await a.call(Flaky(9))
    metrics = registry.all_metrics()
    assert sorted(metrics) == ["a", "b"]
    assert metrics["a"].breaker.state is BreakerState.OPEN
    assert metrics["b"].retry.attempts == 0
    registry.reset_all()
    assert registry.get("a").breaker.state is BreakerState.CLOSED
    assert registry.all_metrics()["a"].retry.attempts == 0
    registry.clear()
    assert len(registry) == 0
    assert "a" not in registry
