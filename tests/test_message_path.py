"""The message path's fast halves on both adapters: ``Transport.start_send`` writes at once and
hands back an awaitable only when the write must wait (flow control) or the transport is
closing; ``Transport.recv_nowait`` takes a whole queued message without a coroutine and leaves
everything unusual (nothing queued, fragments, invalid UTF-8, a waiting ``recv()``) to
``recv()``. Order, counters and flow control are the same as on the full paths."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from resilient_conn import Backoff, ResilientConnection
from resilient_conn.adapters.websocket import WebsocketsTransport
from resilient_conn.connection.buffer import message_size
from resilient_conn.testing import ScriptedServer

pytestmark = pytest.mark.anyio


async def _idle(ws: ServerConnection, server: ScriptedServer) -> None:
    """A server that sends nothing and waits for the close."""
    await ws.wait_closed()


def _text(payload: bytes, *, fin: bool = True, opcode: int = 0x1) -> bytes:
    """A server-to-client (unmasked) frame with a payload under 126 bytes."""
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


async def _ws_transport(conn: ResilientConnection) -> WebsocketsTransport:
    await conn.wait_connected(5)
    ws = conn._ws
    assert isinstance(ws, WebsocketsTransport)
    return ws


async def test_sends_write_at_once_and_messages_arrive_in_order_with_exact_counters(
    transport: str,
) -> None:
    """Against an echo server that keeps up, every send is written at once (start_send
    returns None: no coroutine, no timer); text (ASCII or not) and bytes come back in order,
    whichever of recv_nowait / recv delivered them, and the byte counters are UTF-8 sizes."""
    messages: list[str | bytes] = [
        f"m{i}" if i % 3 else f"é{i}" if i % 2 else f"b{i}".encode() for i in range(300)
    ]
    async with ScriptedServer() as server:
        async with ResilientConnection(
            server.url, ping_interval=0, compression=None, transport=transport
        ) as conn:
            await conn.wait_connected(5)
            ws: Any = conn._ws
            returned: list[Awaitable[None] | None] = []
            start_send = ws.start_send

            def spy(message: str | bytes) -> Awaitable[None] | None:
                result = start_send(message)
                returned.append(result)
                return result

            ws.start_send = spy
            received: list[str | bytes] = []
            with anyio.fail_after(10):
                for message in messages:
                    await conn.send(message)
                async for message in conn:
                    received.append(message)
                    if len(received) == len(messages):
                        break
    assert returned == [None] * len(messages)
    assert received == messages
    size = sum(message_size(m) for m in messages)
    assert conn.stats.messages_out == conn.stats.messages_in == len(messages)
    assert conn.stats.bytes_out == conn.stats.bytes_in == size


async def test_recv_nowait_takes_queued_messages_and_leaves_the_rest_to_recv() -> None:
    """websockets adapter, frames fed as the socket would: recv_nowait returns None with
    nothing queued, then each whole queued message in order without awaiting; a fragmented
    message is left to recv(), which reassembles it."""
    async with ScriptedServer(_idle) as server:
        async with ResilientConnection(server.url, ping_interval=0, compression=None) as conn:
            ws = await _ws_transport(conn)
            assert ws.recv_nowait() is None
            ws.data_received(_text(b"one") + _text(b"\xc3\xa9") + _text(b"\x00\x01", opcode=2))
            assert ws.recv_nowait() == "one"
            assert ws.recv_nowait() == "é"
            assert ws.recv_nowait() == b"\x00\x01"
            assert ws.recv_nowait() is None
            ws.data_received(_text(b"fra", fin=False) + _text(b"gment", opcode=0))
            assert ws.recv_nowait() is None  # fragmented: recv() joins it
            with anyio.fail_after(5):
                assert await conn.recv() == "fragment"
            assert conn.stats.messages_in == 1


async def test_invalid_utf8_is_left_to_recv_which_closes_with_1007() -> None:
    """A text frame that is not UTF-8 is not taken by recv_nowait; websockets' recv() then
    fails the transport with 1007, as without the fast path."""
    async with ScriptedServer(_idle) as server:
        async with ResilientConnection(server.url, ping_interval=0, compression=None) as conn:
            ws = await _ws_transport(conn)
            ws.data_received(_text(b"\xff\xfe"))
            assert ws.recv_nowait() is None
            with anyio.fail_after(5), pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.protocol.close_sent is not None
            assert ws.protocol.close_sent.code == 1007


async def test_recv_nowait_does_not_take_a_message_a_waiting_recv_is_owed() -> None:
    """While a recv() waits, recv_nowait returns None: the waiting recv() gets the message."""
    async with ScriptedServer(_idle) as server:
        async with ResilientConnection(server.url, ping_interval=0, compression=None) as conn:
            ws = await _ws_transport(conn)
            with anyio.fail_after(5):
                waiting = asyncio.ensure_future(ws.recv())
                await anyio.wait_all_tasks_blocked()
                ws.data_received(_text(b"owed"))
                assert ws.recv_nowait() is None
                assert await waiting == "owed"


async def test_recv_nowait_keeps_the_read_flow_control() -> None:
    """Past max_queue queued frames websockets stops reading the socket; taking them with
    recv_nowait resumes reading at the low-water mark, as recv() does."""
    async with ScriptedServer(_idle) as server:
        async with ResilientConnection(
            server.url, ping_interval=0, compression=None, max_queue=8
        ) as conn:
            ws = await _ws_transport(conn)
            ws.data_received(b"".join(_text(f"{i}".encode()) for i in range(12)))
            assert not ws.transport.is_reading()
            taken = []
            while ws.transport.is_reading() is False:
                message = ws.recv_nowait()
                assert message is not None
                taken.append(message)
            assert taken == [f"{i}" for i in range(10)]  # 12 - 10 = 2 = low water (8 // 4)
            assert [ws.recv_nowait(), ws.recv_nowait(), ws.recv_nowait()] == ["10", "11", None]


async def test_start_send_waits_only_while_the_transport_is_paused(transport: str) -> None:
    """When asyncio pauses writing (the write buffer above its high-water mark) start_send
    still writes the message but returns an awaitable that ends when writing resumes; the
    connection bounds that wait with send_timeout."""
    async with ScriptedServer() as server:
        async with ResilientConnection(
            server.url, ping_interval=0, compression=None, transport=transport
        ) as conn:
            await conn.wait_connected(5)
            ws: Any = conn._ws
            ws.pause_writing()  # what asyncio calls above the high-water mark
            pending = ws.start_send("held")
            assert pending is not None
            waiter = asyncio.ensure_future(pending)
            await anyio.wait_all_tasks_blocked()
            assert not waiter.done()
            ws.resume_writing()
            with anyio.fail_after(5):
                await waiter
                assert await conn.recv() == "held"  # it was written all along


async def test_start_send_on_a_closing_transport_raises_connection_closed(
    transport: str,
) -> None:
    """Once the transport is going away, start_send writes nothing and its awaitable raises
    ConnectionClosed (the connection then buffers the message for the next transport)."""
    async with ScriptedServer() as server:
        async with ResilientConnection(
            server.url, ping_interval=0, compression=None, transport=transport
        ) as conn:
            await conn.wait_connected(5)
            ws: Any = conn._ws
            ws.abort()
            with anyio.fail_after(5):
                await ws.wait_closed()
                pending = ws.start_send("late")
                assert pending is not None
                with pytest.raises(ConnectionClosed):
                    await pending


async def test_a_send_that_must_wait_is_bounded_by_send_timeout(transport: str) -> None:
    """Through the connection, a write left waiting (writing paused and never resumed: a peer
    that stopped reading) ends after send_timeout: the transport is aborted as a dead peer
    (send_timeout failure) and the message is buffered and flushed on the next transport."""
    async with ScriptedServer() as server:
        async with ResilientConnection(
            server.url, ping_interval=0, compression=None, transport=transport,
            send_timeout=0.2, backoff=Backoff(initial_delay=0.01, max_delay=0.05),
        ) as conn:
            await conn.wait_connected(5)
            ws: Any = conn._ws
            ws.pause_writing()  # never resumed
            with anyio.fail_after(5):
                await conn.send("stuck")  # returns once buffered, after send_timeout
            with anyio.fail_after(10):
                await conn.wait_connected()
                assert conn._ws is not ws
                assert await conn.recv() == "stuck"  # flushed on the next transport
            assert conn.stats.failures == {"send_timeout": 1}
            assert conn.stats.messages_out == 1  # counted once, when it was flushed


def test_the_installed_websockets_has_the_fast_path() -> None:
    """The websockets release installed (CI runs the lowest and the newest allowed) has every
    internal the fast halves call, so they are on."""
    from resilient_conn.adapters import _batch, websocket

    assert _batch.has_fast_path()
    assert _batch.FAST_PATH
    assert websocket._FAST_PATH


async def test_without_the_fast_path_messages_go_through_websockets_own_methods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the fast halves off (a websockets release without the internals they read),
    start_send hands every message to websockets' send() and recv_nowait returns None: text
    and bytes still arrive in order through recv(), and the counters are unchanged."""
    from resilient_conn.adapters import _batch, websocket

    monkeypatch.setattr(websocket, "_FAST_PATH", False)
    monkeypatch.setattr(_batch, "FAST_PATH", False)
    messages: list[str | bytes] = [f"m{i}" if i % 2 else f"b{i}".encode() for i in range(50)]
    async with ScriptedServer() as server:
        async with ResilientConnection(server.url, ping_interval=0, compression=None) as conn:
            ws = await _ws_transport(conn)
            assert ws.recv_nowait() is None
            pending = ws.start_send("probe")
            assert pending is not None  # websockets' own send() coroutine
            await pending
            assert await conn.recv() == "probe"
            received: list[str | bytes] = []
            with anyio.fail_after(10):
                for message in messages[:25]:
                    await conn.send(message)
                await conn.send_many(messages[25:])
                async for message in conn:
                    received.append(message)
                    if len(received) == len(messages):
                        break
    assert received == messages
    assert conn.stats.messages_in == len(messages) + 1
