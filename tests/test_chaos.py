"""ChaosProxy: every fault observed from a real client (websockets, or raw TCP for FIN/RST)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidMessage
from websockets.protocol import State

from resilient_conn.testing import ChaosProxy, ScriptedServer
from tests._dial import dial

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def proxied() -> AsyncIterator[tuple[ScriptedServer, ChaosProxy]]:
    """An echo server with a chaos proxy in front of it."""
    async with ScriptedServer() as server, ChaosProxy(server.host, server.port) as proxy:
        yield server, proxy


async def round_trip(ws: ClientConnection, message: str = "x") -> float:
    """Send ``message`` to the echo server and return how long the echo took."""
    start = time.monotonic()
    await ws.send(message)
    assert await ws.recv() == message
    return time.monotonic() - start


async def test_clean_pipe_forwards_a_websocket_session() -> None:
    """With no fault, a client talks to the echo server through the proxy as if directly."""
    async with proxied() as (server, proxy), dial(proxy.url_for("/room?x=1")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        record = await server.wait_for_connection(1)
        assert record.path == "/room?x=1"
        stats = proxy.stats
        assert stats.connections_accepted == 1
        assert stats.connections_active == 1
        assert stats.bytes_upstream > 0
        assert stats.bytes_downstream > 0
    assert proxy.url_for("/a") == f"ws://127.0.0.1:{proxy.port}/a"
    assert proxy.url_for("/a", scheme="wss").startswith("wss://127.0.0.1:")


async def test_latency_adds_at_least_the_set_delay_to_a_round_trip() -> None:
    """latency(d) on both directions makes an echo round trip take at least 2*d."""
    delay = 0.1
    async with proxied() as (_, proxy), dial(proxy.url_for()) as ws:
        before = await round_trip(ws)
        proxy.latency(delay)
        after = await round_trip(ws)
        assert after >= 2 * delay
        assert after > before
        proxy.heal()
        await round_trip(ws)  # still works after heal


async def test_latency_on_one_direction_only_delays_that_direction() -> None:
    """latency(d, direction="upstream") delays the round trip by at least d (once)."""
    delay = 0.1
    async with proxied() as (_, proxy), dial(proxy.url_for()) as ws:
        proxy.latency(delay, direction="upstream")
        assert await round_trip(ws) >= delay


async def test_latency_with_jitter_keeps_messages_in_order() -> None:
    """Jittered delays never reorder the byte stream: 40 echoes come back in order."""
    async with proxied() as (_, proxy), dial(proxy.url_for()) as ws:
        proxy.latency(0.005, jitter=0.03)
        sent = [f"m{i}" for i in range(40)]
        for message in sent:
            await ws.send(message)
        received = [await ws.recv() for _ in sent]
        assert received == sent


async def test_blackhole_leaves_pings_unanswered_and_the_socket_open() -> None:
    """A blackholed connection is a silent peer: a ping times out, yet no close is seen."""
    async with proxied() as (server, proxy), dial(proxy.url_for()) as ws:
        await round_trip(ws)
        proxy.blackhole()
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pong), 0.3)
        assert ws.state is State.OPEN
        assert proxy.stats.connections_active == 1
        assert len(server.open_connections) == 1
        assert proxy.stats.bytes_discarded > 0
        proxy.heal()
        await ws.ping()  # flows again after heal
        assert await round_trip(ws, "after") >= 0


async def test_blackhole_discards_data_sent_meanwhile() -> None:
    """Data sent while blackholed is lost, as on a real blackhole.

    After heal, the next message is the first one the server sees.
    """
    async with proxied() as (server, proxy), dial(proxy.url_for()) as ws:
        proxy.blackhole(direction="upstream")
        await ws.send("lost")
        await proxy.wait_until(lambda s: s.bytes_discarded > 0)
        proxy.heal()
        await ws.send("kept")
        assert await ws.recv() == "kept"
        assert server.messages == ["kept"]


async def test_reset_all_gives_the_client_an_abnormal_close() -> None:
    """reset_all() aborts with RST: the client's recv raises ConnectionClosedError, 1006."""
    async with proxied() as (server, proxy), dial(proxy.url_for()) as ws:
        await round_trip(ws)
        assert proxy.reset_all() == 1
        with pytest.raises(ConnectionClosedError) as exc_info:
            await ws.recv()
        assert exc_info.value.rcvd is None
        assert ws.close_code == 1006
        await proxy.wait_for_active(0)
        await server.wait_for_closed(1)
        assert proxy.stats.resets == 1


