"""``start_send_many`` / ``send_many``: several messages in one write, on each transport and
on a connection.

Each message must still arrive as its own WebSocket message, in order, typed as sent; a
batch larger than the socket buffers waits for the peer (flow control) and loses nothing;
bad input is refused before anything is written; a closed transport raises as ``send``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from resilient_conn import Backoff, NotConnectedError, ResilientConnection
from resilient_conn.adapters.base import DialOptions, Transport, get_adapter
from resilient_conn.testing import ScriptedServer

pytestmark = pytest.mark.anyio


async def _open(name: str, url: str) -> Transport:
    options = DialOptions(open_timeout=2, close_timeout=1, max_size=1 << 20, max_queue=16)
    return await get_adapter(name, {"compression": None}).connect(url, None, options)


async def _send_many(ws: Transport, messages: list[Any]) -> None:
    """What the connection does with a transport's ``start_send_many``."""
    pending = ws.start_send_many(messages)
    if pending is not None:
        await pending


async def _sink(ws: ServerConnection, server: ScriptedServer) -> None:
    async for _ in ws:  # the server records each message it receives
        pass


async def test_a_batch_arrives_as_separate_messages_in_order(transport: str) -> None:
    """Text and binary messages sent in one batch arrive one by one, in order, typed."""
    batch: list[str | bytes] = [f"text {i}" if i % 3 else f"bin {i}".encode() for i in range(50)]
    async with ScriptedServer(_sink) as server:
        ws = await _open(transport, server.url)
        await _send_many(ws, batch)
        await _send_many(ws, [])  # nothing to do
        await ws.send("after")
        assert await server.wait_for_messages(51) == [*batch, "after"]
        await ws.close()


async def test_a_batch_larger_than_the_socket_buffers_waits_for_the_peer(transport: str) -> None:
    """25 MB in one batch to a server that does not read yet: the send waits for the peer
    to catch up (flow control), then every message has arrived, in order."""
    reading = anyio.Event()

    async def slow(ws: ServerConnection, server: ScriptedServer) -> None:
        await reading.wait()
        await _sink(ws, server)

    big = [f"{i:04d}".encode() + b"x" * (64 * 1024) for i in range(400)]
    async with ScriptedServer(slow) as server:
        ws = await _open(transport, server.url)
        await server.wait_for_connection(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_send_many, ws, big)
            await anyio.wait_all_tasks_blocked()
            reading.set()
        got = await server.wait_for_messages(400, timeout=30)
        assert [bytes(m)[:4] for m in got] == [f"{i:04d}".encode() for i in range(400)]
        await ws.close()


async def test_bad_input_is_refused_before_anything_is_sent(transport: str) -> None:
    """A batch with a non-message in it raises TypeError and writes none of it; the
    transport stays usable. After close, send_many raises ConnectionClosed as send does."""
    async with ScriptedServer(_sink) as server:
        ws = await _open(transport, server.url)
        with pytest.raises(TypeError):
            await _send_many(ws, ["fine", 42])
        await _send_many(ws, ["next"])
        assert await server.wait_for_messages(1) == ["next"]
        await ws.close()
        with pytest.raises(ConnectionClosed):
            await _send_many(ws, ["late"])


async def test_connection_send_many_sends_buffers_or_refuses(transport: str) -> None:
    """ResilientConnection.send_many: connected, the messages go out in order and are
    counted; disconnected, ``buffer=False`` refuses them all (NotConnectedError) and the
    default buffers them for the next transport, in order."""
    async with ScriptedServer(_sink) as server:
        conn = ResilientConnection(
            server.url,
            transport=transport,
            compression=None,
            backoff=Backoff(0.01, 0.05),
            ping_interval=0,
        )
        async with conn:
            await conn.wait_connected(5)
            await conn.send_many(["a", b"b", bytearray(b"c")])
            assert await server.wait_for_messages(3) == ["a", b"b", b"c"]
            assert conn.stats.messages_out == 3
            assert conn.stats.bytes_out == 3
            with pytest.raises(TypeError):
                await conn.send_many([object()])  # type: ignore[list-item]
            await server.stop()
            with pytest.raises(NotConnectedError):
                await conn.send_many(["lost"], buffer=False)
            await conn.send_many(["d", "e"])  # buffered while down
            await server.start()
            await conn.wait_connected(5)
            got = await server.wait_for_messages(5)
        assert got == ["a", b"b", b"c", "d", "e"]
