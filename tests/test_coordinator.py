"""RecoveryCoordinator with the in-process store, on a FakeClock: probes, ramp, cancellation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest

from resilient_conn import ConfigError
from resilient_conn.coordination import (
    DialKind,
    LocalStore,
    Phase,
    RecoveryCoordinator,
    RecoverySettings,
    reset_default_coordinators,
)
from resilient_conn.testing import FakeClock


@dataclass
class Fleet:
    """Simulated connections sharing a coordinator against an upstream that is up or down."""

    coordinator: RecoveryCoordinator
    clock: FakeClock
    up: bool = False
    in_flight_probes: int = 0
    max_in_flight_probes: int = 0
    admissions: list[tuple[float, DialKind]] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)
    done: int = 0

    async def connect(self, name: str) -> None:
        """Dial through permits until one dial succeeds (each failure goes back to wait)."""
        while True:
            async with self.coordinator.permit(name, on_wait=self.on_wait) as permit:
                assert permit.kind is not None
                self.admissions.append((self.clock.now(), permit.kind))
                if permit.kind is DialKind.PROBE:
                    self.in_flight_probes += 1
                    self.max_in_flight_probes = max(
                        self.max_in_flight_probes, self.in_flight_probes
                    )
                try:
                    await anyio.lowlevel.checkpoint()  # let the others race the dial
                    if self.up:
                        await permit.succeeded(stable=False)
                        self.done += 1
                        return
                    await permit.failed(ConnectionRefusedError("down"))
                finally:
                    if permit.kind is DialKind.PROBE:
                        self.in_flight_probes -= 1

    def on_wait(self, reason: str, seconds: float) -> None:
        """Record each reason a permit gave for waiting."""
        self.reasons.add(reason)


def _coordinator(clock: FakeClock, **kwargs: float) -> RecoveryCoordinator:
    settings = RecoverySettings(**kwargs)  # type: ignore[arg-type]
    return RecoveryCoordinator("up", settings=settings, store=LocalStore(clock), clock=clock)


async def _step(clock: FakeClock) -> None:
    """Let every task settle, then advance the clock to the earliest sleeper's deadline."""
    await anyio.wait_all_tasks_blocked()
    deadline = clock.next_deadline
    assert deadline is not None, "nothing is sleeping: every task is stuck"
    clock.advance_to(deadline)
    await anyio.wait_all_tasks_blocked()


async def _run_until(clock: FakeClock, predicate: object, limit: int = 10_000) -> None:
    assert callable(predicate)
    for _ in range(limit):
        await anyio.wait_all_tasks_blocked()
        if predicate():
            return
        await _step(clock)
    raise AssertionError("condition not reached")


@pytest.mark.anyio
async def test_many_connections_share_one_probe_then_ramp() -> None:
    """20 connections: one probe at a time while open, then admissions at the bucket's rate."""
    clock = FakeClock()
    coord = _coordinator(
        clock,
        ramp_rate=10.0,
        ramp_burst=5,
        ramp_hold=0.5,
        probe_ttl=5.0,
        open_time=1.0,
        max_open=10.0,
    )
    fleet = Fleet(coord, clock)
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(fleet.connect, f"c{i}")
        # Down for a while: the circuit opens and re-probes with growing open times.
        await _run_until(clock, lambda: clock.now() >= 20.0)
        outage_probes = sum(1 for _, k in fleet.admissions if k is DialKind.PROBE)
        back_at = clock.now()
        fleet.up = True
        await _run_until(clock, lambda: fleet.done == 20)
    assert fleet.max_in_flight_probes == 1
    # 1 + 2 + 4 + 8 (+ cap 10) s open times: a handful of probes in 20 s, not 20 per period.
    assert 3 <= outage_probes <= 6
    after = [(t, k) for t, k in fleet.admissions if t >= back_at]
    ramp = sorted(t for t, k in after if k is DialKind.RAMP)
    probe_at = max(t for t, k in after if k is DialKind.PROBE)  # the one that succeeded
    assert probe_at - back_at <= coord.settings.max_open
    assert len(ramp) == 19
    for n, t in enumerate(ramp, start=1):
        assert n <= 5 + 10.0 * (t - probe_at) + 1e-6, "ramp admitted faster than the bucket"
    assert ramp[-1] - probe_at == pytest.approx((19 - 5) / 10.0, abs=0.11)
    assert "circuit open, probe held by another connection" in fleet.reasons
    assert "waiting for reconnect ramp" in fleet.reasons
    assert "circuit open, waiting for the probe time" in fleet.reasons