async def test_close_all_ends_the_client_connection() -> None:
    """close_all() closes both sides with FIN: the client sees its connection end."""
    async with proxied() as (server, proxy), dial(proxy.url_for()) as ws:
        await round_trip(ws)
        assert proxy.close_all() == 1
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1006  # no close frame, just the end of the stream
        await server.wait_for_closed(1)
        assert proxy.stats.closes == 1


@asynccontextmanager
async def raw_client(proxy: ChaosProxy) -> AsyncIterator[asyncio.StreamReader]:
    """A raw TCP client through the proxy (to tell FIN from RST), connected end to end."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        await proxy.wait_for_active(1)
        yield reader
    finally:
        writer.transport.abort()


async def test_close_all_sends_fin_and_reset_all_sends_rst_to_a_raw_client() -> None:
    """At the TCP level, close_all() is an EOF and reset_all() is ECONNRESET."""
    async with proxied() as (_, proxy):
        async with raw_client(proxy) as reader:
            proxy.close_all()
            assert await reader.read(10) == b""
        async with raw_client(proxy) as reader:
            proxy.reset_all()
            with pytest.raises(ConnectionResetError):
                await reader.read(10)


async def test_refuse_makes_dials_fail_and_heal_lets_the_next_one_through() -> None:
    """refuse() gives ConnectionRefusedError on dial; heal() listens again on the same port."""
    async with proxied() as (_, proxy):
        port = proxy.port
        proxy.refuse()
        assert proxy.stats.refusing
        with pytest.raises(ConnectionRefusedError):
            async with dial(proxy.url_for()):
                pass
        proxy.heal()
        assert proxy.port == port
        async with dial(proxy.url_for()) as ws:
            await round_trip(ws)


async def test_refuse_leaves_existing_connections_alone() -> None:
    """An open connection keeps working while new dials are refused."""
    async with proxied() as (_, proxy), dial(proxy.url_for()) as ws:
        proxy.refuse()
        await round_trip(ws)
        proxy.heal()


async def test_accept_and_close_fails_every_handshake_and_counts_them() -> None:
    """accept_and_close(): each dial connects then gets EOF, so every handshake fails."""
    async with proxied() as (server, proxy):
        proxy.accept_and_close()
        for _ in range(3):
            with pytest.raises(InvalidMessage):
                async with dial(proxy.url_for()):
                    pass
        stats = proxy.stats
        assert stats.connections_accepted == 3
        assert stats.connections_refused == 3
        assert server.connection_count == 0
        proxy.heal()
        async with dial(proxy.url_for()) as ws:
            await round_trip(ws)


async def test_bandwidth_limits_throughput() -> None:
    """A B-byte message at R B/s takes at least B/R to come through (lower bound only)."""
    rate, size = 100_000, 20_000
    async with proxied() as (_, proxy), dial(proxy.url_for()) as ws:
        proxy.bandwidth(rate, direction="upstream")
        payload = os.urandom(size)
        start = time.monotonic()
        await ws.send(payload)
        assert await ws.recv() == payload
        assert time.monotonic() - start >= size / rate


async def test_cut_after_drops_the_connection_after_n_bytes() -> None:
    """cut_after(N): exactly N more bytes get through, then the client's connection drops."""
    limit = 100
    async with proxied() as (_, proxy), dial(proxy.url_for()) as ws:
        await round_trip(ws)
        before = proxy.stats.bytes_downstream
        proxy.cut_after(limit, direction="downstream")
        await ws.send("y" * 1000)
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        stats = await proxy.wait_for_active(0)
        assert stats.bytes_downstream - before == limit
        assert stats.cuts == 1


