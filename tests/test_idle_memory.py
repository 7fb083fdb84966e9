"""What an idle connection holds, and that holding less changed no behaviour.

The supervisor awaits the future its transport's ``serve()`` returns (no coroutine of
serve's own), the keepalive reports to its connection's methods and is its own timer
callback, equal default schedules are one object, and listener sets, probe maps and hook
sets are made on first use. Each test checks what is (not) held and that the behaviour
around it is unchanged: a cancelled wait leaves the transport open, a peer's unfinished
close still ends the transport, a late pong still fails the connection, marks still tell the
supervisor's own tasks apart. Time limits are hang guards, not speed assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection

from resilient_conn import ResilientConnection
from resilient_conn.adapters.base import DialOptions, Transport, get_adapter
from resilient_conn.adapters.keepalive import Keepalive
from resilient_conn.connection._marks import supervisor_task_name
from resilient_conn.connection.connection import in_supervisor
from resilient_conn.resilience.recovery import connection_backoff
from resilient_conn.testing import ChaosProxy, ScriptedServer

pytestmark = pytest.mark.anyio
OPTIONS = DialOptions(open_timeout=2, close_timeout=0.2, max_size=1 << 20, max_queue=16)


async def _open(name: str, url: str) -> Transport:
    return await get_adapter(name, {"compression": None}).connect(url, None, OPTIONS)


async def test_a_cancelled_wait_on_serve_leaves_the_transport_open(transport: str) -> None:
    """serve() hands back a future (no coroutine); a caller cancelled while awaiting it
    leaves the transport open, a later serve() waits again, and the server's close ends it."""
    async with ScriptedServer() as server:
        ws = await _open(transport, server.url)
        served = ws.serve()
        assert isinstance(served, asyncio.Future)
        waiter = asyncio.ensure_future(served)
        await anyio.wait_all_tasks_blocked()
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        assert ws.is_open
        again = ws.serve()
        assert isinstance(again, asyncio.Future)
        assert again is not served
        assert not again.done()
        await server.close_all(1001, "bye")
        with anyio.fail_after(5):
            await again
        assert not ws.is_open


async def test_watch_calls_back_at_the_end_and_a_cancelled_serve_beside_it_changes_nothing(
    transport: str,
) -> None:
    """watch() (how a parked connection waits: no future of its own) calls back once, in the
    context given, when the transport ends. A serve() awaited beside it and cancelled (a
    closer cancelled while it waits) leaves the transport open and the watch in place, as
    the library's own end future is never handed out to be cancelled; once ended, watch()
    says so at once."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="none")
    context = contextvars.copy_context()
    context.run(marker.set, "given")
    ended: list[str] = []
    async with ScriptedServer() as server:
        ws = await _open(transport, server.url)
        assert ws.watch(lambda _: ended.append(marker.get()), context)
        served = ws.serve()
        assert isinstance(served, asyncio.Future)
        served.cancel()  # what a cancelled task awaiting it does
        await anyio.wait_all_tasks_blocked()
        assert ws.is_open
        assert ended == []
        again = ws.serve()
        await server.close_all(1001, "bye")
        with anyio.fail_after(5):
            await again
        await anyio.wait_all_tasks_blocked()  # the callback runs on the loop's next turn
        assert ended == ["given"]
        assert not ws.watch(lambda _: ended.append("late"), None)
        assert ended == ["given"]


async def test_a_peer_close_never_finished_still_ends_a_watch() -> None:
    """A peer that starts the closing handshake once the transport is watched (parked rather
    than awaited) and never drops the TCP connection: the transport is still aborted after
    close_timeout and the watch called back (websockets alone would wait for the peer)."""
    release, go = asyncio.Event(), asyncio.Event()

    async def close_then_hold(ws: ServerConnection, server: ScriptedServer) -> None:
        await go.wait()
        ws.transport.pause_reading()
        ws.transport.write(b"\x88\x02\x03\xe8")  # FIN + close, 2 bytes: code 1000
        await release.wait()  # the TCP connection stays open, unread, until the test ends

    ended = asyncio.Event()
    async with ScriptedServer(close_then_hold) as server:
        ws = await _open("websockets", server.url)
        try:
            assert ws.watch(lambda _: ended.set(), None)
            go.set()  # the close frame comes to a watched transport
            with anyio.fail_after(10):
                await ended.wait()
        finally:
            release.set()
        assert ws.close_code == 1000
        assert not ws.is_open


async def test_a_peer_close_never_finished_still_ends_serve() -> None:
    """A peer that starts the closing handshake and never drops the TCP connection: the
    future serve() returned still completes (the transport is aborted after close_timeout),
    and the transport reports the peer's close code."""
    release = asyncio.Event()

    async def close_then_hold(ws: ServerConnection, server: ScriptedServer) -> None:
        ws.transport.pause_reading()
        ws.transport.write(b"\x88\x02\x03\xe8")  # FIN + close, 2 bytes: code 1000
        await release.wait()  # the TCP connection stays open, unread, until the test ends

    async with ScriptedServer(close_then_hold) as server:
        ws = await _open("websockets", server.url)
        try:
            with anyio.fail_after(10):
                await ws.serve()
        finally:
            release.set()
        assert ws.close_code == 1000