@pytest.mark.anyio
async def test_cancelled_probe_passes_the_lease_on_at_once() -> None:
    """Cancelling the probe holder frees the lease; a waiter probes without waiting the TTL."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=1, probe_ttl=100.0)
    async with coord.permit("a") as p:
        await p.failed()
    clock.advance(1.0)
    holding = anyio.Event()
    got: list[DialKind] = []

    async def prober() -> None:
        async with coord.permit("prober") as permit:
            assert permit.kind is DialKind.PROBE
            holding.set()
            await anyio.sleep_forever()

    async def waiter() -> None:
        async with coord.permit("waiter") as permit:
            assert permit.kind is not None
            got.append(permit.kind)

    prober_scope = anyio.CancelScope()

    async def cancellable_prober() -> None:
        with prober_scope:
            await prober()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancellable_prober)
        await holding.wait()
        tg.start_soon(waiter)
        await clock.wait_for_sleepers(1)  # the waiter sleeps until the lease's TTL
        prober_scope.cancel()
    assert got == [DialKind.PROBE]
    assert clock.now() == 1.0  # no fake time passed: woken by the release, not the TTL


@pytest.mark.anyio
async def test_exception_in_block_counts_as_failure_cancellation_does_not() -> None:
    """An Exception escaping the permit block is a failure; a cancelled one records nothing."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=2)
    with pytest.raises(OSError, match="refused"):
        async with coord.permit("a"):
            raise OSError("refused")
    state = coord.store.peek("up")
    assert state is not None
    assert state.failures == 1
    with anyio.CancelScope() as scope:
        async with coord.permit("b"):
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert coord.snapshot().failures == 1


@pytest.mark.anyio
async def test_outcomes_after_stable_are_ignored() -> None:
    """After succeeded() (stable) a later failed() does not count: the supervisor may keep
    the block open for the connection's life."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=1)
    async with coord.permit("a") as permit:
        await permit.succeeded()
        await permit.failed(ConnectionResetError("later"))
    assert coord.snapshot().phase is Phase.CLOSED


@pytest.mark.anyio
async def test_on_wait_that_raises_is_isolated() -> None:
    """A broken on_wait callback is logged; the permit still waits and is admitted."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=1)
    async with coord.permit("a") as p:
        await p.failed()

    def broken(reason: str, seconds: float) -> None:
        raise RuntimeError("hook bug")

    async with anyio.create_task_group() as tg:

        async def wait_for_it() -> None:
            async with coord.permit("b", on_wait=broken) as permit:
                assert permit.kind is DialKind.PROBE
                assert permit.reason == "circuit open, waiting for the probe time"
                assert permit.waited == pytest.approx(coord.settings.open_time)

        tg.start_soon(wait_for_it)
        await _step(clock)


@pytest.mark.anyio
async def test_cancellation_sweep_leaves_no_lease_behind() -> None:
    """Cancel 40 permits at each of five stages (waiting, probing, ramping): no lease is
    left held."""
    clock = FakeClock()
    coord = _coordinator(clock, failure_threshold=1, ramp_rate=5.0, ramp_burst=1)
    async with coord.permit("a") as p:
        await p.failed()
    for stop_after in range(1, 6):
        async with anyio.create_task_group() as tg:
            for i in range(40):

                async def one(name: str) -> None:
                    async with coord.permit(name) as permit:
                        if permit.kind is DialKind.PROBE:
                            await permit.succeeded(stable=False)
                        await anyio.sleep_forever()

                tg.start_soon(one, f"s{stop_after}-{i}")
            for _ in range(stop_after):
                await _step(clock)
            tg.cancel_scope.cancel()
        state = coord.store.peek("up")
        assert state is not None
        assert not state.probe_live(clock.now())


