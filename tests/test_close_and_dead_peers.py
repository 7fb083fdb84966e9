"""Every close ends, every dead peer is noticed, every cancellation of a close is safe.

The six cases of issue 12, each against real servers on 127.0.0.1: a server that stops
reading (keepalive and close bounded), an ``aclose()`` cancelled around it, closes racing
dials, ``aclose()`` from hooks, a protocol error followed by silence, and the chaos proxy
accepting from a loop callback outside any task (what broke with ``sniffio`` installed).

Time limits here are hang guards far above what a correct run takes (and below the timeouts
that the old behaviour waited out), not speed assertions.
"""

from __future__ import annotations

import asyncio
import random
import socket
from contextvars import Context
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

from resilient_conn import ResilientConnection
from resilient_conn._core.errors import ConnectionClosedError, NotConnectedError
from resilient_conn.cli import commands as cli
from resilient_conn.connection import _supervisor
from resilient_conn.connection.buffer import DeadLetterReason
from resilient_conn.connection.events import ConnectionState, StateChange
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing import ChaosProxy, ScriptedServer

from ._recorder import StateRecorder

S = ConnectionState
FAST = Backoff(initial_delay=0.01, max_delay=0.05, jitter="full")
BIG = random.Random(12).randbytes(1 << 20)  # incompressible: permessage-deflate is on

pytestmark = pytest.mark.anyio



def _conn(url: str, **kwargs: Any) -> ResilientConnection:
    options: dict[str, Any] = {
        "backoff": FAST,
        "stable_after": 0.2,
        "ping_interval": 0,
        "close_timeout": 0.5,
        "drain_timeout": 0.5,
        "open_timeout": 2.0,
    }
    options.update(kwargs)
    return ResilientConnection(url, **options)


async def _stop_reading(ws: ServerConnection, server: ScriptedServer) -> None:
    """A server that accepts, then never reads again (its TCP window fills up)."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few MiB
    ws.transport.pause_reading()
    await ws.wait_closed()


async def _fill(conn: ResilientConnection) -> None:
    """Send far more than the socket buffers hold, until the connection stops taking it."""
    with pytest.raises((NotConnectedError, ConnectionClosedError)):  # noqa: PT012
        for _ in range(256):
            await conn.send(BIG, buffer=False)
        pytest.fail("256 MiB went into a peer that does not read")


async def test_a_peer_that_stops_reading_is_noticed_by_keepalive(transport: str) -> None:
    """Keepalive bounds the ping's write as well as its pong: with the socket buffers full
    (a peer that stopped reading) the transport is declared dead (ping_timeout) instead of
    staying CONNECTED forever, and aclose() still finishes."""
    async with ScriptedServer(_stop_reading, close_timeout=0.2) as server:
        conn = _conn(
            server.url, ping_interval=1.0, ping_timeout=1.0, send_timeout=50, transport=transport
        )
        rec = StateRecorder()
        conn.on_state_change(rec)
        async with conn:
            await conn.wait_connected(5)
            with anyio.fail_after(15):  # the old keepalive never noticed
                await _fill(conn)
            await rec.wait_state(S.BACKOFF, 1, timeout=5)
            assert conn.stats.failures.get("ping_timeout") == 1
            with anyio.fail_after(10):
                await conn.aclose()
        assert conn.state is S.CLOSED


async def _ping_flood(ws: ServerConnection, server: ScriptedServer) -> None:
    """Flood the client with pings while reading nothing: its pongs pile up unsent."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws.transport.pause_reading()
    frame = b"\x89\x7d" + b"p" * 125  # an unmasked ping with the largest payload
    for _ in range(64):
        ws.transport.write(frame * 1000)
        await asyncio.sleep(0)
        if ws.transport.is_closing():
            break
    await ws.wait_closed()


async def test_a_ping_flood_from_a_peer_that_stops_reading_is_noticed(transport: str) -> None:
    """A server that floods pings and reads nothing fills the client's send buffer with
    pongs; the keepalive ping stuck behind them still times out (ping_timeout)."""
    async with ScriptedServer(_ping_flood, close_timeout=0.2) as server:
        conn = _conn(server.url, ping_interval=0.5, ping_timeout=0.5, transport=transport)
        rec = StateRecorder()
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.BACKOFF, 1, timeout=15)  # the old keepalive hung in drain
            assert conn.stats.failures.get("ping_timeout", 0) >= 1
            with anyio.fail_after(10):
                await conn.aclose()
        assert conn.state is S.CLOSED