async def test_the_keepalive_reports_to_its_owner_and_is_its_own_timer_callback() -> None:
    """Keepalive(owner=...) calls owner.report_alive after each pong and owner.fail_current
    once on a late pong, holds no bound method (its timer's callback is the keepalive itself),
    and refuses an owner given with callbacks, or neither."""
    rtts: list[float] = []
    dead: list[tuple[str, type[BaseException]]] = []
    got = asyncio.Event()

    class Owner:
        def report_alive(self, rtt: float | None = None) -> None:
            assert rtt is not None
            rtts.append(rtt)
            got.set()

        def fail_current(self, reason: str, error: BaseException | None = None) -> None:
            assert error is not None
            dead.append((reason, type(error)))
            got.set()

    owner = Owner()
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        ws = await _open("websockets", proxy.url_for("/"))
        ka = Keepalive(ws, 0.01, 0.3, owner=owner)
        assert ka._callbacks is None
        ka.start()
        assert ka._handle is not None
        assert ka._handle._callback is ka  # type: ignore[attr-defined]
        with anyio.fail_after(5):
            await got.wait()
        assert rtts
        assert dead == []
        got.clear()
        proxy.blackhole()
        with anyio.fail_after(5):
            while not dead:
                got.clear()
                await got.wait()
        assert dead == [("ping_timeout", TimeoutError)]
        await ka.aclose()
        ws.abort()
    with pytest.raises(ValueError, match="owner"):
        Keepalive(ws, 1, 1, owner=owner, on_alive=lambda rtt: None)
    with pytest.raises(ValueError, match="owner"):
        Keepalive(ws, 1, 1)
    with pytest.raises(ValueError, match="owner"):
        Keepalive(ws, 1, 1, on_alive=lambda rtt: None)


async def test_an_idle_connection_makes_its_rarely_used_parts_on_first_use() -> None:
    """Connected and idle: the keepalive holds the connection (no bound methods), its timer
    and the parked callback share one context copy, the default schedule is one object for
    all, the supervisor tasks share one name string, and the breaker's listener set and probe
    map, the dead-letter and state-change hook sets do not exist until used; once used, they
    work as before."""
    async with ScriptedServer() as server:
        a = ResilientConnection(server.url, stable_after=0.05)
        b = ResilientConnection(server.url, stable_after=0.05)
        assert a.backoff is b.backoff
        assert a.backoff == connection_backoff()
        assert supervisor_task_name(a.name) is supervisor_task_name(b.name)
        async with a, b:
            await a.wait_connected(5)
            await b.wait_connected(5)
            assert a._state_hooks is None
            assert a._outbox._hooks is None
            assert a.breaker._hooks is None
            assert a.breaker._task_probes is None
            alive = a._alive  # parked: the keepalive is held by the connection
            assert isinstance(alive, Keepalive)
            assert alive._owner is a
            assert alive._callbacks is None
            # the parked callback runs in the keepalive's context: one copy held, not two
            served = a._ws._served  # type: ignore[union-attr]
            parked = [c for f, c in served._callbacks if getattr(f, "__self__", None) is a]
            assert parked == [alive.context]
            assert alive._handle._context is alive.context  # type: ignore[union-attr]
            # once used, each works as before
            changes: list[Any] = []
            a.on_state_change(changes.append)
            transitions: list[Any] = []
            a.breaker.add_listener(transitions.append)
            letters: list[Any] = []
            a.on_dead_letter(letters.append)
            async with a.breaker:
                pass
            await server.close_all(1001, "bye")
            with anyio.fail_after(10):
                while not any(c.new.value == "connected" for c in changes[1:]):
                    await a._changed.wait()
        assert changes[-1].new.value == "closed"
        assert letters == []


