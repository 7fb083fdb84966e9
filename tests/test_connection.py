"""ResilientConnection against real servers on 127.0.0.1: restarts, silent peers, flapping,
outages, server hints, fatal errors, buffering across outages, graceful close, hooks.
"""

from __future__ import annotations

import asyncio
import os
import time

import anyio
import pytest
from websockets.asyncio.server import ServerConnection

from resilient_conn._core.errors import ConnectionFailedError
from resilient_conn.connection.buffer import DeadLetterReason
from resilient_conn.connection.connection import ResilientConnection
from resilient_conn.connection.events import ConnectionState, StateChange
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.resilience.breaker import BreakerState, CircuitBreaker
from resilient_conn.testing import ChaosProxy, ScriptedServer

from ._recorder import StateRecorder

S = ConnectionState
FAST = Backoff(initial_delay=0.02, max_delay=0.1, jitter="full")

pytestmark = pytest.mark.anyio


def _conn(url: str, **kwargs: object) -> ResilientConnection:
    options: dict[str, object] = {
        "backoff": FAST,
        "stable_after": 0.2,
        "ping_interval": 0,
        "close_timeout": 1.0,
        "open_timeout": 2.0,
    }
    options.update(kwargs)
    return ResilientConnection(url, **options)  # type: ignore[arg-type]


async def test_server_restart_reconnects_and_recv_continues() -> None:
    """After a server restart the connection comes back by itself and the same recv loop
    keeps receiving: CONNECTED -> BACKOFF -> CONNECTING -> CONNECTED."""
    rec = StateRecorder()
    async with ScriptedServer() as server:
        conn = _conn(server.url)
        conn.on_state_change(rec)
        async with conn:
            await conn.wait_connected(5)
            await conn.send("before")
            assert await conn.recv() == "before"
            await server.restart()
            await rec.wait_state(S.CONNECTED, 2)
            await conn.send("after")
            with anyio.fail_after(5):
                assert await conn.recv() == "after"
    # CONNECTED -> BACKOFF -> CONNECTING -> CONNECTED; a dial that hits the server while it
    # is still restarting adds BACKOFF/CONNECTING pairs in between, nothing else.
    states = rec.states
    first, second = (i for i, st in enumerate(states) if st is S.CONNECTED)
    outage = states[first + 1 : second]
    assert outage[0] is S.BACKOFF
    assert outage[-1] is S.CONNECTING
    assert set(outage) == {S.BACKOFF, S.CONNECTING}
    assert states[second + 1 :] == [S.CLOSING, S.CLOSED]
    assert conn.stats.reconnects == 1


async def test_blackholed_peer_is_detected_within_ping_interval_plus_timeout() -> None:
    """A silent peer (no FIN, no RST) is declared dead within ping_interval + ping_timeout
    (0.5 + 0.5 s, allowing scheduling slack), and the consumer's recv resumes after healing."""
    rec = StateRecorder()
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        async with _conn(proxy.url_for("/"), ping_interval=0.5, ping_timeout=0.5) as conn:
            conn.on_state_change(rec)
            await conn.wait_connected(5)
            proxy.blackhole()
            started = time.monotonic()
            await rec.wait_for(lambda: S.BACKOFF in rec.states or S.CIRCUIT_OPEN in rec.states, 5)
            detected_after = rec.times[0] - started
            assert detected_after <= 1.5 + 0.5, detected_after
            assert conn.stats.failures.get("ping_timeout") == 1
            proxy.heal()
            await conn.send("still here")
            with anyio.fail_after(5):
                assert await conn.recv() == "still here"


async def test_accept_then_drop_opens_the_breaker_without_a_tight_loop() -> None:
    """A server that completes the handshake and drops at once is not a success: failures
    accumulate, the breaker opens after failure_threshold, and dialing stops (no storm)."""

    async def drop(ws: ServerConnection, server: ScriptedServer) -> None:
        await ws.close(1011, "flap")

    rec = StateRecorder()
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=60.0)
    async with ScriptedServer(drop) as server:
        async with _conn(server.url, breaker=breaker, stable_after=5.0) as conn:
            conn.on_state_change(rec)
            await rec.wait_state(S.CIRCUIT_OPEN, 1, timeout=10)
            # The supervisor only dials through breaker.acquire(); open for ~60 s, so the
            # dial count is final for this test.
            assert breaker.state is BreakerState.OPEN
            assert breaker.retry_after > 50
            assert conn.stats.dials == 3
            assert server.connection_count == 3
            # each retry waited a backoff delay: BACKOFF between consecutive dials
            assert rec.count(S.BACKOFF) == 2


