"""CircuitBreaker: states, thresholds, leases, listeners, metrics, waiting, concurrency."""

from __future__ import annotations

import asyncio
import json
import math

import anyio
import pytest

from resilient_conn import CircuitOpenError, ConfigError
from resilient_conn.resilience.breaker import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from tests._clock_fake import ManualClock

S = BreakerState


class Boom(Exception):
    """The guarded service failed."""


async def ok() -> str:
    """A guarded call that succeeds."""
    return "ok"


async def boom() -> None:
    """A guarded call that fails."""
    raise Boom("down")


def make(clock: ManualClock, **kwargs: object) -> CircuitBreaker:
    """A breaker with small thresholds on the manual clock."""
    options: dict[str, object] = {
        "failure_threshold": 3,
        "recovery_timeout": 10.0,
        "success_threshold": 2,
        "name": "svc",
        "clock": clock,
    }
    options.update(kwargs)
    return CircuitBreaker(**options)  # type: ignore[arg-type]


async def fail_n(breaker: CircuitBreaker, n: int) -> None:
    """Make ``n`` failing calls through the breaker."""
    for _ in range(n):
        with pytest.raises(Boom):
            await breaker.call(boom)


async def open_breaker(breaker: CircuitBreaker) -> None:
    """Drive a fresh breaker to OPEN."""
    await fail_n(breaker, breaker.failure_threshold)
    assert breaker.state is S.OPEN


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock starting at 1000.0."""
    return ManualClock()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep RESILIENT_CONN_BREAKER_* variables of the environment out of these tests."""
    keys = ("FAILURE_THRESHOLD", "RECOVERY_TIMEOUT", "SUCCESS_THRESHOLD", "HALF_OPEN_MAX_CALLS")
    for key in keys:
        monkeypatch.delenv(f"RESILIENT_CONN_BREAKER_{key}", raising=False)


def test_defaults_are_the_documented_ones() -> None:
    """CircuitBreaker() uses thresholds 5 / 2, recovery 60 s, one probe at a time."""
    b = CircuitBreaker()
    assert (b.failure_threshold, b.recovery_timeout, b.success_threshold) == (5, 60.0, 2)
    assert b.half_open_max_calls == 1
    assert b.state is S.CLOSED
    assert b.retry_after == 0.0


@pytest.mark.anyio
async def test_closed_breaker_passes_calls_and_counts_them(clock: ManualClock) -> None:
    """While CLOSED, call() and async with run the guarded code and count successes."""
    b = make(clock)
    assert await b.call(ok) == "ok"
    async with b:
        pass
    m = b.metrics()
    assert (m.state, m.calls, m.successes, m.failures, m.rejections) == (S.CLOSED, 2, 2, 0, 0)


@pytest.mark.anyio
async def test_opens_after_failure_threshold_consecutive_failures(clock: ManualClock) -> None:
    """failure_threshold failures in a row open the circuit; fewer do not."""
    b = make(clock)
    await fail_n(b, 2)
    assert b.state is S.CLOSED
    assert b.metrics().consecutive_failures == 2
    await fail_n(b, 1)
    assert b.state is S.OPEN
    assert b.metrics().opened_at == clock.now()


@pytest.mark.anyio
async def test_a_success_resets_the_consecutive_failure_count(clock: ManualClock) -> None:
    """Failures separated by a success do not add up to the threshold."""
    b = make(clock)
    await fail_n(b, 2)
    await b.call(ok)
    await fail_n(b, 2)
    assert b.state is S.CLOSED
    assert b.metrics().consecutive_failures == 2