async def test_the_supervisor_mark_still_tells_its_own_tasks_apart() -> None:
    """in_supervisor(conn) is true in conn's on_open and the tasks it spawns, false in
    another connection's on_open and outside: the mark is the connection's own notifier."""
    seen: dict[str, bool] = {}
    done = asyncio.Event()

    async def on_open(conn: ResilientConnection) -> None:
        seen["own"] = in_supervisor(conn)
        seen["other"] = in_supervisor(other)
        spawned = asyncio.ensure_future(_mark(conn))
        seen["spawned"] = await spawned
        done.set()

    async def _mark(conn: ResilientConnection) -> bool:
        return in_supervisor(conn)

    async with ScriptedServer() as server:
        other = ResilientConnection(server.url)
        conn = ResilientConnection(server.url, on_open=on_open)
        async with conn:
            with anyio.fail_after(5):
                await done.wait()
            assert not in_supervisor(conn)
    assert seen == {"own": True, "other": False, "spawned": True}


async def test_a_finished_on_open_is_not_held_while_the_connection_is_idle() -> None:
    """Once on_open and the buffer flush are done, the connection no longer holds their task
    or its cancel scope (nor, through the task, the on_open mark): sends from on_open still
    go first, buffered ones follow in order, and a reconnect runs on_open again."""
    opened = 0

    async def on_open(conn: ResilientConnection) -> None:
        nonlocal opened
        opened += 1
        await conn.send(f"hello {opened}")

    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, on_open=on_open, stable_after=0.05)
        await conn.send("buffered")  # before start: goes out after on_open's send
        async with conn:
            await conn.wait_connected(5)
            with anyio.fail_after(5):
                while conn._opener is not None:
                    await anyio.wait_all_tasks_blocked()
            assert conn._opener_scope is None
            supervisor = conn._supervisor
            if supervisor is not None:  # it parks only if on_open was done before serving
                held = supervisor.get_coro().cr_frame.f_locals  # type: ignore[union-attr]
                assert not any(isinstance(v, asyncio.Task) for v in held.values())
            assert (await server.wait_for_messages(2, timeout=5))[:2] == ["hello 1", "buffered"]
            generation = conn.generation
            await server.close_all(1001, "bye")
            await conn._changed.wait_until(
                lambda: conn.generation > generation and conn._live, timeout=10
            )
            assert "hello 2" in await server.wait_for_messages(3, timeout=5)


async def _parked(server: ScriptedServer, **kwargs: Any) -> ResilientConnection:
    conn = ResilientConnection(server.url, ping_interval=20, stable_after=0.05, **kwargs)
    conn.start()
    await conn.wait_connected(5)
    await anyio.wait_all_tasks_blocked()
    assert conn._parked
    assert conn._supervisor is None
    return conn


def _our_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("resilient_conn.")]


async def test_aclose_while_parked_cleans_up_as_the_supervisor_would() -> None:
    """A close while the connection is parked (no supervisor task) stops the keepalive,
    releases the lease, closes the transport with 1000 and ends CLOSED with no task left;
    the parked callback, when the transport then ends, starts nothing."""
    async with ScriptedServer() as server:
        conn = await _parked(server)
        alive = conn._alive
        assert alive is not None
        assert alive._handle is not None  # the next ping is a pending loop timer
        ws = conn._ws
        assert ws is not None
        with anyio.fail_after(10):
            await conn.aclose()
        assert conn.state.value == "closed"
        assert not alive.running
        assert conn._lease is None
        assert not conn._parked
        assert conn._supervisor is None
        assert ws.close_code == 1000
        await anyio.wait_all_tasks_blocked()
        assert _our_tasks() == []


async def test_a_close_racing_the_end_of_a_parked_transport_wins() -> None:
    """The transport ends (aborted) and aclose() is called before the parked callback ran:
    no supervisor is started again, the connection ends CLOSED, nothing is left running."""
    async with ScriptedServer() as server:
        conn = await _parked(server)
        ws = conn._ws
        assert ws is not None
        ws.abort()
        with anyio.fail_after(10):
            await conn.aclose()
        assert conn.state.value == "closed"
        assert conn._supervisor is None
        await anyio.wait_all_tasks_blocked()
        assert _our_tasks() == []
        assert len(server.connections) == 1  # no dial after the close


async def test_a_resumed_supervisor_cancelled_before_it_ran_is_cleaned_up_by_the_closer() -> None:
    """If the task started after a parked transport ended is cancelled before it ran a
    line, the closer still does its cleanup (keepalive stopped, lease released) and the
    connection ends CLOSED."""
    async with ScriptedServer() as server:
        conn = await _parked(server)
        alive = conn._alive
        assert alive is not None
        conn._unpark(None)  # what the callback does when the transport ends
        resumed = conn._supervisor
        assert resumed is not None
        resumed.cancel()  # before its first step
        with anyio.fail_after(10):
            await conn.aclose()
        assert resumed.cancelled()
        assert conn.state.value == "closed"
        assert not alive.running
        assert conn._lease is None
        assert not conn._parked
        await anyio.wait_all_tasks_blocked()
        assert _our_tasks() == []


