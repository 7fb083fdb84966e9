"""serve_health's built-in server under idle, trickling and busy connections: probes are never
starved, connections stay bounded, slow heads are cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from resilient_conn import HealthRegistry, serve_health

pytestmark = pytest.mark.anyio


async def get(port: int, path: str = "/livez") -> int:
    """One GET on a fresh connection; the status code.

    On asyncio's own streams: a probe cancelled while it connects closes its socket (each
    await inside cleans up). anyio's connect_tcp, cancelled just as its connecting task
    succeeded, dropped the connected socket to the garbage collector (anyio 4.5 to 4.9,
    seen as a ResourceWarning during a later test).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(10):
            while b"\r\n" not in data:
                chunk = await reader.read(4096)
                if not chunk:
                    raise anyio.EndOfStream
                data += chunk
    finally:
        writer.transport.abort()
    return int(data.split(b" ", 2)[1])


async def closed_by_server(stream: anyio.abc.SocketStream) -> bool:
    """True if the server closed ``stream`` (EOF or reset) rather than left it open."""
    try:
        await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return True
    return False


@asynccontextmanager
async def idle_connections(port: int, n: int, partial: bytes = b"") -> AsyncIterator[list[Any]]:
    """``n`` connections that send ``partial`` (maybe nothing) and then nothing more."""
    streams = []
    try:
        for _ in range(n):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            streams.append(stream)
            if partial:
                await stream.send(partial)
        yield streams
    finally:
        for stream in streams:  # forcefully: one reset socket must not leave the rest open
            await anyio.aclose_forcefully(stream)


async def test_livez_answers_while_many_idle_and_trickling_connections_are_open() -> None:
    """1,000 connections that send nothing plus 100 that sent half a head (more than 15 times
    max_connections): every probe still gets 200, and the server dropped the idle ones it
    evicted instead of holding them (bounded file descriptors)."""
    async with serve_health(HealthRegistry(name="t"), max_connections=64) as server:
        async with idle_connections(server.port, 1000) as idle:
            async with idle_connections(server.port, 100, b"GET /livez HTTP/1.1\r\nX-") as slow:
                assert [await get(server.port) for _ in range(20)] == [200] * 20
                with anyio.fail_after(20):
                    evicted = [await closed_by_server(s) for s in idle[:900]]
                assert all(evicted)  # the oldest idle ones were closed to make room
                assert len(slow) == 100
            assert await get(server.port, "/readyz") == 200


async def test_a_slow_head_is_cut_at_read_timeout_even_if_it_keeps_trickling() -> None:
    """read_timeout bounds the whole request head: a client sending a byte at a time is
    disconnected (no response), the server keeps answering others."""
    async with serve_health(HealthRegistry(name="t"), read_timeout=0.5) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            head = b"GET /livez HTTP/1.1\r\nX-Slow: " + b"a" * 1000
            cut = False
            with anyio.fail_after(20):
                for byte in head:
                    try:
                        await stream.send(bytes([byte]))
                    except (anyio.BrokenResourceError, ConnectionError):
                        cut = True
                        break
                    with anyio.move_on_after(0.05):  # pacing of the trickle, not a wait on state
                        if await closed_by_server(stream):
                            cut = True
                            break
            assert cut
        assert await get(server.port) == 200


async def test_busy_slots_are_not_evicted_and_a_newcomer_gets_503() -> None:
    """Connections whose request is being answered are never dropped for newcomers: with both
    slots busy (the app blocks), a third connection gets 503 at once; then all finish."""
    release = anyio.Event()
    started = 0
    both_busy = anyio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal started
        started += 1
        if started == 2:
            both_busy.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    registry = HealthRegistry(name="t")
    async with serve_health(registry, max_connections=2, app=slow_app) as server:
        results: list[int] = []
        async with anyio.create_task_group() as tg:

            async def one() -> None:
                results.append(await get(server.port))

            tg.start_soon(one)
            tg.start_soon(one)
            with anyio.fail_after(10):
                await both_busy.wait()
            assert await get(server.port) == 503
            release.set()
        assert results == [200, 200]


async def test_cancelling_the_server_with_many_idle_connections_leaves_nothing_behind() -> None:
    """Leaving serve_health with 200 idle connections open ends every connection task: each
    client sees its connection closed."""
    async with serve_health(HealthRegistry(name="t"), max_connections=300) as server:
        port = server.port
        streams = []
        try:
            for _ in range(200):  # one by one, so each socket opened is closed on failure
                streams.append(await anyio.connect_tcp("127.0.0.1", port))  # noqa: PERF401
            assert await get(port) == 200
        except BaseException:
            for s in streams:
                await anyio.aclose_forcefully(s)
            raise
    try:
        with anyio.fail_after(10):
            assert all([await closed_by_server(s) for s in streams])
    finally:
        for s in streams:
            await anyio.aclose_forcefully(s)


async def test_dashboard_streams_cannot_starve_a_probe() -> None:
    """With every slot held by a dashboard event stream, a probe still gets 200: the oldest
    stream is dropped for it (a browser's EventSource reconnects), the newest keeps going."""
    async with serve_health(HealthRegistry(name="t"), max_connections=2) as server:
        streams = []
        try:
            for _ in range(2):
                stream = await anyio.connect_tcp("127.0.0.1", server.port)
                streams.append(stream)
                await stream.send(b"GET /dashboard/events HTTP/1.1\r\nHost: t\r\n\r\n")
                with anyio.fail_after(10):
                    first = await stream.receive()  # the head (and maybe the first event)
                assert first.startswith(b"HTTP/1.1 200")
            assert await get(server.port) == 200
            with anyio.fail_after(10):
                while not await closed_by_server(streams[0]):  # drain events until closed
                    pass
        finally:
            for stream in streams:
                await anyio.aclose_forcefully(stream)