async def test_tcp_level_flapping_is_backed_off_and_opens_the_breaker() -> None:
    """A proxy that accepts TCP and drops at once makes every handshake fail; dials follow
    the backoff and the breaker opens after failure_threshold dials."""
    breaker = CircuitBreaker(failure_threshold=4, recovery_timeout=60.0)
    rec = StateRecorder()
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        proxy.accept_and_close()
        async with _conn(proxy.url_for("/"), breaker=breaker) as conn:
            conn.on_state_change(rec)
            await rec.wait_state(S.CIRCUIT_OPEN, 1, timeout=10)
            assert conn.stats.dials == 4
            assert proxy.stats.connections_accepted == 4


async def test_long_outage_probes_once_per_recovery_timeout_then_recovers() -> None:
    """During an outage the circuit opens; one probe dial per recovery_timeout; when the
    server returns the probe connection succeeds and success_threshold closes the breaker."""
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=0.3, success_threshold=2)
    closed = asyncio.Event()
    breaker.add_listener(lambda t: closed.set() if t.new is BreakerState.CLOSED else None)
    rec = StateRecorder()
    async with ScriptedServer() as server:
        await server.stop()
        async with _conn(server.url, breaker=breaker, ping_interval=0.05, ping_timeout=1) as conn:
            conn.on_state_change(rec)
            await rec.wait_state(S.CIRCUIT_OPEN, 3, timeout=10)
            opened = [
                t for c, t in zip(rec.changes, rec.times, strict=True) if c.new is S.CIRCUIT_OPEN
            ]
            probes = [
                t for c, t in zip(rec.changes, rec.times, strict=True) if c.new is S.CONNECTING
            ]
            # every probe waited the recovery timeout after the circuit opened
            later = [p for p in probes if p > opened[0]]
            assert later
            for p in later:
                last_open = max(o for o in opened if o < p)
                assert p - last_open >= 0.3 - 0.02
            await server.start()
            with anyio.fail_after(10):
                await conn.wait_connected()
                await closed.wait()
            assert breaker.state is BreakerState.CLOSED
            assert conn.state is S.CONNECTED


async def test_503_retry_after_delays_the_next_dial() -> None:
    """HTTP 503 with Retry-After: 2 -> the next dial comes at least 2 s later."""
    rec = StateRecorder()
    async with ScriptedServer() as server:
        server.reject_next(503, headers={"Retry-After": "2"})
        conn = _conn(server.url)
        conn.on_state_change(rec)
        async with conn:
            await conn.wait_connected(10)
        dials = [t for c, t in zip(rec.changes, rec.times, strict=True) if c.new is S.CONNECTING]
        assert len(dials) == 2
        assert dials[1] - dials[0] >= 2.0
        assert conn.stats.failures == {"http_503": 1}


async def test_close_1013_with_a_hint_delays_the_next_dial() -> None:
    """Close 1013 "try again in 1 s" -> the next dial comes at least 1 s later."""
    rec = StateRecorder()
    async with ScriptedServer() as server:
        conn = _conn(server.url)
        conn.on_state_change(rec)
        async with conn:
            await conn.wait_connected(5)
            await server.close_all(1013, "try again in 1 s")
            await rec.wait_state(S.CONNECTED, 2, timeout=10)
        closed_at = rec.times[rec.states.index(S.BACKOFF)]
        redial_at = rec.times[rec.states.index(S.CONNECTING, rec.states.index(S.BACKOFF))]
        assert redial_at - closed_at >= 1.0
        assert conn.stats.failures == {"close_1013": 1}


async def test_401_fails_after_one_dial_and_the_consumer_sees_it() -> None:
    """401 on the handshake: FAILED after exactly one dial; recv raises the fatal error."""
    async with ScriptedServer() as server:
        server.reject(401, body="bad token")
        async with _conn(server.url) as conn:
            with anyio.fail_after(5), pytest.raises(ConnectionFailedError) as info:
                await conn.recv()
            assert info.value.status == 401
            assert conn.state is S.FAILED
            with pytest.raises(ConnectionFailedError):
                await conn.send("x")
        assert conn.stats.dials == 1
        assert server.rejection_count == 1


