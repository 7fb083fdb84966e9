"""retry() and @retrying: attempts, backoff, deadline, predicates, hooks, cancellation, metrics."""

from __future__ import annotations

import anyio
import pytest

from resilient_conn import ConfigError, RetryError
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.resilience.retry import (
    RetryState,
    reset_retry_metrics,
    retry,
    retry_metrics,
    retrying,
)
from tests._clock_fake import ManualClock


class Flaky:
    """An async callable that fails ``failures`` times, then returns ``"done"``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        """Fail the first ``failures`` calls, then succeed."""
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock: sleeps are recorded and skipped."""
    return ManualClock()


NO_JITTER = Backoff(1.0, 60.0, 2.0, "none")


@pytest.mark.anyio
async def test_success_on_first_attempt_does_not_sleep(clock: ManualClock) -> None:
    """A call that succeeds at once is awaited once, with no sleep."""
    fn = Flaky(0)
    assert await retry(fn, clock=clock) == "done"
    assert fn.calls == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_success_after_failures(clock: ManualClock) -> None:
    """Two failures then a success: three attempts, two sleeps, the result returned."""
    fn = Flaky(2)
    assert await retry(fn, max_attempts=3, backoff=NO_JITTER, clock=clock) == "done"
    assert fn.calls == 3
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.anyio
async def test_exhaustion_raises_retry_error_chained_to_last_error(clock: ManualClock) -> None:
    """After max_attempts failures RetryError is raised from the last error."""
    fn = Flaky(10)
    with pytest.raises(RetryError) as info:
        await retry(fn, max_attempts=4, backoff=NO_JITTER, clock=clock)
    err = info.value
    assert err.attempts == 4
    assert isinstance(err.__cause__, ConnectionError)
    assert err.__cause__ is err.last_error
    assert str(err.__cause__) == "failure 4"
    assert "max_attempts=4" in str(err)
    assert fn.calls == 4
    assert len(clock.sleeps) == 3


@pytest.mark.anyio
async def test_delays_grow_exponentially_without_jitter(clock: ManualClock) -> None:
    """With jitter "none" the sleeps are initial * 2**n."""
    with pytest.raises(RetryError):
        await retry(Flaky(99), max_attempts=6, initial_delay=0.5, jitter="none", clock=clock)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.anyio
async def test_max_delay_caps_the_sleeps(clock: ManualClock) -> None:
    """max_delay caps every sleep."""
    with pytest.raises(RetryError):
        await retry(
            Flaky(99), max_attempts=7, initial_delay=1.0, max_delay=5.0, jitter="none", clock=clock
        )
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


@pytest.mark.anyio
async def test_default_is_three_attempts_with_jittered_delays(clock: ManualClock) -> None:
    """Defaults: 3 attempts, full jitter within [0, 1] then [0, 2] seconds."""
    fn = Flaky(99)
    with pytest.raises(RetryError):
        await retry(fn, clock=clock)
    assert fn.calls == 3
    assert 0.0 <= clock.sleeps[0] <= 1.0
    assert 0.0 <= clock.sleeps[1] <= 2.0


@pytest.mark.anyio
async def test_metrics_count_attempts_successes_retries_exhaustions(clock: ManualClock) -> None:
    """Process-wide counters and a decorated function's own counters add up."""
    reset_retry_metrics()

    @retrying(max_attempts=2, backoff=NO_JITTER, clock=clock)
    async def sometimes(fn: Flaky) -> str:
        return await fn()

    assert await sometimes(Flaky(1)) == "done"
    with pytest.raises(RetryError):
        await sometimes(Flaky(5))
    with pytest.raises(KeyError):
        await retry(Flaky(1, KeyError), retry_on=(ConnectionError,), clock=clock)
    own = sometimes.retry_stats.snapshot()
    assert (own.attempts, own.successes, own.retries, own.exhaustions) == (4, 1, 2, 1)
    total = retry_metrics()
    assert (total.attempts, total.successes, total.retries, total.exhaustions) == (5, 1, 2, 1)
    assert total.not_retried == 1
    assert total.to_dict()["attempts"] == 5
    sometimes.retry_stats.reset()
    assert sometimes.retry_stats.snapshot().attempts == 0


@pytest.mark.anyio
async def test_decorator_passes_arguments_and_keeps_metadata(clock: ManualClock) -> None:
    """@retrying forwards args/kwargs, retries, and keeps the function's name and doc."""
    calls: list[tuple[int, str]] = []

    @retrying(max_attempts=3, backoff=NO_JITTER, clock=clock)
    async def add(a: int, *, label: str) -> str:
        """Add with a label."""
        calls.append((a, label))
        if len(calls) < 2:
            raise ConnectionError("once")
        return f"{label}={a + 1}"

    assert await add(41, label="x") == "x=42"
    assert calls == [(41, "x"), (41, "x")]
    assert add.__name__ == "add"
    assert add.__doc__ == "Add with a label."