@pytest.mark.anyio
async def test_open_breaker_rejects_with_retry_after(clock: ManualClock) -> None:
    """OPEN refuses without calling fn; CircuitOpenError carries the time left and the name."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(4.0)
    called = False

    async def fn() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitOpenError) as info:
        await b.call(fn)
    assert not called
    assert info.value.retry_after == pytest.approx(6.0)
    assert info.value.name == "svc"
    assert b.retry_after == pytest.approx(6.0)
    with pytest.raises(CircuitOpenError):
        async with b:
            pass
    with pytest.raises(CircuitOpenError):
        b.acquire()
    assert b.metrics().rejections == 3


@pytest.mark.anyio
async def test_half_open_after_recovery_timeout_then_closes(clock: ManualClock) -> None:
    """After recovery_timeout the state reads HALF_OPEN; success_threshold successes close."""
    b = make(clock)
    seen: list[tuple[BreakerState, BreakerState, str]] = []
    b.add_listener(lambda t: seen.append((t.old, t.new, t.reason)))
    await open_breaker(b)
    clock.advance(9.999)
    assert b.state is S.OPEN
    clock.advance(0.001)
    assert b.state is S.HALF_OPEN
    assert b.retry_after == 0.0
    await b.call(ok)
    assert b.state is S.HALF_OPEN
    await b.call(ok)
    assert b.state is S.CLOSED
    assert [(o, n) for o, n, _ in seen] == [
        (S.CLOSED, S.OPEN),
        (S.OPEN, S.HALF_OPEN),
        (S.HALF_OPEN, S.CLOSED),
    ]
    assert seen[0][2] == "3 consecutive failures"


@pytest.mark.anyio
async def test_half_open_failure_reopens_for_another_timeout(clock: ManualClock) -> None:
    """One failed probe re-opens the circuit for a full recovery_timeout."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(10.0)
    await fail_n(b, 1)
    assert b.state is S.OPEN
    assert b.retry_after == pytest.approx(10.0)
    assert b.metrics().times_opened == 2


@pytest.mark.anyio
async def test_open_time_grows_with_recovery_multiplier(clock: ManualClock) -> None:
    """With recovery_multiplier, each re-open doubles the open time up to the maximum."""
    b = make(clock, recovery_multiplier=2.0, max_recovery_timeout=35.0)
    await open_breaker(b)
    timeouts = [b.retry_after]
    for _ in range(3):
        clock.advance(b.retry_after)
        await fail_n(b, 1)
        timeouts.append(b.retry_after)
    assert timeouts == pytest.approx([10.0, 20.0, 35.0, 35.0])
    clock.advance(35.0)
    await b.call(ok)
    await b.call(ok)
    assert b.state is S.CLOSED
    await fail_n(b, 3)
    assert b.retry_after == pytest.approx(10.0)


