"""The supervisor's fault scenarios on every transport adapter (websockets, and picows when
installed): both must behave the same under restarts, silent peers, server hints, fatal
statuses, closing with buffered sends, oversized messages, stalled handshakes.
"""

from __future__ import annotations

import asyncio
import base64

import anyio
import pytest
from websockets.asyncio.server import ServerConnection

from resilient_conn import (
    Backoff,
    CircuitBreaker,
    ConfigError,
    ConnectionFailedError,
    ConnectionState,
    DeadLetterReason,
    ResilientConnection,
)
from resilient_conn.testing import ChaosProxy, ScriptedServer
from tests._transports import HAS_PICOWS

from ._recorder import StateRecorder

S = ConnectionState
FAST = Backoff(initial_delay=0.02, max_delay=0.1, jitter="full")


pytestmark = pytest.mark.anyio



def _conn(url: str, transport: str, **kwargs: object) -> ResilientConnection:
    options: dict[str, object] = {
        "backoff": FAST,
        "stable_after": 0.2,
        "ping_interval": 0,
        "close_timeout": 1.0,
        "open_timeout": 2.0,
        "transport": transport,
    }
    options.update(kwargs)
    return ResilientConnection(url, **options)  # type: ignore[arg-type]


async def _sink(ws: ServerConnection, server: ScriptedServer) -> None:
    async for _ in ws:  # the server records each message it receives
        pass


async def test_restart_1012_reconnects_soon_and_recv_continues(transport: str) -> None:
    """Close 1012 from a restarting server is classified close_1012 on every adapter; the
    same recv loop keeps receiving on the next transport."""
    rec = StateRecorder()
    async with ScriptedServer() as server:
        async with _conn(server.url, transport) as conn:
            conn.on_state_change(rec)
            await conn.wait_connected(5)
            await conn.send("before")
            assert await conn.recv() == "before"
            before = rec.count(S.CONNECTED)
            await server.restart(code=1012, reason="restart")
            await rec.wait_state(S.CONNECTED, before + 1, timeout=10)
            await conn.send("after")
            with anyio.fail_after(5):
                assert await conn.recv() == "after"
            assert conn.stats.failures.get("close_1012") == 1
            assert conn.stats.reconnects == 1


async def test_blackholed_peer_is_aborted_by_keepalive(transport: str) -> None:
    """A silent peer (no FIN) fails the keepalive ping and the transport is aborted, not
    closed politely; after healing, messages flow again."""
    rec = StateRecorder()
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        conn = _conn(proxy.url_for("/"), transport, ping_interval=0.2, ping_timeout=0.3)
        async with conn:
            conn.on_state_change(rec)
            await conn.wait_connected(5)
            proxy.blackhole()
            await rec.wait_for(lambda: S.BACKOFF in rec.states or S.CIRCUIT_OPEN in rec.states, 5)
            assert conn.stats.failures.get("ping_timeout") == 1
            proxy.heal()
            await conn.send("still here")
            with anyio.fail_after(5):
                assert await conn.recv() == "still here"
            assert (await conn.check(5)).rtt is not None  # a ping round trip on this adapter


async def test_503_retry_after_is_honoured(transport: str) -> None:
    """HTTP 503 with Retry-After: 1 reaches the classifier with its headers on every
    adapter: the next dial waits at least 1 s (far above the 0.1 s backoff cap)."""
    rec = StateRecorder()
    async with ScriptedServer() as server:
        server.reject_next(503, headers={"Retry-After": "1"})
        conn = _conn(server.url, transport)
        conn.on_state_change(rec)
        async with conn:
            await conn.wait_connected(10)
        dials = [t for c, t in zip(rec.changes, rec.times, strict=True) if c.new is S.CONNECTING]
        assert len(dials) == 2
        assert dials[1] - dials[0] >= 1.0
        assert conn.stats.failures == {"http_503": 1}


async def test_401_is_fatal_after_one_dial(transport: str) -> None:
    """401 on the handshake: FAILED after exactly one dial; recv raises with the status."""
    async with ScriptedServer() as server:
        server.reject(401, body="bad token")
        async with _conn(server.url, transport) as conn:
            with anyio.fail_after(5), pytest.raises(ConnectionFailedError) as info:
                await conn.recv()
            assert info.value.status == 401
            assert conn.state is S.FAILED
        assert conn.stats.dials == 1