async def test_aclose_ends_while_the_peer_stopped_reading(transport: str) -> None:
    """A close frame stuck behind a full send buffer cannot hold aclose(): past close_timeout
    the transport is aborted, the state is CLOSED and the stuck sender gets an error."""
    async with ScriptedServer(_stop_reading, close_timeout=0.2) as server:
        conn = _conn(server.url, send_timeout=50, transport=transport)
        async with conn:
            await conn.wait_connected(5)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_fill, conn)
                await anyio.sleep(0.2)  # give the sender time to fill the buffers (if it
                # has not, the close is only quicker: the test proves it is bounded)
                with anyio.fail_after(10):  # the old close drained with no limit
                    await conn.aclose()
        assert conn.state is S.CLOSED


async def test_a_send_to_a_peer_that_stopped_reading_times_out_and_reconnects(
    transport: str,
) -> None:
    """A direct send waits at most send_timeout for a peer that stopped reading; then the
    transport is aborted (send_timeout failure) and the message is buffered for the next
    transport, not lost."""
    async with ScriptedServer(_stop_reading, close_timeout=0.2) as server:
        conn = _conn(server.url, send_timeout=0.5, buffer_bytes=8 << 20, transport=transport)
        async with conn:
            await conn.wait_connected(5)
            with anyio.fail_after(15):
                for _ in range(64):
                    await conn.send(BIG)
                    if conn.stats.failures.get("send_timeout"):
                        break
            assert conn.stats.failures.get("send_timeout") == 1
            assert conn.buffered >= 1
        assert conn.state is S.CLOSED
        letters = {letter.reason for letter in conn.dead_letters}
        assert letters <= {DeadLetterReason.CLOSED}


async def test_a_cancelled_aclose_still_ends_closed_and_dead_letters_the_buffer(
    transport: str,
) -> None:
    """aclose() cancelled by an anyio scope around it: the close finishes anyway (bounded),
    the buffered messages are dead-lettered, and a later aclose() does not return early."""
    async with ScriptedServer() as server:
        await server.stop()
        conn = _conn(server.url, transport=transport)
        conn.start()
        for i in range(3):
            await conn.send(f"m{i}")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await conn.aclose()
        assert conn.state is S.CLOSED
        assert [letter.reason for letter in conn.dead_letters] == [DeadLetterReason.CLOSED] * 3
        await conn.aclose()
        assert conn.state is S.CLOSED


async def test_a_natively_cancelled_aclose_is_finished_by_the_next_one(transport: str) -> None:
    """asyncio's Task.cancel() on the task awaiting aclose(): the close goes on in its own
    task, the socket is closed, and the next aclose() waits for that same close."""
    async with ScriptedServer() as server:
        conn = _conn(server.url, transport=transport)
        conn.start()
        await conn.wait_connected(5)
        await conn.send("hello")
        task = asyncio.get_running_loop().create_task(conn.aclose())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with anyio.fail_after(5):
            await conn.aclose()
        assert conn.state is S.CLOSED
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1000


async def test_a_closer_cancelled_before_its_first_step_still_ends_everything(
    transport: str,
) -> None:
    """The closer task itself cancelled before it ran a line (an event loop shutting down
    cancels every task): the close still ends at once, ungracefully: CLOSED, the transport
    aborted, the buffer dead-lettered "closed", no task of the connection left."""
    async with ScriptedServer() as server:
        conn = _conn(server.url, transport=transport)
        conn.start()
        await conn.wait_connected(5)
        conn._live = False  # the next send is buffered, as while reconnecting
        await conn.send("buffered")
        task = asyncio.get_running_loop().create_task(conn.aclose())
        await asyncio.sleep(0)  # aclose() made the closer; it has not run yet
        closer = conn._closer
        assert closer is not None
        closer.cancel()
        with anyio.fail_after(5):
            await task
        assert conn.state is S.CLOSED
        assert [letter.message for letter in conn.dead_letters] == ["buffered"]
        await server.wait_for_closed(1)
        await anyio.wait_all_tasks_blocked()
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("resilient_conn.")
                and not t.done()] == []


