"""The coordinator's window of dials in flight: serial redials after a quiet spell, growth
with handshakes up to max_dialing, first come first served, cancellation, the probe's pass,
and a live connection that frees its slot at the handshake."""

from __future__ import annotations

import contextlib

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_conn import ConfigError, RecoveryCoordinator, RecoverySettings, ResilientConnection
from resilient_conn.coordination import REASON_DIALING, DialKind, LocalStore, Phase
from resilient_conn.coordination._window import IDLE_RESTART, DialWindow
from resilient_conn.testing import FakeClock, ScriptedServer

pytestmark = pytest.mark.anyio


def _coordinator(clock: FakeClock, **kwargs: float) -> RecoveryCoordinator:
    settings = RecoverySettings(**kwargs)  # type: ignore[arg-type]
    return RecoveryCoordinator("up", settings=settings, store=LocalStore(clock), clock=clock)


async def test_first_redials_after_a_quiet_spell_go_out_one_at_a_time() -> None:
    """30 connections redial a dead upstream at once: the window lets one dial out at a
    time, so exactly failure_threshold dials happen before the shared circuit opens (not 30),
    and the others say why they wait."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=3, open_time=10.0, max_open=10.0)
    dials = 0
    in_flight = peak = 0
    reasons: list[str] = []

    async def redial(name: str) -> None:
        nonlocal dials, in_flight, peak
        on_wait = lambda reason, _s: reasons.append(reason)  # noqa: E731
        async with coord.permit(name, on_wait=on_wait, windowed=True) as permit:
            dials += 1
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.lowlevel.checkpoint()  # the refused dial takes a moment
            in_flight -= 1
            await permit.failed(ConnectionRefusedError("down"))

    clock.advance(IDLE_RESTART + 1)
    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(redial, f"c{i}")
        await clock.wait_for_sleepers(27)  # everyone else now waits for the open circuit
        assert dials == 3
        assert peak == 1
        assert coord.snapshot().phase is Phase.OPEN
        assert REASON_DIALING in reasons
        tg.cancel_scope.cancel()


async def test_window_grows_with_handshakes_and_never_exceeds_max_dialing() -> None:
    """With every handshake completing, the window grows by one per handshake up to
    max_dialing (4), dials in flight never exceed it, and all 40 get through."""
    clock = FakeClock()
    coord = _coordinator(clock, max_dialing=4)
    window = coord._dialing
    seen: list[int] = []
    done: list[int] = []

    async def dial(i: int) -> None:
        async with coord.permit(f"c{i}", windowed=True) as permit:
            assert permit.kind is DialKind.NORMAL
            seen.append(window.in_flight)
            assert window.in_flight <= window.size <= 4
            for _ in range(3):  # the handshake takes a while
                await anyio.lowlevel.checkpoint()
            permit.dialed()
            done.append(i)
            await permit.succeeded()

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(dial, i)
    assert window.size == 4
    assert max(seen) == 4
    assert window.in_flight == 0
    assert sorted(done) == list(range(40))


@pytest.mark.parametrize("handed_a_slot", [False, True])
async def test_a_cancelled_waiter_never_leaks_a_slot(handed_a_slot: bool) -> None:
    """A permit cancelled while it waits for the window leaves the queue; one cancelled just
    after it was handed the slot gives it back: afterwards nothing is in flight."""
    clock = FakeClock()
    coord = _coordinator(clock, max_dialing=1)
    holding = anyio.Event()
    let_go = anyio.Event()
    waiting = anyio.Event()
    scope = anyio.CancelScope()

    async def holder() -> None:
        async with coord.permit("a", windowed=True) as permit:
            holding.set()
            await let_go.wait()
            permit.dialed()  # hands the slot to the waiter ...
            if handed_a_slot:
                scope.cancel()  # ... which is cancelled before it can run

    async def waiter() -> None:
        with scope:
            async with coord.permit("b", windowed=True, on_wait=lambda *_: waiting.set()):
                await anyio.lowlevel.checkpoint()  # its dial: cancelled here at the latest
                raise AssertionError("the cancelled waiter must not complete a dial")

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await holding.wait()
        tg.start_soon(waiter)
        await waiting.wait()
        if not handed_a_slot:
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
        let_go.set()
    assert coord._dialing.in_flight == 0


async def test_failures_halve_the_window_and_a_quiet_second_restarts_it() -> None:
    """Handshakes grow the window, a failed dial halves it (never below 1), and after a
    quiet second the next dial finds it back at 1."""
    clock = FakeClock()
    window = DialWindow(8, clock)
    for _ in range(6):
        assert window.try_acquire()
        window.release(True)
    assert window.size == 7
    assert window.try_acquire()
    window.release(False)
    assert window.size == 3
    clock.advance(IDLE_RESTART + 0.5)
    assert window.try_acquire()
    assert window.size == 1
    assert not window.try_acquire()
    window.release(None)


async def test_the_probe_never_waits_for_the_window() -> None:
    """While the window is full (a slow dial in flight), the single probe of an open circuit
    still dials at once."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=1, open_time=1.0, max_open=1.0)
    async with coord.permit("first", windowed=True) as permit:
        await permit.failed(ConnectionRefusedError("down"))
    clock.advance(1.0)
    assert coord._dialing.try_acquire()  # someone's slow dial fills the window (size 1)
    async with coord.permit("prober", windowed=True) as probe:
        assert probe.kind is DialKind.PROBE
        assert coord._dialing.in_flight == 2
    coord._dialing.release(None)
    assert coord._dialing.in_flight == 0


