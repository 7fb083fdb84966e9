"""Cancellation sweep: cancel dial, send, recv, flush, close (and RealtimeClient) at every
await point they have, found by stepping, and check the invariants after each.

:class:`Checkpoints` wraps an awaitable and counts its suspensions; at the ``n``-th it cancels
(an anyio scope around the caller, the supervisor's own stop via ``aclose()``, or a native
``Task.cancel()`` of the closer). The sweep runs ``n = 1, 2, ...`` until the operation
completes before its ``n``-th checkpoint, so every checkpoint it has is covered once.

After every run: ``aclose()`` ends in CLOSED, the server sees no open connection, no task of
the library is left, every message whose ``send()`` returned was delivered (once) or
dead-lettered, a cancelled ``recv()`` lost nothing, and nothing reached the loop's exception
handler. The counts are printed (``pytest -s``) and summed in ``COVERED``.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection

from resilient_conn import ResilientConnection
from resilient_conn.connection import _supervisor
from resilient_conn.connection.events import ConnectionState
from resilient_conn.realtime import RealtimeClient
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing import ScriptedServer
from resilient_conn.testing.phoenix import PhoenixServer

S = ConnectionState
MAX_STEPS = 200  # a bound on each sweep, far above what any operation has
COVERED: dict[str, int] = {}
BIG = random.Random(7).randbytes(1 << 20)  # incompressible, and drain() waits for it


def _unique(n: int) -> bytes:
    return BIG[:-8] + n.to_bytes(8, "big")




def _small_send_buffer(conn: ResilientConnection) -> None:
    """A fixed 64 KiB send buffer on the client's socket (no autotuning to megabytes)."""
    ws: Any = conn._ws
    assert ws is not None
    if conn.transport == "picows":
        sock = ws._ws.underlying_transport.get_extra_info("socket")
    else:
        sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)


async def _slow_reader(ws: ServerConnection, server: ScriptedServer) -> None:
    """Read everything, through a small receive buffer (so the client's writes wait)."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    async for _message in ws:
        pass

pytestmark = pytest.mark.anyio


class Checkpoints:
    """Await ``awaitable``; call ``hit()`` at its ``at``-th suspension; count suspensions."""

    def __init__(self, awaitable: Awaitable[Any], at: int, hit: Callable[[], None]) -> None:
        self._awaitable = awaitable
        self._at = at
        self._hit = hit
        self.count = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self._awaitable.__await__()
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                yielded = it.throw(throw) if throw is not None else it.send(send)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            if self.count == self._at:
                self._hit()
            try:
                send, throw = (yield yielded), None
            except BaseException as exc:  # handed on to the wrapped awaitable
                send, throw = None, exc


def _conn(url: str, **kwargs: Any) -> ResilientConnection:
    options: dict[str, Any] = {
        "backoff": Backoff(initial_delay=0.01, max_delay=0.05),
        "stable_after": 0.2,
        "ping_interval": 0,
        "close_timeout": 1.0,
        "drain_timeout": 1.0,
        "open_timeout": 2.0,
        "buffer_bytes": 8 << 20,
    }
    options.update(kwargs)
    return ResilientConnection(url, **options)


def _ours(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return "/resilient_conn/" in filename and "/resilient_conn/testing/" not in filename


class Invariants:
    """Collects loop errors; checks what must hold after each cancelled operation."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self._loop = asyncio.get_running_loop()
        self._previous = self._loop.get_exception_handler()
        self._loop.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def restore(self) -> None:
        """Put the loop's exception handler back."""
        self._loop.set_exception_handler(self._previous)

    async def check(
        self,
        conn: ResilientConnection,
        server: ScriptedServer,
        sent: list[str | bytes],
    ) -> None:
        """aclose() ends CLOSED; sockets closed; no task left; sent = delivered + dead."""
        with anyio.fail_after(10):
            await conn.aclose()
        assert conn.state is S.CLOSED
        await server.wait_until(lambda: not server.open_connections, 10)
        await asyncio.sleep(0)  # let finished tasks be collected
        left = [t for t in asyncio.all_tasks() if not t.done() and _ours(t)]
        assert left == []
        received = server.messages
        dead = [letter.message for letter in conn.dead_letters]
        for message in sent:
            assert received.count(message) + dead.count(message) == 1, message[:20]
        assert self.errors == []


def _start_close_from_outside(conn: ResilientConnection, closers: list[asyncio.Task[None]]) -> None:
    """What the user does at that moment: aclose() from a task of its own."""
    loop = asyncio.get_running_loop()

    def start() -> None:
        closers.append(loop.create_task(conn.aclose()))

    loop.call_soon(start, context=contextvars.Context())