async def _sink(ws: ServerConnection, server: ScriptedServer) -> None:
    async for _ in ws:  # the server records each message it receives
        pass


async def test_thousand_messages_across_three_restarts_are_delivered_or_dead_lettered() -> None:
    """1000 sequence-numbered messages, many sent during three outages: each one is delivered
    exactly once and in order, or dead-lettered with a reason. None vanish.

    (A message already written to a socket that the server then closes can be lost in
    flight, as with any WebSocket client without application-level acks; so the connected
    batches are confirmed by the server before each restart.)
    """
    total, batch = 1000, 125
    async with ScriptedServer(_sink) as server:
        async with _conn(server.url, buffer_size=100, overflow="drop_oldest") as conn:
            await conn.wait_connected(5)
            seq = 0

            async def send_batch() -> None:
                nonlocal seq
                for _ in range(batch):
                    await conn.send(f"{seq:04d}")
                    seq += 1

            for _ in range(3):
                await send_batch()  # while connected
                await server.wait_for_messages(seq - len(conn.dead_letters), timeout=20)
                await server.stop()
                await send_batch()  # while disconnected: buffered, bounded to 100
                await server.start()
                await conn.wait_connected(10)
            while seq < total:
                await conn.send(f"{seq:04d}")
                seq += 1
            dead = [d.message for d in conn.dead_letters]
            await server.wait_for_messages(total - len(dead), timeout=20)
        delivered = server.messages
    assert all(d.reason is DeadLetterReason.OVERFLOW for d in conn.dead_letters)
    assert len(dead) == 3 * (batch - 100)
    assert len(delivered) == len(set(delivered))  # once
    assert delivered == sorted(delivered)  # in order
    assert sorted(delivered + dead) == [f"{i:04d}" for i in range(total)]  # none vanish


async def test_outage_overflow_dead_letters_and_keeps_order() -> None:
    """With a buffer smaller than an outage's traffic, the oldest are dead-lettered with
    reason OVERFLOW and the rest arrive in order after the reconnect."""
    async with ScriptedServer(_sink) as server:
        async with _conn(server.url, buffer_size=10, overflow="drop_oldest") as conn:
            await conn.wait_connected(5)
            await server.stop()
            for i in range(25):
                await conn.send(str(i))
            await server.start()
            delivered = await server.wait_for_messages(10, timeout=10)
    assert delivered == [str(i) for i in range(15, 25)]
    assert [d.message for d in conn.dead_letters] == [str(i) for i in range(15)]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_close_with_full_buffer_dead_letters_and_leaks_nothing() -> None:
    """Closing while messages wait: they are dead-lettered (reason CLOSED); no task and no
    socket outlives the connection."""
    async with ScriptedServer() as server:
        await server.stop()
        tasks_before = asyncio.all_tasks()
        fds_before = _open_fds()
        conn = _conn(server.url)
        async with conn:
            for i in range(5):
                await conn.send(f"m{i}")
        leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
        assert leftover == set()
        assert _open_fds() <= fds_before
        assert [(d.message, d.reason) for d in conn.dead_letters] == [
            (f"m{i}", DeadLetterReason.CLOSED) for i in range(5)
        ]
        assert conn.state is S.CLOSED


async def test_close_while_connected_drains_then_closes_with_1000() -> None:
    """A graceful close flushes nothing-lost, closes with 1000, and ends every task."""
    async with ScriptedServer() as server:
        tasks_before = asyncio.all_tasks()
        conn = _conn(server.url, ping_interval=0.05)
        async with conn:
            await conn.wait_connected(5)
            await conn.send("last words")
            await server.wait_for_messages(1)
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1000
        assert {t for t in asyncio.all_tasks() - tasks_before if not t.done()} == set()


async def test_on_open_resubscribes_before_buffered_messages_are_flushed() -> None:
    """on_open runs after every (re)connect and its sends go before buffered ones."""

    async def subscribe(c: ResilientConnection) -> None:
        await c.send("subscribe")

    async with ScriptedServer(_sink) as server:
        async with _conn(server.url, on_open=subscribe) as conn:
            await conn.wait_connected(5)
            await server.wait_for_messages(1)
            await server.stop()
            await conn.send("buffered-1")
            await conn.send("buffered-2")
            await server.start()
            await server.wait_for_messages(4, timeout=10)
    assert server.messages == ["subscribe", "subscribe", "buffered-1", "buffered-2"]