@pytest.mark.anyio
async def test_one_thousand_waiters_cost_linear_work() -> None:
    """1,000 permits through a fast ramp on the real clock: each is decided a bounded
    number of times (slots are reserved, so waiters are not woken per token)."""

    class CountingStore(LocalStore):
        calls = 0

        def apply(self, key, transition):  # type: ignore[no-untyped-def]
            CountingStore.calls += 1
            return super().apply(key, transition)

    store = CountingStore()
    settings = RecoverySettings(failure_threshold=1, open_time=0.01, ramp_rate=20_000.0)
    coord = RecoveryCoordinator("up", settings=settings, store=store)
    async with coord.permit("a") as p:
        await p.failed()
    done = 0

    async def one(name: str) -> None:
        nonlocal done
        async with coord.permit(name) as permit:
            await anyio.lowlevel.checkpoint()
            await permit.succeeded(stable=False)
            done += 1

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(one, f"c{i}")
    assert done == 1000
    assert CountingStore.calls <= 5 * 1000


def test_for_url_shares_one_coordinator_per_host_and_port() -> None:
    """for_url returns one object per host:port; default ports follow the scheme."""
    reset_default_coordinators()
    try:
        a = RecoveryCoordinator.for_url("wss://Feed.example/ws?token=x")
        assert a is RecoveryCoordinator.for_url("wss://feed.example:443/other")
        assert a.name == "feed.example:443"
        assert a is not RecoveryCoordinator.for_url("ws://feed.example/ws")
        with pytest.raises(ConfigError, match="other settings"):
            RecoveryCoordinator.for_url("wss://feed.example", settings=RecoverySettings(3, 0.25))
        with pytest.raises(ConfigError, match="no host"):
            RecoveryCoordinator.for_url("wss:///path")
        with pytest.raises(ConfigError, match="unknown scheme"):
            RecoveryCoordinator.for_url("ftp://feed.example/x")
    finally:
        reset_default_coordinators()


@pytest.mark.parametrize("name", ["", "x" * 201, "bad\nname", 5])
def test_bad_names_are_refused(name: object) -> None:
    """A coordinator name must be 1-200 printable characters."""
    with pytest.raises(ConfigError, match="name"):
        RecoveryCoordinator(name)  # type: ignore[arg-type]


def test_bad_store_and_settings_are_refused() -> None:
    """Passing something that is not a store or settings fails at construction."""
    with pytest.raises(ConfigError, match="store"):
        RecoveryCoordinator("x", store=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="settings"):
        RecoveryCoordinator("x", settings={"ramp_rate": 1})  # type: ignore[arg-type]


def test_snapshot_is_json_safe() -> None:
    """snapshot().to_dict() serialises to JSON and shows the store's health."""
    coord = RecoveryCoordinator("x")
    data = json.loads(json.dumps(coord.snapshot().to_dict()))
    assert data["phase"] == "closed"
    assert data["store"]["backend"] == "local"
    assert "closed" in repr(coord)


@pytest.mark.anyio
async def test_a_permit_is_used_once() -> None:
    """Entering the same permit twice is a clear error, not a second admission."""
    coord = RecoveryCoordinator("x")
    permit = coord.permit("a")
    async with permit:
        pass
    with pytest.raises(RuntimeError, match="used once"):
        async with permit:
            pass


@pytest.mark.anyio
async def test_requests_cancelled_while_their_batch_is_in_flight_leave_no_lease() -> None:
    """Admission requests are batched into one store update. Cancelling every waiter while
    that update is still in flight (a slow shared store) leaves no probe lease held."""
    clock = FakeClock()

    class SlowStore(LocalStore):
        def __init__(self) -> None:
            super().__init__(clock)
            self.gate = anyio.Event()
            self.entered = anyio.Event()

        async def update(self, key, transition):  # type: ignore[no-untyped-def]
            self.entered.set()
            await self.gate.wait()
            return self.apply(key, transition)

    store = SlowStore()
    store.gate.set()
    coord = RecoveryCoordinator(
        "up", settings=RecoverySettings(failure_threshold=1), store=store, clock=clock
    )
    async with coord.permit("a") as p:
        await p.failed()
    clock.advance(5.0)  # the open time is over: the next admission is the probe
    store.gate = anyio.Event()
    store.entered = anyio.Event()
    admitted: list[DialKind] = []

    async def one(name: str) -> None:
        async with coord.permit(name) as permit:
            assert permit.kind is not None
            admitted.append(permit.kind)
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(one, f"w{i}")
        await store.entered.wait()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
        store.gate.set()
    store.gate.set()
    state = store.peek("up")
    assert state is not None
    assert not state.probe_live(clock.now())
    assert admitted in ([], [DialKind.PROBE])