def _closing_at(
    function: Callable[..., Awaitable[Any]],
    at: int,
    conn: ResilientConnection,
    closers: list[asyncio.Task[None]],
    made: list[Checkpoints],
) -> Callable[..., Any]:
    """``function`` whose ``at``-th checkpoint starts the connection's close from outside."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        cp = Checkpoints(
            function(*args, **kwargs), at, lambda: _start_close_from_outside(conn, closers)
        )
        made.append(cp)
        return cp

    return wrapped


def _cancelling_itself_at(
    function: Callable[[], Awaitable[None]], at: int, made: list[Checkpoints]
) -> Callable[[], Any]:
    """``function`` run by a task that cancels itself (natively) at its ``at``-th checkpoint."""

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        cp = Checkpoints(function(), at, task.cancel)
        made.append(cp)
        await cp

    return run


def _once(
    first: Callable[[], Awaitable[None]], then: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    """Call ``first`` the first time, ``then`` every later time."""
    calls: list[None] = []

    def call() -> Awaitable[None]:
        calls.append(None)
        return first() if len(calls) == 1 else then()

    return call


def _report(name: str, covered: int) -> None:
    COVERED[name] = covered
    print(f"\ncancellation sweep: {name}: {covered} checkpoints, total {sum(COVERED.values())}")


async def test_sweep_dial(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """Closing at each checkpoint of the dial (TCP connect, handshake) ends CLOSED with the
    half-open socket closed and no task left."""
    inv = Invariants()
    real_dial = _supervisor.dial
    try:
        async with ScriptedServer() as server:
            for at in range(1, MAX_STEPS):
                conn = _conn(server.url, transport=transport)
                closers: list[asyncio.Task[None]] = []
                dials: list[Checkpoints] = []

                dial = _closing_at(real_dial, at, conn, closers, dials)
                monkeypatch.setattr(_supervisor, "dial", dial)
                conn.start()
                with anyio.fail_after(10):
                    while not closers and not conn.is_connected:
                        await conn._changed.wait()
                await inv.check(conn, server, [])
                if dials[0].count < at:
                    break
            _report("dial on " + transport, at - 1)
    finally:
        inv.restore()


async def test_sweep_send(transport: str) -> None:
    """Cancelling send() at each checkpoint (a 1 MiB message waits in drain() for a slow
    reader): the message is delivered once, or the caller saw the cancellation; a later
    send still works."""
    inv = Invariants()
    try:
        async with ScriptedServer(_slow_reader, max_size=2 << 20) as server:
            for at in range(1, MAX_STEPS):
                conn = _conn(server.url, transport=transport)
                conn.start()
                await conn.wait_connected(5)
                _small_send_buffer(conn)
                message = _unique(at)
                with anyio.CancelScope() as scope:
                    cp = Checkpoints(conn.send(message), at, scope.cancel)
                    await cp
                # A write cancelled in drain() may still reach the peer: it left the caller's
                # hands. Only a send that returned must be delivered.
                sent: list[str | bytes] = [] if scope.cancelled_caught else [message]
                after = f"after {at}"
                await conn.send(after)
                sent.append(after)
                await server.wait_until(lambda after=after: after in server.messages, 10)
                await inv.check(conn, server, sent)
                if cp.count < at:
                    break
            _report("send on " + transport, at - 1)
    finally:
        inv.restore()


async def _ticker(ws: ServerConnection, server: ScriptedServer) -> None:
    """Answer each "go" with "tick N"."""
    n = 0
    async for _message in ws:
        n += 1
        await ws.send(f"tick {n}")


async def test_sweep_recv(transport: str) -> None:
    """Cancelling recv() at each checkpoint loses nothing: the next recv() gets the message
    the cancelled one would have returned."""
    inv = Invariants()
    try:
        async with ScriptedServer(_ticker) as server:
            for at in range(1, MAX_STEPS):
                conn = _conn(server.url, transport=transport)
                conn.start()
                await conn.wait_connected(5)
                got: list[str | bytes] = []
                with anyio.CancelScope() as scope:
                    cp = Checkpoints(conn.recv(), at, scope.cancel)
                    await conn.send(f"go {at}")
                    got.append(await cp)
                if not got:
                    with anyio.fail_after(5):
                        got.append(await conn.recv())
                assert got == ["tick 1"]
                await inv.check(conn, server, [f"go {at}"])
                if cp.count < at:
                    break
            _report("recv on " + transport, at - 1)
    finally:
        inv.restore()


async def test_sweep_flush(transport: str) -> None:
    """Closing at each checkpoint of the flush after a reconnect (buffered 256 KiB messages
    written in order): each buffered message is delivered once or dead-lettered."""
    inv = Invariants()
    try:
        async with ScriptedServer(_slow_reader, max_size=2 << 20) as server:
            for at in range(1, MAX_STEPS):
                await server.stop()
                conn = _conn(server.url, buffer_bytes=12 << 20, transport=transport)
                conn.start()
                sent: list[str | bytes] = [_unique(at * 10 + i) for i in range(8)]
                for message in sent:
                    await conn.send(message)
                closers: list[asyncio.Task[None]] = []
                flushes: list[Checkpoints] = []
                flush = _closing_at(conn._outbox.flush, at, conn, closers, flushes)
                conn._outbox.flush = flush  # type: ignore[method-assign]
                await server.start()
                with anyio.fail_after(10):
                    while not closers and not (conn.is_connected and conn.buffered == 0):
                        await conn._changed.wait()
                await inv.check(conn, server, sent)
                if flushes[0].count < at:
                    break
            _report("flush on " + transport, at - 1)
    finally:
        inv.restore()


async def test_sweep_close_caller(transport: str) -> None:
    """Cancelling the caller of aclose() at each of its checkpoints: it still ends CLOSED
    (the caller waits, shielded, for the bounded close) and buffered messages are dealt with."""
    inv = Invariants()
    try:
        async with ScriptedServer() as server:
            for at in range(1, MAX_STEPS):
                conn = _conn(server.url, transport=transport)
                conn.start()
                await conn.wait_connected(5)
                with anyio.CancelScope() as scope:
                    cp = Checkpoints(conn.aclose(), at, scope.cancel)
                    await cp
                assert conn.state is S.CLOSED
                await inv.check(conn, server, [])
                if cp.count < at:
                    break
            _report("close (caller) on " + transport, at - 1)
    finally:
        inv.restore()


async def _async_hook(change: object) -> None:
    """An async state-change hook (the closer waits for hooks like it)."""
    await asyncio.sleep(0)


async def test_sweep_close_task(transport: str) -> None:
    """Cancelling the closer task itself (as a loop shutdown would) at each of its
    checkpoints (stopping the supervisor, the closing handshake, the hooks): the connection
    still ends CLOSED at once, its socket aborted, no task left."""
    inv = Invariants()
    try:
        async with ScriptedServer(max_size=2 << 20) as server:
            for at in range(1, MAX_STEPS):
                conn = _conn(server.url, transport=transport)
                conn.on_state_change(_async_hook)
                conn.start()
                await conn.wait_connected(5)
                message = _unique(at)
                await conn.send(message)
                box: list[Checkpoints] = []
                conn._close = _cancelling_itself_at(conn._close, at, box)  # type: ignore[method-assign]
                await conn.aclose()  # its closer is cancelled, not the caller: returns
                assert conn.state is S.CLOSED
                await inv.check(conn, server, [message])
                if box[0].count < at:
                    break
            _report("close (closer task) on " + transport, at - 1)
    finally:
        inv.restore()


async def test_sweep_realtime_subscribe_and_close() -> None:
    """RealtimeClient: cancelling ``async with`` entry, channel.subscribe() and the caller of
    client.aclose() at each of their checkpoints: the connection ends CLOSED, the server sees
    no socket, no task of the library is left."""
    inv = Invariants()
    total = 0
    try:
        async with PhoenixServer() as server:
            for op in ("enter", "subscribe", "aclose"):
                for at in range(1, MAX_STEPS):
                    client = RealtimeClient(
                        server.realtime_url,
                        apikey="anon",
                        heartbeat_interval=5.0,
                        push_timeout=2.0,
                        backoff=Backoff(initial_delay=0.01, max_delay=0.05),
                    )
                    if op == "enter":
                        with anyio.CancelScope() as scope:
                            cp = Checkpoints(client.__aenter__(), at, scope.cancel)
                            await cp
                        if scope.cancelled_caught:  # a cancelled enter closes what it opened
                            assert client.connection.state is S.CLOSED
                    else:
                        await client.__aenter__()
                    channel = client.channel("room")
                    with anyio.CancelScope() as scope:
                        if op == "subscribe":
                            cp = Checkpoints(channel.subscribe(), at, scope.cancel)
                            await cp
                    if op == "aclose":
                        await channel.subscribe()
                        with anyio.CancelScope() as scope:
                            cp = Checkpoints(client.aclose(), at, scope.cancel)
                            await cp
                    with anyio.fail_after(10):
                        await client.aclose()
                    assert client.connection.state is S.CLOSED
                    with anyio.fail_after(10):
                        await server.wait_for(lambda: server.open_connections == 0)
                    await asyncio.sleep(0)
                    assert [t for t in asyncio.all_tasks() if not t.done() and _ours(t)] == []
                    assert inv.errors == []
                    if cp.count < at:
                        break
                total += at - 1
                _report(f"realtime {op}", at - 1)
    finally:
        inv.restore()
    assert total >= 2


async def test_sweep_realtime_closer_task() -> None:
    """RealtimeClient: cancelling its closer task itself at each checkpoint (leaving the
    channel, stopping its tasks, closing the connection): the next aclose() finishes the
    close, the connection ends CLOSED, no socket or task is left."""
    inv = Invariants()
    try:
        async with PhoenixServer() as server:
            for at in range(1, MAX_STEPS):
                client = RealtimeClient(server.realtime_url, apikey="anon", heartbeat_interval=5.0)
                await client.__aenter__()
                await client.channel("room").subscribe()
                box: list[Checkpoints] = []
                client._shutdown = _once(  # type: ignore[method-assign]
                    _cancelling_itself_at(client._shutdown, at, box), client._shutdown
                )
                with anyio.fail_after(10):
                    await client.aclose()
                assert client.connection.state is S.CLOSED
                with anyio.fail_after(10):
                    await server.wait_for(lambda: server.open_connections == 0)
                await asyncio.sleep(0)
                assert [t for t in asyncio.all_tasks() if not t.done() and _ours(t)] == []
                assert inv.errors == []
                if box[0].count < at:
                    break
            _report("realtime close (closer task)", at - 1)
    finally:
        inv.restore()