async def test_raising_and_hanging_hooks_do_not_stop_reconnection() -> None:
    """A hook that raises and an async hook that hangs are isolated: the connection still
    reconnects, and other hooks still see every change."""
    never = asyncio.Event()

    def broken(change: StateChange) -> None:
        raise RuntimeError("hook bug")

    async def hangs(change: StateChange) -> None:
        await never.wait()

    rec = StateRecorder()
    async with ScriptedServer() as server:
        conn = _conn(server.url, hook_timeout=0.2)
        conn.on_state_change(broken)
        conn.on_state_change(hangs)
        conn.on_state_change(rec)
        async with conn:
            await conn.wait_connected(5)
            await server.restart()
            await rec.wait_state(S.CONNECTED, 2, timeout=10)
            await conn.send("ok")
            with anyio.fail_after(5):
                assert await conn.recv() == "ok"
    assert rec.states[:2] == [S.CONNECTING, S.CONNECTED]
    assert rec.states[-2:] == [S.CLOSING, S.CLOSED]  # the recorder saw every change


async def test_unsubscribe_stops_a_hook() -> None:
    """The handle returned by on_state_change removes the hook."""
    seen: list[StateChange] = []
    async with ScriptedServer() as server:
        conn = _conn(server.url)
        unsubscribe = conn.on_state_change(seen.append)
        async with conn:
            await conn.wait_connected(5)
            unsubscribe()
            unsubscribe()  # idempotent
    assert [c.new for c in seen] == [S.CONNECTING, S.CONNECTED]


async def test_url_and_headers_callables_are_evaluated_before_every_dial() -> None:
    """Sync/async callables for url and headers run before each dial (fresh tokens)."""
    tokens = iter(["t1", "t2", "t3"])
    calls: list[str] = []

    async def headers() -> dict[str, str]:
        token = next(tokens)
        calls.append(token)
        return {"Authorization": f"Bearer {token}"}

    async with ScriptedServer() as server:
        async with _conn(lambda: server.url, headers=headers) as conn:
            await conn.wait_connected(5)
            await server.restart()
            await server.wait_for_connection(2, timeout=10)
        seen = [r.request_headers["Authorization"] for r in server.connections]
    assert seen == ["Bearer t1", "Bearer t2"]
    assert calls == ["t1", "t2"]


async def test_check_survives_message_stream_and_ping_measures_rtt() -> None:
    """ping() measures a real round trip without disturbing the message stream."""
    async with ScriptedServer() as server, _conn(server.url) as conn:
        await conn.wait_connected(5)
        await conn.send("a")
        rtt = await conn.ping(timeout=5)
        assert rtt >= 0
        assert await conn.recv() == "a"


async def test_check_reports_rtt_when_live_and_unhealthy_when_blackholed() -> None:
    """check() measures a round trip against a live server (HEALTHY, rtt set) and reports
    UNHEALTHY, without raising, against a blackholed one within its timeout."""
    from resilient_conn.health import HealthStatus

    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        async with _conn(proxy.url_for("/")) as conn:
            await conn.wait_connected(5)
            report = await conn.check(timeout=2)
            assert report.status is HealthStatus.HEALTHY
            assert report.rtt is not None
            assert report.rtt >= 0
            proxy.blackhole()
            with anyio.fail_after(0.3 + 2):
                report = await conn.check(timeout=0.3)
            assert report.status is HealthStatus.UNHEALTHY
            assert "round trip failed" in report.detail
            assert conn.health().status is HealthStatus.HEALTHY  # the snapshot still says up


async def test_health_of_a_connection_that_cannot_connect_is_not_healthy() -> None:
    """A connection whose server is down reports DEGRADED while retrying, with the error."""
    from resilient_conn.health import HealthStatus

    rec = StateRecorder()
    async with ScriptedServer() as server:
        await server.stop()
        async with _conn(server.url) as conn:
            conn.on_state_change(rec)
            await rec.wait_state(S.BACKOFF, 1)
            report = await conn.check(timeout=1)
            assert report.status in (HealthStatus.DEGRADED, HealthStatus.UNHEALTHY)
            assert report.last_error is not None
            assert report.to_dict()["state"] in ("backoff", "connecting")