@pytest.mark.anyio
async def test_half_open_admits_only_half_open_max_calls(clock: ManualClock) -> None:
    """In HALF_OPEN a second probe is refused with retry_after 0.0 while the first is out."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(10.0)
    lease = b.acquire()
    assert lease.probe
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_after == 0.0
    lease.release()
    b.acquire().success()
    assert b.metrics().half_open_successes == 1


@pytest.mark.anyio
async def test_metrics_snapshot(clock: ManualClock) -> None:
    """metrics() reports counters, the state, retry_after and a JSON-safe dict."""
    b = make(clock)
    await b.call(ok)
    await fail_n(b, 3)
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    clock.advance(2.5)
    m = b.metrics()
    assert (m.calls, m.successes, m.failures, m.rejections) == (4, 1, 3, 1)
    assert (m.state, m.consecutive_failures, m.times_opened, m.transitions) == (S.OPEN, 3, 1, 1)
    assert m.retry_after == pytest.approx(7.5)
    assert m.last_failure == "Boom('down')"
    assert m.name == "svc"
    d = m.to_dict()
    assert d["state"] == "open"
    json.dumps(d, allow_nan=False)
    b.force_open()
    assert b.metrics().to_dict()["retry_after"] is None


@pytest.mark.anyio
async def test_reset_closes_and_clears_the_episode(clock: ManualClock) -> None:
    """reset() closes an open circuit, clears consecutive failures, keeps the totals."""
    b = make(clock)
    await open_breaker(b)
    b.reset()
    m = b.metrics()
    assert (m.state, m.consecutive_failures, m.failures, m.opened_at) == (S.CLOSED, 0, 3, None)
    assert await b.call(ok) == "ok"


@pytest.mark.anyio
async def test_force_open_refuses_until_reset(clock: ManualClock) -> None:
    """FORCED_OPEN refuses with retry_after inf, ignores time passing, ends with reset()."""
    b = make(clock)
    b.force_open()
    clock.advance(1e6)
    assert b.state is S.FORCED_OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert math.isinf(info.value.retry_after)
    assert math.isinf(b.retry_after)
    b.reset()
    assert await b.call(ok) == "ok"


@pytest.mark.anyio
async def test_disable_admits_everything_and_records_nothing(clock: ManualClock) -> None:
    """DISABLED lets failing calls through without opening or counting; reset re-enables."""
    b = make(clock)
    await fail_n(b, 2)
    b.disable()
    await fail_n(b, 10)
    assert b.state is S.DISABLED
    assert b.metrics().failures == 2
    b.reset()
    await fail_n(b, 3)
    assert b.state is S.OPEN


@pytest.mark.anyio
async def test_sync_and_async_listeners_get_transitions(clock: ManualClock) -> None:
    """Sync listeners run inline; async ones run as tasks; both get frozen transitions."""
    b = make(clock)
    sync_seen: list[BreakerTransition] = []
    async_seen: list[BreakerTransition] = []
    done = anyio.Event()

    async def on_async(t: BreakerTransition) -> None:
        async_seen.append(t)
        done.set()

    b.add_listener(sync_seen.append)
    b.add_listener(on_async)
    await open_breaker(b)
    assert len(sync_seen) == 1
    t = sync_seen[0]
    assert (t.old, t.new, t.at, t.name) == (S.CLOSED, S.OPEN, clock.now(), "svc")
    with pytest.raises(AttributeError):
        t.reason = "x"  # type: ignore[misc]
    with anyio.fail_after(2):
        await done.wait()
    assert async_seen == sync_seen
    await b.aclose()


@pytest.mark.anyio
async def test_raising_listener_is_isolated(clock: ManualClock) -> None:
    """A listener that raises neither breaks the breaker nor starves other listeners."""
    b = make(clock)
    seen: list[BreakerState] = []

    def bad(t: BreakerTransition) -> None:
        raise RuntimeError("listener bug")

    async_runs: list[BreakerState] = []
    both_ran = anyio.Event()

    async def bad_async(t: BreakerTransition) -> None:
        async_runs.append(t.new)
        if len(async_runs) == 2:
            both_ran.set()
        raise RuntimeError("async listener bug")

    b.add_listener(bad)
    b.add_listener(bad_async)
    b.add_listener(lambda t: seen.append(t.new))
    await open_breaker(b)
    b.reset()
    assert seen == [S.OPEN, S.CLOSED]
    assert await b.call(ok) == "ok"
    with anyio.fail_after(2):
        await both_ran.wait()
    assert async_runs == [S.OPEN, S.CLOSED]
    await b.aclose()


@pytest.mark.anyio
async def test_unsubscribe_stops_delivery(clock: ManualClock) -> None:
    """The handle returned by add_listener removes the listener (twice is harmless)."""
    b = make(clock)
    seen: list[BreakerState] = []
    unsubscribe = b.add_listener(lambda t: seen.append(t.new))
    b.force_open()
    unsubscribe()
    unsubscribe()
    b.reset()
    assert seen == [S.FORCED_OPEN]


@pytest.mark.anyio
async def test_cancelled_probe_releases_the_slot_and_does_not_count(clock: ManualClock) -> None:
    """Cancelling a HALF_OPEN probe frees its slot and records neither success nor failure."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(10.0)
    entered = anyio.Event()

    async def hang() -> None:
        entered.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:

        async def probe() -> None:
            async with b:
                await hang()

        tg.start_soon(probe)
        with anyio.fail_after(2):
            await entered.wait()
        assert b.metrics().half_open_in_flight == 1
        tg.cancel_scope.cancel()
    m = b.metrics()
    assert (m.state, m.half_open_in_flight, m.failures, m.successes) == (S.HALF_OPEN, 0, 3, 0)
    b.acquire().success()  # the slot is free again
    assert b.metrics().half_open_successes == 1


@pytest.mark.anyio
async def test_cancelled_call_in_closed_state_does_not_count(clock: ManualClock) -> None:
    """Cancellation of a guarded call() is not a failure even with failure_on=BaseException."""
    b = make(clock, failure_threshold=1, failure_on=(BaseException,))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await b.call(anyio.sleep, 1)
    assert b.state is S.CLOSED
    assert b.metrics().failures == 0