async def test_buffered_sends_flush_in_order_after_an_outage(transport: str) -> None:
    """Sends made while the server is down are buffered and delivered in order after the
    reconnect."""
    async with ScriptedServer(_sink) as server:
        async with _conn(server.url, transport) as conn:
            await conn.wait_connected(5)
            await server.stop()
            for i in range(20):
                await conn.send(f"m{i}")
            await server.start()
            delivered = await server.wait_for_messages(20, timeout=10)
    assert delivered == [f"m{i}" for i in range(20)]


async def test_close_with_buffered_sends_dead_letters_and_leaks_no_task(transport: str) -> None:
    """Closing while messages wait in the buffer dead-letters them (CLOSED); no task
    outlives the connection."""
    async with ScriptedServer() as server:
        await server.stop()
        tasks_before = asyncio.all_tasks()
        conn = _conn(server.url, transport)
        async with conn:
            for i in range(5):
                await conn.send(f"m{i}")
        assert {t for t in asyncio.all_tasks() - tasks_before if not t.done()} == set()
        assert [(d.message, d.reason) for d in conn.dead_letters] == [
            (f"m{i}", DeadLetterReason.CLOSED) for i in range(5)
        ]


async def test_close_while_connected_sends_1000_and_ends_every_task(transport: str) -> None:
    """A graceful close delivers what was sent, closes with 1000 and ends every task."""
    async with ScriptedServer() as server:
        tasks_before = asyncio.all_tasks()
        async with _conn(server.url, transport, ping_interval=0.05) as conn:
            await conn.wait_connected(5)
            await conn.send("last words")
            await server.wait_for_messages(1)
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1000
        assert {t for t in asyncio.all_tasks() - tasks_before if not t.done()} == set()


async def test_close_does_not_wait_for_unread_frames(transport: str) -> None:
    """A consumer that stopped reading while the server flooded it can still close cleanly:
    the server records 1000 although close_timeout (30 s) never had to elapse."""
    flooded = asyncio.Event()

    async def flood(ws: ServerConnection, server: ScriptedServer) -> None:
        for i in range(200):  # far more than max_queue: the client stops reading the socket
            await ws.send(f"m{i}")
        flooded.set()
        await ws.wait_closed()

    async with ScriptedServer(flood) as server:
        conn = _conn(server.url, transport, close_timeout=30.0, max_queue=4)
        async with conn:
            await conn.wait_connected(5)
            assert await conn.recv() == "m0"
            with anyio.fail_after(10):
                await flooded.wait()
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1000


async def test_message_over_max_size_closes_with_1009_and_reconnects(transport: str) -> None:
    """A message larger than max_size closes the transport with 1009 (message too big) on
    every adapter; the connection reconnects and smaller messages flow."""
    big_sent = asyncio.Event()

    async def one_big(ws: ServerConnection, server: ScriptedServer) -> None:
        if not big_sent.is_set():
            big_sent.set()
            await ws.send("x" * 5000)
        async for message in ws:
            await ws.send(message)

    rec = StateRecorder()
    async with ScriptedServer(one_big) as server:
        async with _conn(server.url, transport, max_size=1000) as conn:
            conn.on_state_change(rec)
            await rec.wait_state(S.CONNECTED, 2, timeout=10)
            await conn.send("small")
            with anyio.fail_after(5):
                assert await conn.recv() == "small"
        assert server.connections[0].close_code == 1009
        # websockets drops TCP right after its 1009 (no close frame comes back); picows waits
        # a moment, so the server's echo arrives first: either way it is message_too_big.
        assert conn.stats.failures == {"message_too_big": 1}


async def test_stalled_handshake_times_out_and_retries(transport: str) -> None:
    """A server that never answers the handshake makes the dial fail after open_timeout
    (kind "timeout"); once it answers, the connection opens."""
    rec = StateRecorder()
    async with ScriptedServer() as server:
        server.stall()
        conn = _conn(server.url, transport, open_timeout=0.3)
        conn.on_state_change(rec)
        async with conn:
            await rec.wait_state(S.BACKOFF, 1, timeout=10)
            assert conn.stats.failures.get("timeout", 0) >= 1
            server.accept()
            await conn.wait_connected(10)


async def test_headers_and_subprotocols_reach_the_server(transport: str) -> None:
    """Handshake headers (a callable, evaluated per dial) and the subprotocol offer go out;
    the server's choice is the transport's subprotocol."""
    async with ScriptedServer(subprotocols=["v2", "v1"]) as server:
        conn = _conn(
            server.url,
            transport,
            headers=lambda: {"X-Token": "t1"},
            subprotocols=["v1"],
            compression=None,
        )
        async with conn:
            await conn.wait_connected(5)
            ws = conn._ws
            assert ws is not None
            assert ws.subprotocol == "v1"
        record = server.connections[0]
        assert record.request_headers["X-Token"] == "t1"