def test_decorator_rejects_sync_functions() -> None:
    """@retrying on a plain function is a TypeError at decoration time."""
    with pytest.raises(TypeError, match="async"):

        @retrying()
        def sync() -> None:  # pragma: no cover - never called
            """Not async."""


@pytest.mark.anyio
async def test_deadline_stops_before_a_sleep_that_would_cross_it(clock: ManualClock) -> None:
    """With deadline 5 s and delays 1, 2, 4: the third sleep (ending at 7 s) is not started."""
    fn = Flaky(99)
    with pytest.raises(RetryError) as info:
        await retry(fn, max_attempts=10, backoff=NO_JITTER, deadline=5.0, clock=clock)
    assert clock.sleeps == [1.0, 2.0]
    assert fn.calls == 3
    assert "deadline" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


@pytest.mark.anyio
async def test_cancellation_is_never_retried(clock: ManualClock) -> None:
    """A cancelled attempt propagates at once even with retry_on=BaseException."""
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05) as scope:
        await retry(slow, retry_on=(BaseException,), max_attempts=5, clock=clock)
    assert scope.cancelled_caught
    assert calls == 1
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_non_retryable_error_propagates_unchanged(clock: ManualClock) -> None:
    """An error outside retry_on is raised as is after one attempt."""
    fn = Flaky(3, ValueError)
    with pytest.raises(ValueError, match="failure 1"):
        await retry(fn, retry_on=(ConnectionError,), clock=clock)
    assert fn.calls == 1


@pytest.mark.anyio
async def test_retry_on_predicate(clock: ManualClock) -> None:
    """A predicate decides: transient errors are retried, others are not."""

    def transient(exc: BaseException) -> bool:
        return "transient" in str(exc)

    attempts = 0

    async def fn() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("transient glitch")
        raise RuntimeError("permanent")

    with pytest.raises(RuntimeError, match="permanent"):
        await retry(fn, retry_on=transient, max_attempts=5, backoff=NO_JITTER, clock=clock)
    assert attempts == 2


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_before_sleep_gets_the_retry_state(clock: ManualClock, kind: str) -> None:
    """before_sleep (sync or async) receives attempt, delay, error and elapsed time."""
    seen: list[RetryState] = []

    def hook(state: RetryState) -> None:
        seen.append(state)

    async def ahook(state: RetryState) -> None:
        seen.append(state)

    fn = Flaky(2)
    await retry(
        fn,
        max_attempts=3,
        backoff=NO_JITTER,
        before_sleep=hook if kind == "sync" else ahook,
        clock=clock,
    )
    assert [(s.attempt, s.delay, str(s.error)) for s in seen] == [
        (1, 1.0, "failure 1"),
        (2, 2.0, "failure 2"),
    ]
    assert [s.elapsed for s in seen] == [0.0, 1.0]
    with pytest.raises(AttributeError):
        seen[0].attempt = 9  # type: ignore[misc]


@pytest.mark.anyio
async def test_raising_before_sleep_does_not_break_the_retry(clock: ManualClock) -> None:
    """A before_sleep hook that raises is logged and ignored; the retry goes on."""

    def bad(state: RetryState) -> None:
        raise RuntimeError("hook bug")

    assert await retry(Flaky(1), before_sleep=bad, backoff=NO_JITTER, clock=clock) == "done"


@pytest.mark.anyio
async def test_explicit_options_override_a_given_backoff(clock: ManualClock) -> None:
    """initial_delay / max_delay / jitter apply on top of a backoff that is passed in."""
    with pytest.raises(RetryError):
        await retry(Flaky(9), max_attempts=3, backoff=NO_JITTER, initial_delay=3.0, clock=clock)
    assert clock.sleeps == [3.0, 6.0]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": -1.0}, "deadline"),
        ({"initial_delay": -1.0}, "initial_delay"),
        ({"jitter": "sometimes"}, "jitter"),
        ({"retry_on": ("nope",)}, "retry_on"),
        ({"retry_on": 5}, "retry_on"),
        ({"backoff": 3}, "backoff"),
        ({"before_sleep": 3}, "before_sleep"),
        ({"clock": object()}, "clock"),
    ],
)
def test_bad_options_raise_config_error_naming_them(kwargs: dict[str, object], param: str) -> None:
    """Bad options are rejected when the decorator is built, naming the option."""
    with pytest.raises(ConfigError, match=param):
        retrying(**kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_retry_validates_options_before_calling(clock: ManualClock) -> None:
    """retry() with a bad option raises ConfigError without awaiting fn."""
    fn = Flaky(0)
    with pytest.raises(ConfigError, match="max_attempts"):
        await retry(fn, max_attempts=0, clock=clock)
    assert fn.calls == 0
