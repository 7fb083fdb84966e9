"""ResilientConnection(coordinator=...) on loopback: a shared circuit, one probe, then a ramp."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import pytest

from resilient_conn import (
    Backoff,
    ConfigError,
    ConnectionState,
    RecoveryCoordinator,
    RecoverySettings,
    ResilientConnection,
)
from resilient_conn.coordination import REASON_OPEN, REASON_PROBE_HELD, REASON_RAMP, Phase
from resilient_conn.testing import ScriptedServer
from tests._recorder import StateRecorder

pytestmark = pytest.mark.anyio

S = ConnectionState
FAST = Backoff(initial_delay=0.02, max_delay=0.1, jitter="full")
N = 20
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shared_coordinator.py"


def _conn(url: str, coordinator: RecoveryCoordinator, name: str) -> ResilientConnection:
    return ResilientConnection(
        url,
        coordinator=coordinator,
        name=name,
        backoff=FAST,
        stable_after=0.3,
        ping_interval=0,
        ping_timeout=1.0,
        close_timeout=0.5,
        open_timeout=2.0,
    )


async def test_outage_shares_one_probe_and_ramps_back() -> None:
    """20 connections, server down ~1 s: dials during the outage are a few shared probes (not
    20 private schedules); after the return one probe closes the circuit and the rest come back
    through the ramp, saying so in their state change reasons."""
    settings = RecoverySettings(
        failure_threshold=3, open_time=0.1, max_open=0.4, ramp_rate=20.0, ramp_burst=2
    )
    coordinator = RecoveryCoordinator("loopback", settings=settings)
    rec = StateRecorder()
    async with ScriptedServer() as server:
        conns = [_conn(server.url, coordinator, f"c{i}") for i in range(N)]
        for conn in conns:
            conn.on_state_change(rec)
        async with contextlib.AsyncExitStack() as stack:
            for conn in conns:
                await stack.enter_async_context(conn)
            for conn in conns:
                await conn.wait_connected(10)
            await server.stop()
            # Every connection notices and ends up behind the shared circuit.
            await rec.wait_for(lambda: sum(c.state is S.CIRCUIT_OPEN for c in conns) >= N - 1)
            dials_at_open = sum(c.stats.dials for c in conns)
            await anyio.sleep(1.0)  # the outage (not a wait for a state)
            outage_dials = sum(c.stats.dials for c in conns) - dials_at_open
            await server.start()
            with anyio.fail_after(15):
                for conn in conns:
                    await conn.wait_connected(15)
    snapshot = coordinator.snapshot()
    # Open times 0.1, 0.2, 0.4, 0.4 ...: about 4 probe dials in 1 s, for all 20 together.
    assert 1 <= outage_dials <= 8
    assert snapshot.admitted["probe"] >= 2
    assert snapshot.admitted["ramp"] >= N - 3
    reasons = {c.reason for c in rec.changes}
    # Entering CIRCUIT_OPEN names why (a later reason change within the state emits nothing).
    assert {c.reason for c in rec.changes if c.new is S.CIRCUIT_OPEN} <= {
        REASON_OPEN,
        REASON_PROBE_HELD,
    }
    assert REASON_RAMP in reasons
    ramp_waits = [c for c in rec.changes if c.reason == REASON_RAMP]
    assert all(c.new is S.BACKOFF for c in ramp_waits)
    assert snapshot.phase is Phase.CLOSED


async def test_connection_without_stable_after_still_closes_via_probe_ping() -> None:
    """A probe dial proves the upstream with one ping round trip (not stable_after): with a
    stable_after far longer than the test, the shared circuit still closes after the return."""
    settings = RecoverySettings(failure_threshold=1, open_time=0.05, max_open=0.1)
    coordinator = RecoveryCoordinator("probe-ping", settings=settings)
    async with ScriptedServer() as server:
        url = server.url
        await server.stop()
        conn = ResilientConnection(
            url,
            coordinator=coordinator,
            backoff=FAST,
            stable_after=3600,
            ping_interval=0,
            close_timeout=0.5,
            open_timeout=2.0,
        )
        rec = StateRecorder()
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.CIRCUIT_OPEN)
            await server.start()
            await conn.wait_connected(10)
            await coordinator.store.notifier(coordinator.name).wait_until(
                lambda: coordinator.snapshot().phase is Phase.CLOSED, 10
            )
    assert coordinator.snapshot().admitted["probe"] >= 1


async def test_private_breaker_is_disabled_unless_given() -> None:
    """With a coordinator the private breaker no longer gates (the shared circuit does);
    a breaker passed explicitly still gates in addition."""
    from resilient_conn import BreakerState, CircuitBreaker

    coordinator = RecoveryCoordinator("x")
    conn = ResilientConnection("ws://127.0.0.1:9/", coordinator=coordinator)
    assert conn.breaker.state is BreakerState.DISABLED
    own = CircuitBreaker()
    both = ResilientConnection("ws://127.0.0.1:9/", coordinator=coordinator, breaker=own)
    assert both.breaker is own
    assert own.state is BreakerState.CLOSED


async def test_bad_coordinator_is_refused() -> None:
    """coordinator= must be a RecoveryCoordinator: a clear ConfigError at construction."""
    with pytest.raises(ConfigError, match="coordinator must be a RecoveryCoordinator"):
        ResilientConnection("ws://127.0.0.1:9/", coordinator="shared")  # type: ignore[arg-type]


async def test_flapping_upstream_costs_one_dial_per_open_period() -> None:
    """A server that accepts and drops at once: after the threshold, each open period costs
    one probe dial (its early death re-opens at once, for longer), never a tight loop, and the
    connection keeps trying (no FAILED, no crash of the supervisor)."""
    from websockets.asyncio.server import ServerConnection

    async def drop(ws: ServerConnection, server: ScriptedServer) -> None:
        await ws.close(1011, "flap")

    settings = RecoverySettings(failure_threshold=3, open_time=0.05, max_open=0.2)
    coordinator = RecoveryCoordinator("flap", settings=settings)
    async with ScriptedServer(drop) as server:
        conn = ResilientConnection(
            server.url,
            coordinator=coordinator,
            backoff=FAST,
            stable_after=5.0,
            ping_interval=0,
            close_timeout=0.5,
            open_timeout=2.0,
        )
        async with conn:
            await coordinator.store.notifier(coordinator.name).wait_until(
                lambda: coordinator.snapshot().reopenings >= 3, 10
            )
            state = conn.state
            dials = conn.stats.dials
    probes = coordinator.snapshot().admitted["probe"]
    assert state is not S.FAILED
    assert probes >= 3
    assert dials <= settings.failure_threshold + probes + 1


async def test_shared_coordinator_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/shared_coordinator.py brings all 50 back and reports the ramp in reasons."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("shared_coordinator_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with anyio.fail_after(30):
        reasons = await module.main(outage=0.5)
    assert reasons[REASON_RAMP] > 0
    assert "all 50 back" in capsys.readouterr().out


async def test_close_while_waiting_behind_the_shared_circuit() -> None:
    """aclose() while the connection waits for the shared circuit (open for an hour) ends
    in CLOSED at once; a connection closed while it holds the probe frees the lease."""
    settings = RecoverySettings(failure_threshold=1, open_time=3600.0, max_open=3600.0)
    coordinator = RecoveryCoordinator("closing", settings=settings)
    async with coordinator.permit("someone") as p:
        await p.failed()
    conn = ResilientConnection("ws://127.0.0.1:9/", coordinator=coordinator, ping_interval=0)
    rec = StateRecorder()
    conn.on_state_change(rec)
    with anyio.fail_after(5):
        async with conn:
            await rec.wait_state(S.CIRCUIT_OPEN)
    assert conn.state is S.CLOSED

    probing = RecoveryCoordinator("probe-close", settings=RecoverySettings(failure_threshold=1))
    async with ScriptedServer() as server:
        async with probing.permit("someone") as p:
            await p.failed()
        conn = ResilientConnection(
            server.url, coordinator=probing, ping_interval=0, stable_after=3600, backoff=FAST
        )
        with anyio.fail_after(10):
            async with conn:
                await conn.wait_connected(10)
                # The probe's ping closed the circuit; then the user closes mid-probation.
                await probing.store.notifier(probing.name).wait_until(
                    lambda: probing.snapshot().phase is Phase.CLOSED, 10
                )
    snapshot = probing.snapshot()
    assert not snapshot.probe_held
    assert snapshot.admitted["probe"] == 1