@pytest.mark.anyio
async def test_failure_on_types_decide_what_counts(clock: ManualClock) -> None:
    """Exceptions outside failure_on propagate but count as successes (circuit stays closed)."""
    b = make(clock, failure_threshold=1, failure_on=(ConnectionError,))

    async def bad_value() -> None:
        raise ValueError("caller's problem")

    for _ in range(3):
        with pytest.raises(ValueError, match="caller"):
            await b.call(bad_value)
        with pytest.raises(ValueError, match="caller"):
            async with b:
                raise ValueError("caller's problem")
    assert b.state is S.CLOSED
    assert b.metrics().successes == 6
    with pytest.raises(ConnectionError):
        async with b:
            raise ConnectionError("down")
    assert b.state is S.OPEN


@pytest.mark.anyio
async def test_failure_on_accepts_a_class_or_a_predicate(clock: ManualClock) -> None:
    """failure_on may be one exception class or a predicate over the exception."""
    by_class = make(clock, failure_threshold=1, failure_on=Boom)
    await fail_n(by_class, 1)
    assert by_class.state is S.OPEN

    pred = make(clock, failure_threshold=1, failure_on=lambda e: "fatal" in str(e))
    with pytest.raises(Boom):
        async with pred:
            raise Boom("harmless")
    assert pred.state is S.CLOSED
    with pytest.raises(Boom):
        async with pred:
            raise Boom("fatal")
    assert pred.state is S.OPEN


@pytest.mark.anyio
async def test_raising_failure_predicate_counts_as_failure(clock: ManualClock) -> None:
    """A failure_on predicate that itself raises counts the call as a failure."""

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    b = make(clock, failure_threshold=1, failure_on=broken)
    with pytest.raises(Boom):
        await b.call(boom)
    assert b.state is S.OPEN


@pytest.mark.anyio
async def test_wait_until_ready_sleeps_exactly_retry_after(clock: ManualClock) -> None:
    """wait_until_ready() on an OPEN circuit sleeps retry_after once via the clock."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(3.0)
    expected = b.retry_after
    with anyio.fail_after(2):
        await b.wait_until_ready()
    assert clock.sleeps == [pytest.approx(expected)]
    assert expected == pytest.approx(7.0)
    assert b.state is S.HALF_OPEN
    await b.wait_until_ready()  # CLOSED/HALF_OPEN with a free slot: returns at once
    assert len(clock.sleeps) == 1


@pytest.mark.anyio
async def test_wait_until_ready_waits_for_a_probe_slot(clock: ManualClock) -> None:
    """With the probe slot taken, wait_until_ready() returns once the lease is released."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(10.0)
    lease = b.acquire()
    ready = anyio.Event()

    async def waiter() -> None:
        await b.wait_until_ready()
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not ready.is_set()
        lease.release()
        with anyio.fail_after(2):
            await ready.wait()
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_wait_until_ready_waits_for_reset_when_forced_open(clock: ManualClock) -> None:
    """FORCED_OPEN: wait_until_ready() returns only after reset()."""
    b = make(clock)
    b.force_open()
    ready = anyio.Event()

    async def waiter() -> None:
        await b.wait_until_ready()
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not ready.is_set()
        b.reset()
        with anyio.fail_after(2):
            await ready.wait()


@pytest.mark.anyio
async def test_lease_outcomes_are_idempotent(clock: ManualClock) -> None:
    """Only the first of success/failure/release counts; later calls do nothing."""
    b = make(clock, failure_threshold=1)
    lease = b.acquire()
    lease.success()
    lease.failure(Boom())
    lease.release()
    assert lease.done
    assert b.state is S.CLOSED
    assert (b.metrics().successes, b.metrics().failures) == (1, 0)


@pytest.mark.anyio
async def test_record_success_closes_while_probe_lease_is_held(clock: ManualClock) -> None:
    """Heartbeats on a probe link close the circuit; the lease's later success is harmless."""
    b = make(clock)
    await open_breaker(b)
    clock.advance(10.0)
    lease = b.acquire()
    b.record_success()
    assert b.state is S.HALF_OPEN
    b.record_success()
    assert b.state is S.CLOSED
    lease.success()
    lease.release()
    m = b.metrics()
    assert (m.state, m.half_open_in_flight, m.consecutive_failures) == (S.CLOSED, 0, 0)
    await fail_n(b, 2)
    assert b.state is S.CLOSED