async def test_text_and_binary_round_trip_unchanged(transport: str) -> None:
    """Text stays str, binary stays bytes, non-ASCII text and an empty message survive."""
    async with ScriptedServer() as server:
        async with _conn(server.url, transport) as conn:
            await conn.wait_connected(5)
            for message in ("héllo ✓", b"\x00\xff" * 100, "", b""):
                await conn.send(message)
                with anyio.fail_after(5):
                    got = await conn.recv()
                assert got == message
                assert type(got) is type(message)


async def test_a_thousand_messages_with_cancelled_recvs_lose_nothing(transport: str) -> None:
    """1,000 messages echoed while every third recv is cancelled before it gets one: every
    message still arrives once, in order (a cancelled recv loses nothing)."""
    async with ScriptedServer() as server:
        async with _conn(server.url, transport) as conn:
            await conn.wait_connected(5)
            got: list[str | bytes] = []
            for i in range(1000):
                if i % 3 == 0:
                    with anyio.move_on_after(0):  # cancelled at its first await
                        got.append(await conn.recv())
                await conn.send(str(i))
            with anyio.fail_after(10):
                while len(got) < 1000:
                    got.append(await conn.recv())
    assert got == [str(i) for i in range(1000)]


def test_unknown_transport_is_a_config_error() -> None:
    """transport= names one of the adapters; anything else fails at construction."""
    with pytest.raises(ConfigError, match="transport must be one of"):
        ResilientConnection("ws://127.0.0.1:1/", transport="carrier-pigeon")


def test_bad_compression_is_a_config_error() -> None:
    """compression= accepts "deflate", None or "auto" only, at construction."""
    with pytest.raises(ConfigError, match="compression"):
        ResilientConnection("ws://127.0.0.1:1/", compression="brotli")


def test_reserved_connect_arguments_are_a_config_error() -> None:
    """Arguments the adapter sets itself cannot sneak in through **connect_kwargs."""
    with pytest.raises(ConfigError, match="additional_headers"):
        ResilientConnection("ws://127.0.0.1:1/", additional_headers={"a": "b"})


@pytest.mark.skipif(not HAS_PICOWS, reason="picows not installed")
def test_picows_refuses_compression_at_construction() -> None:
    """picows cannot compress: asking for deflate fails when the connection is built, with a
    message that says what to do; compression=None and the default are fine."""
    with pytest.raises(ConfigError, match="cannot compress"):
        ResilientConnection("ws://127.0.0.1:1/", transport="picows", compression="deflate")
    ResilientConnection("ws://127.0.0.1:1/", transport="picows", compression=None)
    ResilientConnection("ws://127.0.0.1:1/", transport="picows")


@pytest.mark.skipif(not HAS_PICOWS, reason="picows not installed")
def test_picows_refuses_options_it_cannot_honour() -> None:
    """An option picows has no equivalent for is refused at construction, naming it."""
    with pytest.raises(ConfigError, match="proxy"):
        ResilientConnection("ws://127.0.0.1:1/", transport="picows", proxy=None)
    with pytest.raises(ConfigError, match="subprotocols"):
        ResilientConnection("ws://127.0.0.1:1/", transport="picows", subprotocols="v1")
    with pytest.raises(ConfigError, match="ssl"):
        ResilientConnection("ws://127.0.0.1:1/", transport="picows", ssl="yes")


@pytest.mark.skipif(not HAS_PICOWS, reason="picows not installed")
async def test_realtime_client_joins_and_broadcasts_over_picows() -> None:
    """The Realtime client runs unchanged on the picows adapter: join, acked broadcast to
    itself, and a rejoin after the server drops every connection."""
    from resilient_conn.realtime import RealtimeClient
    from resilient_conn.testing.phoenix import PhoenixServer

    async with PhoenixServer(join_error_delay=0.01) as server:
        client = RealtimeClient(
            server.realtime_url,
            apikey="anon",
            access_token="tok",
            transport="picows",
            backoff=FAST,
            stable_after=0.05,
        )
        async with client:
            room = client.channel("room1", broadcast={"ack": True, "self": True})
            await room.subscribe()
            await room.send_broadcast("ping", {"n": 1})
            with anyio.fail_after(5):
                own = await anext(aiter(room))
            assert own.payload == {"type": "broadcast", "event": "ping", "payload": {"n": 1}}
            gap = asyncio.Event()
            room.on_gap(lambda *_: gap.set())
            await server.restart()
            with anyio.fail_after(5):
                await gap.wait()  # the gap hook fires once the channel has rejoined
            old, new = server.joins_of(room.topic)
            assert old.join_ref != new.join_ref
            await room.send_broadcast("ping", {"n": 2})
            with anyio.fail_after(5):
                again = await anext(aiter(room))
            assert again.payload["payload"] == {"n": 2}