@pytest.mark.parametrize("failure", [ConnectionRefusedError, TimeoutError])
async def test_a_dial_failing_as_the_close_starts_never_crashes(
    monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    """The close starts (CLOSING) while the dial is failing (refused, or open_timeout): the
    supervisor resumes with the dial's error before the close's cancellation reaches it.
    That used to be CLOSING -> BACKOFF, an IllegalTransition and a crashed supervisor; now
    the decision is "stop" and the connection ends CLOSED."""
    loop = asyncio.get_running_loop()

    async def dial(*_args: Any) -> Any:
        failed: asyncio.Future[None] = loop.create_future()
        loop.call_soon(lambda: closers.append(loop.create_task(conn.aclose())), context=Context())
        loop.call_soon(failed.set_exception, failure("dial failed"))
        # The close runs while the dial's failure is already on its way back: a cancellation
        # does not take a result away from a task about to resume, so the failure arrives.
        await failed

    monkeypatch.setattr(_supervisor, "dial", dial)
    async with ScriptedServer() as server:
        for _ in range(5):
            closers: list[asyncio.Task[None]] = []
            conn = _conn(server.url)
            rec = StateRecorder()
            conn.on_state_change(rec)
            with capture_logs() as logs:
                conn.start()
                with anyio.fail_after(10):
                    await rec.wait_state(S.CLOSED)
                    await closers[0]
            assert "resilient_conn.supervisor_crashed" not in [e["event"] for e in logs]
            assert rec.states == [S.CONNECTING, S.CLOSING, S.CLOSED]


async def test_200_closes_racing_refused_dials_all_end_closed() -> None:
    """200 connections closed at random moments while their dials are refused (closes racing
    the dial, the backoff and the circuit breaker): every one ends CLOSED, none crashes."""
    rng = random.Random(12)
    async with ScriptedServer() as server:
        await server.stop()
        crashed = 0
        for _ in range(200):
            conn = _conn(
                server.url, backoff=Backoff(initial_delay=0.001, max_delay=0.002, jitter="none")
            )
            rec = StateRecorder()
            conn.on_state_change(rec)
            with capture_logs() as logs:
                async with conn:
                    n = rng.randint(1, 8)
                    await rec.wait_for(lambda r=rec, n=n: len(r.changes) >= n)
                    for _ in range(rng.randint(0, 3)):
                        await asyncio.sleep(0)
            crashed += "resilient_conn.supervisor_crashed" in [e["event"] for e in logs]
            assert conn.state is S.CLOSED, rec.states
        assert crashed == 0


async def test_check_against_a_silent_server_does_not_crash_the_supervisor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`resilient-conn check` against a server that accepts and never answers: its close
    meets the dial's open_timeout, and the supervisor does not crash."""
    async with ScriptedServer() as server:
        server.stall()
        with anyio.fail_after(15):
            code = await anyio.to_thread.run_sync(cli.main, ["check", server.url, "--timeout", "1"])
        server.accept()
    captured = capsys.readouterr()
    assert code == 2
    assert "supervisor_crashed" not in captured.out + captured.err


async def test_aclose_from_a_state_change_hook_returns_once_closed(transport: str) -> None:
    """An async hook awaiting aclose() (on CONNECTED, and again on CLOSING) neither raises
    RuntimeError nor is cancelled: it returns once the connection is CLOSED."""
    results: list[str] = []

    async def hook(change: StateChange) -> None:
        if change.new in (S.CONNECTED, S.CLOSING):
            try:
                await change_conn.aclose()
            except BaseException as exc:
                results.append(type(exc).__name__)
                raise
            results.append(change_conn.state.name)

    async with ScriptedServer() as server:
        change_conn = _conn(server.url, transport=transport)
        change_conn.on_state_change(hook)
        rec = StateRecorder()
        change_conn.on_state_change(rec)
        change_conn.start()
        with anyio.fail_after(10):
            await rec.wait_state(S.CLOSED)
            await change_conn.aclose()
    assert results == ["CLOSED", "CLOSED"]


async def test_aclose_from_a_task_a_hook_spawned(transport: str) -> None:
    """A task spawned by a hook (it inherits the hook's context) may await aclose() too."""
    done = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def closer() -> None:
        await conn.aclose()
        done.set()

    def hook(change: StateChange) -> None:
        if change.new is S.CONNECTED:
            tasks.append(asyncio.get_running_loop().create_task(closer()))

    async with ScriptedServer() as server:
        conn = _conn(server.url, transport=transport)
        conn.on_state_change(hook)
        conn.start()
        with anyio.fail_after(10):
            await done.wait()
        assert conn.state is S.CLOSED
        await tasks[0]


async def _close_999_then_silence(ws: ServerConnection, server: ScriptedServer) -> None:
    """Send a close frame with the invalid code 999, then read nothing and say nothing."""
    ws.transport.pause_reading()
    ws.transport.write(b"\x88\x02\x03\xe7")  # FIN + close, 2 bytes: code 999
    await ws.wait_closed()


async def test_a_protocol_error_then_silence_fails_the_transport_at_once(transport: str) -> None:
    """Close code 999 is a protocol error: the client answers 1002 and the transport is
    failed at once, not after close_timeout (here 60 s) waiting for a silent peer; the
    connection reconnects and aclose() is quick."""
    async with ScriptedServer(_close_999_then_silence, close_timeout=0.2) as server:
        conn = _conn(server.url, close_timeout=60.0, transport=transport)
        rec = StateRecorder()
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.BACKOFF, 1, timeout=10)  # not close_timeout (60 s)
            assert rec.states[:3] == [S.CONNECTING, S.CONNECTED, S.BACKOFF]
            with anyio.fail_after(10):
                await conn.aclose()
        assert conn.state is S.CLOSED


