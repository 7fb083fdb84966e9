"""The testing switch: with set_testing() on, the default clock's waits take no real time."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from resilient_conn import (
    SYSTEM_CLOCK,
    Backoff,
    BreakerState,
    CircuitBreaker,
    ResiliencePolicy,
    RetryError,
    is_testing,
    retry,
    set_testing,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "primitives.py"


@pytest.fixture(autouse=True)
def _restore_mode() -> Iterator[None]:
    """Leave the switch as it was found, whatever a test does."""
    before = is_testing()
    yield
    set_testing(before)


@pytest.mark.anyio
async def test_retry_with_big_delays_returns_instantly() -> None:
    """retry() on the default clock with 100 s+ delays finishes at once; now() moved 700 s."""
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with set_testing(), anyio.fail_after(2):
        before = SYSTEM_CLOCK.now()
        with pytest.raises(RetryError):
            await retry(
                failing, max_attempts=4, initial_delay=100.0, max_delay=1000.0, jitter="none"
            )
        advanced = SYSTEM_CLOCK.now() - before
    assert calls == 4
    assert 700.0 <= advanced < 702.0  # 100 + 200 + 400 skipped, plus a little real time


@pytest.mark.anyio
async def test_breaker_recovery_elapses_through_wait_until_ready() -> None:
    """An hour-long recovery timeout 'elapses' at once: the breaker reads HALF_OPEN after it."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=3600.0)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with set_testing(), anyio.fail_after(2):
        await breaker.wait_until_ready()
    assert breaker.state is BreakerState.HALF_OPEN


@pytest.mark.anyio
async def test_policy_waits_out_an_open_breaker_instantly() -> None:
    """A policy asked to wait 60 s for an open breaker, backing off, still returns at once."""
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("down")
        return "up"

    policy = ResiliencePolicy(
        "switch",
        breaker=CircuitBreaker(failure_threshold=1, recovery_timeout=60.0, success_threshold=1),
        backoff=Backoff(30.0, 60.0, jitter="none"),
        max_attempts=5,
        wait_for_breaker=True,
    )
    with set_testing(), anyio.fail_after(2):
        assert await policy.call(flaky) == "up"
    assert policy.breaker.state is BreakerState.CLOSED


def test_context_manager_restores_the_previous_mode() -> None:
    """set_testing() as a context manager restores whatever mode was in force before."""
    set_testing(False)
    with set_testing():
        assert is_testing()
        with set_testing(False):
            assert not is_testing()
        assert is_testing()
    assert not is_testing()
    set_testing(True)
    with set_testing(False):
        assert not is_testing()
    assert is_testing()


@pytest.mark.anyio
async def test_switch_off_means_real_sleeping() -> None:
    """With the switch off, the default clock sleeps for real (a short wait is not skipped)."""
    set_testing(False)
    before = SYSTEM_CLOCK.now()
    await SYSTEM_CLOCK.sleep(0.02)
    assert SYSTEM_CLOCK.now() - before >= 0.015


@pytest.mark.anyio
async def test_primitives_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/primitives.py runs to completion at once and shows each primitive working."""
    spec = importlib.util.spec_from_file_location("primitives_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with anyio.fail_after(5):
        await module.main()
    out = capsys.readouterr().out
    assert "breaker demo: half_open -> closed" in out
    assert "got value-of-b after 3 calls" in out
    assert "gave up: gave up after 2 attempt(s)" in out
    assert "got value-of-c after 4 calls" in out
    assert not is_testing()