@pytest.mark.anyio
async def test_record_failure_counts_without_a_lease(clock: ManualClock) -> None:
    """record_failure() opens a CLOSED circuit at the threshold and is ignored while OPEN."""
    b = make(clock)
    for _ in range(3):
        b.record_failure(Boom("x"))
    assert b.state is S.OPEN
    b.record_failure()
    b.record_success()
    m = b.metrics()
    assert (m.failures, m.ignored) == (3, 2)


@pytest.mark.anyio
async def test_calls_admitted_before_half_open_do_not_count_as_probes(clock: ManualClock) -> None:
    """A slow call admitted while CLOSED that succeeds in HALF_OPEN does not close it."""
    b = make(clock, success_threshold=1)
    old = b.acquire()
    await open_breaker(b)
    clock.advance(10.0)
    assert b.state is S.HALF_OPEN
    old.success()
    assert b.state is S.HALF_OPEN
    assert b.metrics().ignored == 1


@pytest.mark.anyio
async def test_lease_is_a_sync_context_manager(clock: ManualClock) -> None:
    """With breaker.acquire(): records success on a clean exit, failure on an error."""
    b = make(clock, failure_threshold=1)
    with b.acquire():
        pass
    with pytest.raises(Boom), b.acquire():
        raise Boom
    assert b.state is S.OPEN


@pytest.mark.anyio
@pytest.mark.parametrize("max_calls", [1, 3])
async def test_hundred_tasks_on_half_open_only_the_allowed_probes_pass(
    clock: ManualClock, max_calls: int
) -> None:
    """100 concurrent `async with` on HALF_OPEN: exactly half_open_max_calls get through."""
    b = make(clock, half_open_max_calls=max_calls, success_threshold=10)
    await open_breaker(b)
    clock.advance(10.0)
    release = anyio.Event()
    admitted = 0
    retry_afters: list[float] = []

    async def hit() -> None:
        nonlocal admitted
        try:
            async with b:
                admitted += 1
                await release.wait()
        except CircuitOpenError as exc:
            retry_afters.append(exc.retry_after)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(hit)
            await anyio.wait_all_tasks_blocked()
            assert admitted == max_calls
            assert retry_afters == [0.0] * (100 - max_calls)
            release.set()
    m = b.metrics()
    assert (m.half_open_successes, m.half_open_in_flight, m.rejections) == (
        max_calls,
        0,
        100 - max_calls,
    )


@pytest.mark.anyio
async def test_state_reads_half_open_and_emits_once(clock: ManualClock) -> None:
    """The lazy OPEN -> HALF_OPEN move emits exactly one transition, however often read."""
    b = make(clock)
    seen: list[BreakerState] = []
    b.add_listener(lambda t: seen.append(t.new))
    await open_breaker(b)
    clock.advance(10.0)
    assert "half_open" in repr(b)
    for _ in range(5):
        assert b.state is S.HALF_OPEN
    assert seen == [S.OPEN, S.HALF_OPEN]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"recovery_timeout": -1.0}, "recovery_timeout"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"recovery_multiplier": 0.5}, "recovery_multiplier"),
        ({"recovery_timeout": 10.0, "max_recovery_timeout": 5.0}, "max_recovery_timeout"),
        ({"failure_on": (ValueError, "x")}, "failure_on"),
        ({"failure_on": 42}, "failure_on"),
        ({"clock": object()}, "clock"),
    ],
)
def test_bad_input_raises_config_error_naming_the_parameter(
    kwargs: dict[str, object], param: str
) -> None:
    """A bad argument is a ConfigError whose message names the parameter."""
    with pytest.raises(ConfigError, match=param):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_breaker_works_without_an_event_loop() -> None:
    """The Sans-I/O core (acquire, outcomes, state) needs no running event loop."""
    clock = ManualClock()
    b = make(clock)
    for _ in range(3):
        b.acquire().failure(Boom())
    assert b.state is S.OPEN
    clock.advance(10.0)
    b.acquire().success()
    b.acquire().success()
    assert b.state is S.CLOSED
    assert asyncio.iscoroutinefunction(b.wait_until_ready)