async def test_a_parked_connection_resumes_with_its_marks_and_reconnects() -> None:
    """When a parked connection's transport ends, the new supervisor task carries the
    supervisor's mark (a state hook it runs sees in_supervisor), counts the end as the old
    task would have, reconnects and parks again; a silent peer noticed by keepalive does the
    same."""
    marks: list[tuple[str, bool]] = []
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        conn = ResilientConnection(
            proxy.url_for("/"), ping_interval=0.05, ping_timeout=0.3, stable_after=0.05,
            backoff=connection_backoff().with_(initial_delay=0.01, max_delay=0.05),
        )
        conn.on_state_change(lambda change: marks.append((change.new.value, in_supervisor(conn))))
        async with conn:
            await conn.wait_connected(5)
            await anyio.wait_all_tasks_blocked()
            await conn._changed.wait_until(lambda: conn._parked, timeout=5)
            generation = conn.generation
            proxy.blackhole()  # keepalive: no pong within ping_timeout, abort, reconnect
            await conn._changed.wait_until(lambda: conn.generation > generation or
                                           conn.state.value == "backoff", timeout=10)
            proxy.heal()
            await conn._changed.wait_until(
                lambda: conn.generation > generation and conn._live, timeout=10
            )
            await conn._changed.wait_until(lambda: conn._parked, timeout=5)
            assert conn.stats.failures.get("ping_timeout") == 1
        assert ("backoff", True) in marks
        assert all(inside for state, inside in marks if state in ("backoff", "connecting"))


async def test_a_connection_parks_while_on_open_runs_and_a_close_from_on_open_ends_it() -> None:
    """on_open (with the flush) is the connection's task, not a helper of the supervisor:
    the connection parks while it still runs. aclose() called from on_open then behaves as
    documented: the close starts, on_open is cancelled at that await (nothing after it runs),
    and the connection ends CLOSED with no task left."""
    entered, go = asyncio.Event(), asyncio.Event()
    after: list[str] = []

    async def on_open(conn: ResilientConnection) -> None:
        entered.set()
        await go.wait()
        await conn.aclose()
        after.append("ran")  # must not run: on_open is cancelled with the close

    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, on_open=on_open, stable_after=0.05)
        conn.start()
        with anyio.fail_after(5):
            await entered.wait()
        await anyio.wait_all_tasks_blocked()
        assert conn._parked
        assert conn._supervisor is None
        opener = conn._opener
        assert opener is not None
        go.set()
        await conn._changed.wait_until(lambda: conn.state.value == "closed", timeout=10)
        await anyio.wait_all_tasks_blocked()
        assert opener.done()
        assert after == []
        assert _our_tasks() == []
        assert len(server.connections) == 1


_TEARDOWN_SCRIPT = """
import asyncio, atexit, subprocess, sys
from resilient_conn import ResilientConnection

SERVER = '''
import asyncio
from websockets.asyncio.server import serve
async def silent(ws):
    await ws.wait_closed()
async def main():
    async with serve(silent, "127.0.0.1", 0, ping_interval=None) as s:
        print(s.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
'''
late = []
atexit.register(lambda: print("changes after main:", len(late), flush=True))

async def main():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    url = "ws://127.0.0.1:%s/" % proc.stdout.readline().strip()
    done = []
    conns = [ResilientConnection(url, transport=sys.argv[1], ping_interval=0, stable_after=0.05)
             for _ in range(20)]
    for conn in conns:
        conn.on_state_change(lambda change: done and late.append(change))
        conn.start()
    for conn in conns:
        await conn.wait_connected(10)
    for _ in range(2000):  # until every supervisor has parked (no task but this one)
        if len(asyncio.all_tasks()) == 1:
            break
        await asyncio.sleep(0.005)
    print("parked:", len(asyncio.all_tasks()) == 1, flush=True)
    proc.kill()  # the server dies; its sockets' ends are read once asyncio.run tears down
    proc.wait()
    done.append(True)  # main returns with the 20 connections never closed

asyncio.run(main())
"""


def test_unclosed_parked_connections_ending_at_interpreter_teardown_say_nothing(
    transport: str,
) -> None:
    """A program whose asyncio.run() ends with parked connections never closed, their
    server dying just then: the transports end while asyncio tears the loop down, each
    resumes its supervisor in a task that loop never runs to its end. That is no error of
    the program's beyond the missing close (raw websockets says nothing there), so asyncio's
    "Task was destroyed but it is pending!" is not printed 20 times; the exit is clean."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _TEARDOWN_SCRIPT, transport],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "parked: True" in result.stdout
    # the scenario happened: the transports ended during teardown and supervisors resumed
    late = int(result.stdout.split("changes after main:")[1])
    assert late >= 20, result.stdout
    assert "Task was destroyed but it is pending" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