async def test_on_open_failure_counts_and_reconnects() -> None:
    """An on_open hook that raises fails that transport (kind on_open_failed) and the
    supervisor dials again; once it succeeds the connection is live."""
    calls = 0

    async def flaky_subscribe(c: ResilientConnection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("subscribe failed")
        await c.send("subscribed")

    async with ScriptedServer(_sink) as server, _conn(server.url, on_open=flaky_subscribe) as conn:
        await conn.wait_connected(10)
        await server.wait_for_messages(1)
    assert calls == 2
    assert conn.stats.failures == {"on_open_failed": 1}
    assert server.messages == ["subscribed"]


async def test_a_stuck_on_open_does_not_wedge_the_supervisor() -> None:
    """If the transport dies while on_open hangs, the supervisor still notices and redials."""
    release = asyncio.Event()
    calls = 0

    async def stuck_once(c: ResilientConnection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()

    rec = StateRecorder()
    async with ScriptedServer() as server:
        conn = _conn(server.url, on_open=stuck_once)
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.CONNECTED, 1)
            await server.close_all(1011, "bye")
            await conn.wait_connected(10)
    assert calls == 2
    assert rec.count(S.CONNECTED) == 2


async def test_never_connected_becomes_unhealthy_after_unhealthy_after() -> None:
    """A connection whose upstream is down from the start counts as disconnected since start,
    so after unhealthy_after it is UNHEALTHY even while the breaker is still closed."""
    from resilient_conn.health import HealthStatus

    rec = StateRecorder()
    breaker = CircuitBreaker(failure_threshold=1000)
    async with ScriptedServer() as server:
        await server.stop()
        conn = _conn(server.url, breaker=breaker, unhealthy_after=0.2)
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.BACKOFF, 1)
            with anyio.fail_after(5):
                while conn.health().status is not HealthStatus.UNHEALTHY:
                    await rec.wait_next()  # re-check after each retry step
            assert "disconnected for" in conn.health().detail
            assert conn.stats.reconnects == 0


async def test_close_does_not_wait_for_frames_nobody_read() -> None:
    """A consumer that stopped reading while the server kept sending can still close at
    once: unread frames are discarded so the server's close frame is seen (no wait for
    close_timeout, here 30 s), and the server records a clean 1000."""
    flooded = asyncio.Event()

    async def flood(ws: ServerConnection, server: ScriptedServer) -> None:
        for i in range(200):  # far more than max_queue: websockets stops reading the socket
            await ws.send(f"m{i}")
        flooded.set()
        await ws.wait_closed()

    async with ScriptedServer(flood) as server:
        conn = _conn(server.url, close_timeout=30.0, max_queue=4)
        async with conn:
            await conn.wait_connected(5)
            assert await conn.recv() == "m0"
            with anyio.fail_after(10):
                await flooded.wait()
            started = time.monotonic()
            await conn.aclose()  # shielded: it cannot be cut short, so measure it
            assert time.monotonic() - started < 10  # close_timeout is 30 s
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1000


async def test_dials_follow_the_backoff_schedule_then_the_breaker() -> None:
    """Against a dead server, the waits between dials are exactly the backoff's delays (a
    seeded schedule), until the breaker opens; then the wait is the recovery timeout, and
    a failed probe re-opens the circuit. Timed on a FakeClock, so nothing really sleeps."""
    import random

    from resilient_conn.testing import FakeClock

    clock = FakeClock(auto_advance=True)
    backoff = Backoff(initial_delay=1.0, max_delay=30.0, rng=random.Random(7))
    expected = Backoff(initial_delay=1.0, max_delay=30.0, rng=random.Random(7)).delays()
    breaker = CircuitBreaker(failure_threshold=4, recovery_timeout=45.0, clock=clock)
    rec = StateRecorder()
    async with ScriptedServer() as server:
        await server.stop()
        conn = _conn(server.url, backoff=backoff, breaker=breaker, clock=clock)
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.CIRCUIT_OPEN, 2)
    # 4 refused dials: 3 backoff waits between them, then the circuit opens; the probe after
    # 45 s fails and the circuit opens again.
    assert clock.sleeps[:3] == [next(expected) for _ in range(3)]
    assert clock.sleeps[3] == pytest.approx(45.0)
    assert conn.stats.dials == 5
    assert conn.stats.failures == {"refused": 5}