async def _proxied_round_trip(errors: list[dict[str, Any]]) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    async with ScriptedServer() as server, ChaosProxy(server.host, server.port) as proxy:
        conn = _conn(proxy.url_for("/"))
        async with conn:
            await conn.wait_connected(5)
            await conn.send("through the proxy")
            with anyio.fail_after(5):
                assert await conn.recv() == "through the proxy"
            proxy.reset_all()  # torn down right after an accept, too
            await conn.wait_connected(5)


async def test_the_chaos_proxy_accepts_from_a_loop_callback_without_loop_errors() -> None:
    """The proxy's accept callback runs outside any task: it must not ask anyio (or sniffio)
    for the running loop there. Run under a plain asyncio.run() in a fresh thread (as the demo
    runs; the test runner's own context would hide it), nothing reaches the loop's exception
    handler and traffic flows (with sniffio installed every accept used to fail)."""
    errors: list[dict[str, Any]] = []

    def run() -> None:
        asyncio.run(_proxied_round_trip(errors))

    loop = asyncio.get_running_loop()
    with anyio.fail_after(30):
        await loop.run_in_executor(None, run)
    assert errors == []


class _StuckConnection:
    """Just enough of a connection for the heartbeat: a send that a peer never takes."""

    generation = 1
    is_connected = True

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.dead = asyncio.Event()

    async def send(self, message: str, *, buffer: bool = True) -> None:
        await anyio.sleep_forever()  # stuck in drain(): the peer stopped reading

    def fail_current(self, reason: str, error: BaseException | None = None) -> None:
        self.failed.append(reason)
        self.dead.set()

    def report_alive(self, rtt: float | None = None) -> None:
        raise AssertionError("no reply can come")


async def test_a_heartbeat_stuck_in_its_write_is_a_dead_transport() -> None:
    """The Realtime heartbeat bounds its own write: a heartbeat still not written by the next
    beat (a peer that stopped reading) declares the transport dead, as a missing reply does."""
    from collections import Counter

    from resilient_conn.realtime._heartbeat import Heartbeat
    from resilient_conn.realtime.protocol import RefCounter, make_serializer

    conn = _StuckConnection()
    stats: Counter[str] = Counter()
    beat = Heartbeat(
        conn,  # type: ignore[arg-type]
        make_serializer("2.0.0", "client"),
        RefCounter(),
        interval=lambda: 0.05,
        stats=stats,
        log=structlog.get_logger(),
        on_beat=lambda _now: None,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(beat.run)
        with anyio.fail_after(10):  # the old heartbeat stayed stuck in send() for good
            await conn.dead.wait()
        tg.cancel_scope.cancel()
    assert conn.failed == ["heartbeat_timeout"]
    assert stats["heartbeat_timeouts"] == 1


def test_a_notifier_is_notified_from_anywhere() -> None:
    """Notifier.notify() runs outside any event loop or task (a loop callback, a sync
    sampler) without asking anyio or sniffio which loop is running."""
    from resilient_conn._core.notify import Notifier

    notifier = Notifier()
    notifier.notify()  # no loop, no waiter: nothing to do, nothing raised

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(notifier.notify)  # a loop callback, outside any task
        with anyio.fail_after(5):
            await notifier.wait()

    asyncio.run(scenario())