def test_max_dialing_must_be_a_positive_int() -> None:
    """max_dialing 0, -1, 2.5 or True is a ConfigError naming it."""
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="max_dialing"):
            RecoverySettings(max_dialing=bad)  # type: ignore[arg-type]


async def test_live_connections_free_their_slot_at_the_handshake() -> None:
    """With max_dialing=1, ten connections sharing a coordinator all connect and stay
    connected: each frees its slot when its handshake is done, not when it ends."""
    coord = RecoveryCoordinator("live", settings=RecoverySettings(max_dialing=1))
    async with ScriptedServer() as server:
        conns = [
            ResilientConnection(server.url, coordinator=coord, name=f"c{i}", ping_interval=0)
            for i in range(10)
        ]
        async with contextlib.AsyncExitStack() as stack:
            for conn in conns:
                await stack.enter_async_context(conn)
            with anyio.fail_after(10):
                for conn in conns:
                    await conn.wait_connected(10)
            assert coord._dialing.in_flight == 0
            assert coord.snapshot().admitted["normal"] == 10


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 8),
    steps=st.lists(
        st.sampled_from(["acquire", "ok", "failed", "none", "widen", "quiet"]), max_size=60
    ),
)
def test_window_model_never_overfills_or_leaks(limit: int, steps: list[str]) -> None:
    """Any sequence of try_acquire / releases with every outcome / widen / quiet spells:
    the size stays within [1, limit], a slot is granted only below the size and refused only
    at it, in flight never exceeds the limit, and once every holder released, none is."""
    clock = FakeClock()
    window = DialWindow(limit, clock)
    held = 0
    for step in steps:
        if step == "acquire":
            if window.try_acquire():
                held += 1
                assert window.in_flight <= window.size  # granted only below the size
            else:
                assert window.in_flight >= window.size  # refused only when full
        elif step == "widen":
            window.widen(max(1, limit // 4) + 1)
        elif step == "quiet":
            clock.advance(IDLE_RESTART + 0.1)
        elif held:
            held -= 1
            window.release({"ok": True, "failed": False, "none": None}[step])
        assert 1 <= window.size <= limit
        assert window.in_flight == held <= limit
    for _ in range(held):
        window.release(None)
    assert window.in_flight == 0


async def test_ramp_waiters_held_up_by_a_slow_handshake_do_not_go_out_in_a_burst() -> None:
    """The ramp books one slot per 0.1 s; the first ramped dial's handshake then hangs for
    2 s and the window (max_dialing=1) is full, so the other waiters' booked times pass
    while they wait for it. When it completes they go out at the ramp's pace again, not all
    at once: over any stretch after that, admissions stay within 1 + rate x elapsed."""
    clock = FakeClock()
    coord = _coordinator(
        clock, failure_threshold=1, open_time=1.0, max_open=1.0, ramp_rate=10.0, ramp_burst=1,
        ramp_hold=100.0, max_dialing=1,
    )  # fmt: skip
    async with coord.permit("first", windowed=True) as permit:
        await permit.failed(ConnectionRefusedError("down"))
    clock.advance(1.0)
    admitted: list[float] = []
    hang = anyio.Event()

    async def dial(name: str, *, slow: bool = False) -> None:
        async with coord.permit(name, windowed=True) as permit:
            admitted.append(clock.now())
            if slow:
                await hang.wait()
            permit.dialed()
            await permit.succeeded(stable=False)

    async with anyio.create_task_group() as tg:
        async with coord.permit("prober", windowed=True) as probe:  # closes the circuit
            assert probe.kind is DialKind.PROBE
            probe.dialed()
            await probe.succeeded(stable=False)
        tg.start_soon(lambda: dial("slow", slow=True))
        await anyio.wait_all_tasks_blocked()
        for i in range(12):
            tg.start_soon(dial, f"c{i}")
        await anyio.wait_all_tasks_blocked()
        clock.advance(2.0)  # every booked slot has passed; the slow handshake still hangs
        await anyio.wait_all_tasks_blocked()
        released_at = clock.now()
        hang.set()
        while len(admitted) < 13:
            await anyio.wait_all_tasks_blocked()
            if len(admitted) < 13:
                assert clock.next_deadline is not None
                clock.advance_to(clock.next_deadline)
    after = sorted(t for t in admitted if t >= released_at)
    for n, t in enumerate(after, start=1):
        assert n <= 1 + 10.0 * (t - released_at) + 1e-6, f"{n} admitted by +{t - released_at}s"
