"""FakeClock: time moves only when the test says so, and sleepers wake exactly then."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from resilient_conn import Clock
from resilient_conn.testing import FakeClock

pytestmark = pytest.mark.anyio


def test_fake_clock_is_a_clock() -> None:
    """FakeClock satisfies the library's Clock protocol (runtime-checkable)."""
    assert isinstance(FakeClock(), Clock)


def test_now_starts_at_start_and_moves_only_on_advance() -> None:
    """now() is the start value until advance() moves it by exactly the amount."""
    clock = FakeClock(100.0)
    assert clock.now() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
    clock.advance_to(101.0)  # never backwards
    assert clock.now() == 102.5


async def test_sleep_wakes_exactly_when_advanced_past_the_deadline() -> None:
    """A sleep(5) stays asleep at +4.999 and wakes once the clock reaches +5."""
    clock = FakeClock()
    woke_at: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(5)
        woke_at.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.wait_for_sleepers(1)
        clock.advance(4.999)
        await anyio.wait_all_tasks_blocked()
        assert woke_at == []
        assert clock.sleepers == 1
        clock.advance(0.001)
    assert woke_at == [pytest.approx(5.0)]
    assert clock.sleepers == 0


async def test_advance_wakes_sleepers_in_deadline_order() -> None:
    """One big advance wakes due sleepers earliest deadline first, and leaves later ones."""
    clock = FakeClock()
    order: list[int] = []

    async def sleeper(seconds: int) -> None:
        await clock.sleep(seconds)
        order.append(seconds)

    async with anyio.create_task_group() as tg:
        for seconds in (3, 1, 2, 10):
            tg.start_soon(sleeper, seconds)
        await clock.wait_for_sleepers(4)
        assert clock.next_deadline == 1
        clock.advance(5)
        await anyio.wait_all_tasks_blocked()
        assert order == [1, 2, 3]
        assert clock.sleepers == 1
        clock.advance(5)
    assert order == [1, 2, 3, 10]


async def test_advance_to_next_jumps_to_the_earliest_deadline() -> None:
    """advance_to_next() waits for a sleeper, then moves time to exactly its deadline."""
    clock = FakeClock(10.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 7)
        tg.start_soon(clock.sleep, 3)
        assert await clock.advance_to_next() == 13.0
        assert await clock.advance_to_next() == 17.0


async def test_auto_advance_makes_sleep_move_the_clock_and_return() -> None:
    """With auto_advance, sleep(s) returns at once and now() moves by s (backoff tests)."""
    clock = FakeClock(auto_advance=True)
    with anyio.fail_after(1):
        for delay in (1.0, 2.0, 4.0):
            await clock.sleep(delay)
    assert clock.now() == 7.0
    assert clock.sleeps == [1.0, 2.0, 4.0]


async def test_auto_advance_also_wakes_other_sleepers_that_became_due() -> None:
    """A sleeper waiting 2 s wakes when another task's auto-advancing sleep passes it."""
    clock = FakeClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(2)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.wait_for_sleepers(1)
        clock.auto_advance = True
        await clock.sleep(3)
    assert woke == [3.0]


async def test_zero_and_negative_sleeps_only_yield_and_are_recorded() -> None:
    """sleep(0) and sleep(-1) return without advancing time; sleeps records every request."""
    clock = FakeClock()
    with anyio.fail_after(1):
        await clock.sleep(0)
        await clock.sleep(-1)
    assert clock.now() == 0.0
    assert clock.sleeps == [0, -1]
    assert clock.sleep_count == 2


async def test_cancelled_sleeper_is_forgotten() -> None:
    """A cancelled sleep no longer counts as a sleeper and is not woken later."""
    clock = FakeClock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 5)
        await clock.wait_for_sleepers(1)
        tg.cancel_scope.cancel()
    assert clock.sleepers == 0
    assert clock.next_deadline is None
    clock.advance(10)  # nothing to wake, nothing breaks


async def test_wait_for_sleepers_times_out_when_nobody_sleeps() -> None:
    """wait_for_sleepers raises TimeoutError instead of hanging."""
    with pytest.raises(TimeoutError):
        await FakeClock().wait_for_sleepers(1, timeout=0.05)


def test_sleeps_history_is_bounded_but_the_count_is_total() -> None:
    """Only the last `history` durations are kept; sleep_count counts every call."""
    clock = FakeClock(auto_advance=True, history=2)

    async def main() -> None:
        for delay in (1, 2, 3):
            await clock.sleep(delay)

    anyio.run(main)
    assert clock.sleeps == [2, 3]
    assert clock.sleep_count == 3


def test_bad_arguments_raise_value_error_naming_them() -> None:
    """Time never goes backwards; a non-finite start or a bad history is rejected."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(float("inf"))
    with pytest.raises(ValueError, match="start"):
        FakeClock(float("nan"))
    with pytest.raises(ValueError, match="history"):
        FakeClock(history=0)


async def test_sleep_nan_is_rejected() -> None:
    """A NaN duration is a ValueError, not a sleep that never ends."""
    with pytest.raises(ValueError, match="seconds"):
        await FakeClock().sleep(float("nan"))