@pytest.mark.skipif(not HAS_PICOWS, reason="picows not installed")
def test_demo_on_picows_survives_every_fault_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`demo --transport picows --duration 5` injects all five faults over the picows
    adapter and ends with nothing lost (sent == delivered + dead-lettered), exit code 0."""
    import json

    from resilient_conn.cli import commands as cli

    code = cli.main(
        ["demo", "--transport", "picows", "--duration", "5", "--seed", "2", "--json"]
    )
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 0, captured.err
    assert summary["lost"] == 0
    assert summary["sent"] == summary["delivered"] + summary["dead_lettered"]
    assert summary["faults"] == ["restart", "blackhole", "503_retry_after", "flapping", "outage"]
    assert summary["failures"].get("ping_timeout", 0) >= 1
    assert summary["failures"].get("http_503", 0) >= 1
    assert "picows" in captured.err


async def test_reset_connections_are_lost_and_come_back(transport: str) -> None:
    """A peer killed mid-stream (TCP reset, no close frame) is the same failure on both
    adapters ("lost"); the connection reconnects and the same consumer keeps reading."""
    rec = StateRecorder()
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        async with _conn(proxy.url_for("/"), transport) as conn:
            conn.on_state_change(rec)
            await conn.wait_connected(5)
            before = rec.count(S.CONNECTED)
            assert proxy.reset_all() == 1
            await rec.wait_state(S.CONNECTED, before + 1, timeout=10)
            await conn.send("again")
            with anyio.fail_after(5):
                assert await conn.recv() == "again"
        assert conn.stats.failures == {"lost": 1}


async def test_dials_cut_short_leave_no_socket_open(transport: str) -> None:
    """Twenty dials to a server that never answers the handshake, each ended by
    open_timeout: every client socket is closed (the server sees each one go away)."""
    open_now = 0
    all_gone = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now
        open_now += 1
        all_gone.clear()
        try:
            while await reader.read(4096):  # until the client closes its socket
                pass
        finally:
            open_now -= 1
            writer.close()
            if open_now == 0:
                all_gone.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = _conn(
            f"ws://127.0.0.1:{port}/",
            transport,
            open_timeout=0.05,
            backoff=Backoff(initial_delay=0.001, max_delay=0.002, jitter="none"),
            breaker=CircuitBreaker(failure_threshold=1000),
        )
        async with conn:
            rec = StateRecorder()
            conn.on_state_change(rec)
            await rec.wait_for(lambda: conn.stats.dials >= 20, timeout=20)
        with anyio.fail_after(5):
            await all_gone.wait()
        assert open_now == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_two_hundred_connections_open_and_close_cleanly(transport: str) -> None:
    """200 connections at once to one server: all connect, all echo, all close with 1000,
    and no task outlives them."""
    async with ScriptedServer() as server:
        tasks_before = asyncio.all_tasks()
        conns = [_conn(server.url, transport) for _ in range(200)]
        for conn in conns:
            conn.start()
        with anyio.fail_after(20):
            for conn in conns:
                await conn.wait_connected()
            for i, conn in enumerate(conns):
                await conn.send(str(i))
            for i, conn in enumerate(conns):
                assert await conn.recv() == str(i)
        for conn in conns:
            await conn.aclose()
        await server.wait_for_closed(200, timeout=10)
        assert {c.close_code for c in server.connections} == {1000}
        assert {t for t in asyncio.all_tasks() - tasks_before if not t.done()} == set()


async def test_userinfo_in_the_url_becomes_basic_auth(transport: str) -> None:
    """user:pass@ in the URL reaches the server as an Authorization: Basic header on both
    adapters (picows alone would drop it), and is not shown in the connection's URL."""
    async with ScriptedServer() as server:
        url = server.url.replace("ws://", "ws://alice:secret@")
        async with _conn(url, transport) as conn:
            await conn.wait_connected(5)
            assert "secret" not in conn.url
        header = server.connections[0].request_headers["Authorization"]
        assert header == "Basic " + base64.b64encode(b"alice:secret").decode()