async def test_cut_after_with_fin_delivers_exactly_n_bytes_to_a_raw_client() -> None:
    """cut_after(N, reset=False): a raw client reads exactly N bytes, then EOF."""

    async def blurt(ws: Any, server: ScriptedServer) -> None:
        await ws.wait_closed()

    async with ScriptedServer(blurt) as server, ChaosProxy(server.host, server.port) as proxy:
        proxy.cut_after(37, direction="downstream", reset=False)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            writer.write(
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            received = b""
            with anyio.fail_after(5):
                while chunk := await reader.read(1024):
                    received += chunk
            assert len(received) == 37
            assert received.startswith(b"HTTP/1.1 101")
        finally:
            writer.transport.abort()


async def test_ten_megabytes_are_forwarded_intact_both_ways() -> None:
    """10 MiB sent through the proxy to the echo server come back byte for byte."""
    chunks = [os.urandom(256 * 1024) for _ in range(40)]
    sent, received = hashlib.sha256(), hashlib.sha256()
    async with proxied() as (_, proxy), dial(proxy.url_for(), max_size=None) as ws:

        async def send_all() -> None:
            for chunk in chunks:
                sent.update(chunk)
                await ws.send(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all)
            total = 0
            while total < 40 * 256 * 1024:
                message = await ws.recv()
                assert isinstance(message, bytes)
                received.update(message)
                total += len(message)
        assert received.hexdigest() == sent.hexdigest()
        stats = proxy.stats
        assert stats.bytes_upstream >= 10 * 1024 * 1024
        assert stats.bytes_downstream >= 10 * 1024 * 1024


async def test_unreachable_upstream_resets_the_client_and_is_counted() -> None:
    """When the upstream refuses, the client's connection is dropped and counted."""
    async with ScriptedServer() as server:
        port = server.port
    async with ChaosProxy("127.0.0.1", port) as proxy:
        with pytest.raises((InvalidMessage, OSError)):
            async with dial(proxy.url_for()):
                pass
        stats = await proxy.wait_until(lambda s: s.upstream_failures == 1)
        assert stats.connections_active == 0


async def test_exit_leaves_no_task_and_closes_the_port() -> None:
    """Leaving the proxy ends every task it started and closes its listening socket.

    It is left with open, delayed and blackholed connections.
    """
    async with ScriptedServer() as server:
        before = asyncio.all_tasks()
        async with ChaosProxy(server.host, server.port) as proxy:
            port = proxy.port
            async with dial(proxy.url_for()) as ws1, dial(proxy.url_for()) as ws2:
                proxy.latency(0.05, direction="downstream")
                await ws1.send("a")
                proxy.blackhole(direction="upstream")
                await ws2.send("b")
                await proxy.wait_until(lambda s: s.bytes_discarded > 0)
                proxy_tasks = asyncio.all_tasks() - before
                assert proxy_tasks  # the proxy did run tasks
        await anyio.lowlevel.checkpoint()
        assert asyncio.all_tasks() - before == set()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"listen_host": "0.0.0.0"}, "listen_host"),
        ({"listen_host": "localhost"}, "listen_host"),
        ({"listen_port": 70000}, "listen_port"),
        ({"connect_timeout": 0}, "connect_timeout"),
    ],
)
def test_bad_constructor_arguments_raise_value_error_naming_them(
    kwargs: dict[str, Any], name: str
) -> None:
    """A proxy refuses to listen anywhere but 127.0.0.1 and rejects bad numbers."""
    with pytest.raises(ValueError, match=name):
        ChaosProxy("127.0.0.1", 8080, **kwargs)


def test_bad_upstream_raises_value_error() -> None:
    """An empty upstream host or a port out of range is a ValueError naming it."""
    with pytest.raises(ValueError, match="upstream_host"):
        ChaosProxy("", 8080)
    with pytest.raises(ValueError, match="upstream_port"):
        ChaosProxy("127.0.0.1", 0)


def test_bad_fault_arguments_raise_value_error_naming_them() -> None:
    """Negative delays, a zero rate, a negative cut or an unknown direction are rejected."""
    proxy = ChaosProxy("127.0.0.1", 8080)
    with pytest.raises(ValueError, match="seconds"):
        proxy.latency(-1)
    with pytest.raises(ValueError, match="jitter"):
        proxy.latency(0.1, jitter=float("nan"))
    with pytest.raises(ValueError, match="bytes_per_second"):
        proxy.bandwidth(0)
    with pytest.raises(ValueError, match="nbytes"):
        proxy.cut_after(-1)
    with pytest.raises(ValueError, match="direction"):
        proxy.blackhole(direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        proxy.url_for("no-slash")


async def test_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The runnable example in docs/testing.md works as documented."""
    text = (Path(__file__).parent.parent / "docs" / "testing.md").read_text()
    section = text.split("## Testing your own code against faults", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(match.group(1), "docs/testing.md", "exec"), namespace)
    await namespace["main"]()
    out = capsys.readouterr().out
    assert "ping unanswered while blackholed; socket still open: OPEN" in out
    assert "server saw: ['hello', 'back']" in out
