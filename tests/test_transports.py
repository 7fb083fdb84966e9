"""Each Transport on its own, against a scripted websockets server, with hostile input:
fragments, bad UTF-8, oversized fragmented messages, floods, concurrent readers, sends after
close. Both adapters must answer alike (same exceptions, same close codes)."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK

from resilient_conn.adapters.base import DialOptions, Transport, get_adapter
from resilient_conn.testing import ScriptedServer

pytestmark = pytest.mark.anyio


async def _open(name: str, url: str, *, max_size: int = 1 << 20, max_queue: int = 16) -> Transport:
    options = DialOptions(open_timeout=2, close_timeout=1, max_size=max_size, max_queue=max_queue)
    return await get_adapter(name, {"compression": None}).connect(url, None, options)


async def _raw_text(ws: ServerConnection, payload: bytes) -> None:
    """Send a text frame with arbitrary (possibly invalid UTF-8) bytes."""
    ws.protocol.send_text(payload)
    ws.send_data()


async def test_fragmented_messages_are_reassembled(transport: str) -> None:
    """A text and a binary message sent in fragments arrive whole and typed."""

    async def fragments(ws: ServerConnection, server: ScriptedServer) -> None:
        await ws.send(["hé", "llo", " wörld"])
        await ws.send([b"\x00" * 10, b"\x01" * 10])
        await ws.wait_closed()

    async with ScriptedServer(fragments) as server:
        ws = await _open(transport, server.url)
        with anyio.fail_after(5):
            assert await ws.recv() == "héllo wörld"
            assert await ws.recv() == b"\x00" * 10 + b"\x01" * 10
        await ws.close()


async def test_invalid_utf8_text_closes_with_1007(transport: str) -> None:
    """A text message that is not UTF-8 closes the transport with 1007 (invalid data)."""

    async def bad(ws: ServerConnection, server: ScriptedServer) -> None:
        await _raw_text(ws, b"ok\xff\xfe")
        await ws.wait_closed()

    async with ScriptedServer(bad) as server:
        ws = await _open(transport, server.url)
        with anyio.fail_after(5), pytest.raises(ConnectionClosed):
            await ws.recv()
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1007


async def test_fragmented_message_over_max_size_closes_with_1009(transport: str) -> None:
    """Fragments that are each small but add up past max_size close with 1009."""

    async def big(ws: ServerConnection, server: ScriptedServer) -> None:
        await ws.send(["x" * 600, "y" * 600])
        await ws.wait_closed()

    async with ScriptedServer(big) as server:
        ws = await _open(transport, server.url, max_size=1000)
        with anyio.fail_after(5), pytest.raises(ConnectionClosed):
            await ws.recv()
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1009


async def test_messages_received_before_a_close_are_still_read(transport: str) -> None:
    """What the server sent before closing is returned first; then ConnectionClosedOK with
    the server's close code and reason."""

    async def say_and_go(ws: ServerConnection, server: ScriptedServer) -> None:
        for i in range(5):
            await ws.send(f"m{i}")
        await ws.close(1001, "going away")

    async with ScriptedServer(say_and_go) as server:
        ws = await _open(transport, server.url)
        await ws.wait_closed()
        got = [await ws.recv() for _ in range(5)]
        assert got == [f"m{i}" for i in range(5)]
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1001, "going away")
        assert not ws.is_open


async def test_a_second_concurrent_recv_is_a_concurrency_error(transport: str) -> None:
    """Two readers at once: the second gets ConcurrencyError; the first is unaffected."""
    async with ScriptedServer() as server:
        ws = await _open(transport, server.url)
        first = asyncio.create_task(ws.recv())
        await asyncio.sleep(0)  # let the first reader start waiting
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        await ws.send("one")
        with anyio.fail_after(5):
            assert await first == "one"
        await ws.close()


async def test_send_and_ping_after_close_raise_connection_closed(transport: str) -> None:
    """After close(), send and ping raise ConnectionClosed (not a library-specific error)."""
    async with ScriptedServer() as server:
        ws = await _open(transport, server.url)
        await ws.close(1000, "done")
        with pytest.raises(ConnectionClosed):
            await ws.send("late")
        with pytest.raises(ConnectionClosed):
            await ws.ping()
        assert ws.close_code == 1000


async def test_a_flood_is_bounded_by_max_queue_and_nothing_is_lost(transport: str) -> None:
    """A server sending 1,000 messages to a client that does not read: the client stops
    reading the socket (the server's send blocks), then the consumer gets all 1,000 in order."""
    sent = 0

    async def flood(ws: ServerConnection, server: ScriptedServer) -> None:
        nonlocal sent
        for i in range(1000):
            await ws.send(f"{i:04d}" + "x" * 2000)
            sent += 1
        await ws.wait_closed()

    async with ScriptedServer(flood) as server:
        ws = await _open(transport, server.url, max_queue=4)
        await server.wait_for_connection(1)
        got = [await ws.recv()]  # the flood is under way
        with anyio.fail_after(10):
            while len(got) < 1000:
                got.append(await ws.recv())
        assert [str(m)[:4] for m in got] == [f"{i:04d}" for i in range(1000)]
        await ws.close()


async def test_ping_flood_from_the_server_is_answered(transport: str) -> None:
    """500 pings from the server are all answered (pongs), and messages still flow."""

    async def pinger(ws: ServerConnection, server: ScriptedServer) -> None:
        waiters = [await ws.ping() for _ in range(500)]
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        await ws.send("pongs all came")
        await ws.wait_closed()

    async with ScriptedServer(pinger) as server:
        ws = await _open(transport, server.url)
        with anyio.fail_after(10):
            assert await ws.recv() == "pongs all came"
        await ws.close()


async def test_close_against_a_peer_that_never_answers_aborts_after_close_timeout(
    transport: str,
) -> None:
    """close() waits close_timeout (1 s) for the server's close frame at most, then drops
    the connection; it never hangs."""
    from resilient_conn.testing import ChaosProxy

    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        ws = await _open(transport, proxy.url_for("/"))
        proxy.blackhole()
        with anyio.fail_after(5):
            await ws.close()
        assert not ws.is_open
        with pytest.raises(ConnectionClosed):
            await ws.recv()
