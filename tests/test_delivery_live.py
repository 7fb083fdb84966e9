"""Acknowledged streams on 127.0.0.1: restarts (1012), RST resets, a server that forgets,
both directions, bounded windows and dead letters, hostile peers, takeovers, ASGI."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from resilient_conn import (
    Backoff,
    BufferFullError,
    CircuitBreaker,
    ConfigError,
    ConnectionClosedError,
    DeadLetterReason,
    ResilientConnection,
)
from resilient_conn.delivery import (
    AckedStream,
    DeliveryHub,
    GapKind,
    connect_acked,
)
from resilient_conn.delivery.envelope import (
    Data,
    Hello,
    decode,
    encode_ack,
    encode_data,
    encode_hello,
)
from resilient_conn.testing import ChaosProxy, ScriptedServer

from ._delivery_app import HubApp

pytestmark = pytest.mark.anyio

FAST = Backoff(initial_delay=0.01, max_delay=0.05, jitter="full", rng=random.Random(1))


def _conn(url: str, stream: AckedStream, **kwargs: Any) -> ResilientConnection:
    options: dict[str, Any] = {
        "backoff": FAST,
        "stable_after": 0.1,
        "ping_interval": 0,
        "open_timeout": 2.0,
        "close_timeout": 1.0,
        "on_open": stream.on_open,
        "breaker": CircuitBreaker(failure_threshold=1000, name="delivery-tests"),
    }
    options.update(kwargs)
    return ResilientConnection(url, **options)


@asynccontextmanager
async def _served(app: HubApp) -> AsyncIterator[tuple[ScriptedServer, ChaosProxy]]:
    async with (
        ScriptedServer(app.handler, ping_interval=None, close_timeout=0.5) as server,
        ChaosProxy("127.0.0.1", server.port, connect_timeout=1.0) as proxy,
    ):
        yield server, proxy


def _in_order_once(messages: list[str | bytes], senders: int, per_sender: int) -> None:
    """Every ``"k:i"`` exactly once, and each sender's messages in order."""
    assert len(messages) == len(set(messages)) == senders * per_sender
    last = dict.fromkeys(range(senders), -1)
    for m in messages:
        assert isinstance(m, str)
        k, i = map(int, m.split(":"))
        assert i == last[k] + 1, f"sender {k}: #{i} after #{last[k]}"
        last[k] = i


async def test_restarts_and_resets_lose_nothing_in_either_direction() -> None:
    """10 concurrent senders stream 1,000 messages while the server restarts twice with 1012
    and the network resets every connection (RST) twice; the server answers every 10th
    message. Both applications get every message exactly once and in order; nothing is
    dead-lettered and the connection really reconnected four times."""
    app = HubApp(DeliveryHub(), reply=lambda m: f"ack-of {m}" if m.endswith("0") else None)
    senders, per_sender = 10, 100
    replies: list[str | bytes] = []
    stream = AckedStream("restarts", window=64)
    async with _served(app) as (server, proxy):
        conn = _conn(proxy.url_for("/"), stream)
        async with conn, stream.open(conn):

            async def send(k: int) -> None:
                for i in range(per_sender):
                    await stream.send(f"{k}:{i}")

            async def faults() -> None:
                for threshold, fault in ((150, "1012"), (350, "rst"), (550, "1012"), (750, "rst")):
                    await app.wait_for(lambda t=threshold: len(app.received) >= t)
                    if fault == "1012":
                        await server.restart(code=1012)
                    else:
                        assert proxy.reset_all() >= 1

            all_replies = anyio.Event()

            async def read() -> None:
                async for message in stream:
                    replies.append(message)
                    if len(replies) == senders * per_sender // 10:
                        all_replies.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                async with anyio.create_task_group() as work:
                    work.start_soon(faults)
                    for k in range(senders):
                        work.start_soon(send, k)
                await stream.wait_acked(20)
                with anyio.fail_after(20):
                    await all_replies.wait()
                tg.cancel_scope.cancel()
    _in_order_once(app.received, senders, per_sender)
    assert sorted(replies) == sorted(f"ack-of {m}" for m in app.received if m.endswith("0"))
    assert replies == [f"ack-of {m}" for m in app.received if m.endswith("0")]
    assert stream.dead_letters == []
    assert stream.gaps == []
    assert conn.stats.reconnects >= 4
    assert stream.stats.protocol_errors == 0
    assert stream.stats.invalid_frames == 0


async def test_messages_swallowed_by_the_network_are_resent_once() -> None:
    """Messages written to a transport whose bytes never arrive (a blackhole, then RST) are
    re-sent after the reconnect, in both directions, and each application gets each of them
    exactly once, in order."""
    app = HubApp(DeliveryHub())
    stream = AckedStream("swallowed")
    got: list[str | bytes] = []
    async with _served(app) as (_server, proxy):
        conn = _conn(proxy.url_for("/"), stream)
        async with conn, stream.open(conn), anyio.create_task_group() as tg:

            async def read() -> None:
                async for message in stream:  # appended as they come: the task is cancelled
                    got.append(message)  # noqa: PERF401

            tg.start_soon(read)
            await stream.send("warm-up")
            await stream.wait_acked(5)
            session = app.hub.get("swallowed")
            assert session is not None
            proxy.blackhole()
            for i in range(50):
                await stream.send(f"up {i}")
                await session.send(f"down {i}")
            await proxy.wait_until(lambda s: s.bytes_discarded >= 2 * 50 * 6, 5)
            assert proxy.reset_all() == 1
            proxy.heal()
            await stream.wait_acked(10)
            await session.wait_acked(10)
            tg.cancel_scope.cancel()
    assert app.received == ["warm-up", *[f"up {i}" for i in range(50)]]
    assert got == [f"down {i}" for i in range(50)]
    assert stream.stats.resent >= 50
    assert session.stats.resent >= 50
    assert stream.dead_letters == []
    assert stream.gaps == []


async def test_server_that_forgets_is_reported_and_resume_prevents_duplicates() -> None:
    """A server restarted without its hub loses nothing sent to it: the client re-sends what
    the old server had not acknowledged, and both sides report the discontinuity. With
    ``resume`` (the position the application kept), no message is applied twice."""
    for with_resume in (False, True):
        first = HubApp(DeliveryHub(ack_delay=10.0, ack_every=10**6))  # acks only at hellos
        stream = AckedStream("forgetful")
        async with _served(first) as (server, proxy):
            conn = _conn(proxy.url_for("/"), stream)
            async with conn, stream.open(conn):
                for i in range(30):
                    await stream.send(str(i))
                await first.wait_for(lambda app=first: len(app.received) == 30)
                positions = dict(first.positions)
                resume = positions.get if with_resume else None
                second = HubApp(DeliveryHub(resume=resume))
                server.handler = second.handler
                await server.restart(code=1012)
                for i in range(30, 40):
                    await stream.send(str(i))
                await stream.wait_acked(10)
        applied = first.received + second.received
        assert set(applied) == {str(i) for i in range(40)}
        assert second.received == sorted(second.received, key=int)
        kinds = {g.kind for g in stream.gaps}
        assert GapKind.PEER_RESTARTED in kinds
        if with_resume:
            assert len(applied) == 40  # nothing applied twice...
            assert second.received == [str(i) for i in range(30, 40)]  # ...nor even re-sent
        else:
            assert len(applied) > 40  # the unacknowledged ones were applied again
            assert GapKind.UNKNOWN_BEFORE not in kinds  # first contact started at #1
            assert second.sessions[0].gaps == []


async def test_window_overflow_policies_dead_letter_with_reasons() -> None:
    """With no peer to acknowledge, the bounded window applies the overflow policy: raise,
    block (then BufferFullError), drop_newest and drop_oldest dead-letter with reason
    ``overflow``; a message larger than the window is ``too_large``; what is left at close
    is dead-lettered ``closed``. Every message is accounted for."""
    url = "ws://127.0.0.1:9/"  # discard port: every dial is refused, nothing is ever acked
    cases = {"raise": 0, "block": 0, "drop_newest": 2, "drop_oldest": 2}
    for policy, expected_overflow in cases.items():
        letters: list[Any] = []
        stream = AckedStream(
            f"overflow-{policy}",
            window=3,
            window_bytes=100,
            overflow=policy,
            send_timeout=0.05,
            drain_timeout=0,
            on_dead_letter=letters.append,
        )
        conn = _conn(url, stream)
        async with conn, stream.open(conn):
            seqs = [await stream.send(f"m{i}") for i in range(3)]
            assert seqs == [1, 2, 3]
            if policy in ("raise", "block"):
                with pytest.raises(BufferFullError, match="window"):
                    await stream.send("m3")
            else:
                await stream.send("m3")
                await stream.send("m4")
            assert await stream.send("x" * 101) == 0
        reasons = [letter.reason for letter in letters]
        assert reasons.count(DeadLetterReason.OVERFLOW) == expected_overflow
        assert reasons.count(DeadLetterReason.TOO_LARGE) == 1
        assert reasons.count(DeadLetterReason.CLOSED) == 3
        kept = sorted(
            str(letter.message) for letter in letters if letter.reason.value != "too_large"
        )
        sent = {"raise": 3, "block": 3, "drop_newest": 5, "drop_oldest": 5}[policy]
        assert kept == sorted(f"m{i}" for i in range(sent))
        if policy == "drop_newest":
            assert [letter.seq for letter in letters[:2]] == [0, 0]  # never numbered
        if policy == "drop_oldest":
            assert [letter.seq for letter in letters[:2]] == [1, 2]
        assert stream.stats.dead_letters["closed"] == 3


async def test_closed_stream_and_misuse_give_clear_errors() -> None:
    """Sending before open, after close, a non-str message, opening twice or on something
    that is not a ResilientConnection: each fails at once with an error that says why."""
    stream = AckedStream("misuse")
    with pytest.raises(RuntimeError, match="before open"):
        await stream.send("x")
    conn = _conn("ws://127.0.0.1:9/", stream)
    with pytest.raises(TypeError, match="ResilientConnection"):
        async with stream.open(object()):  # type: ignore[arg-type]
            pass
    stream = AckedStream("misuse2")
    conn = _conn("ws://127.0.0.1:9/", stream)
    async with conn, stream.open(conn):
        with pytest.raises(TypeError, match="str or bytes"):
            await stream.send(42)  # type: ignore[arg-type]
    with pytest.raises(ConnectionClosedError, match="closed"):
        await stream.send("late")
    with pytest.raises(ConnectionClosedError):
        await stream.recv()
    assert [m async for m in stream] == []
    with pytest.raises(RuntimeError, match="already opened"):
        async with stream.open(conn):
            pass


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "window must be"),
        ({"window_bytes": True}, "window_bytes must be"),
        ({"overflow": "sometimes"}, "overflow must be one of"),
        ({"send_timeout": 0}, "send_timeout must be"),
        ({"ack_delay": -1}, "ack_delay must be"),
        ({"ack_every": 0}, "ack_every must be"),
        ({"hello_timeout": float("nan")}, "hello_timeout must be"),
        ({"message_ttl": float("inf")}, "message_ttl must be"),
        ({"dead_letter_capacity": -1}, "dead_letter_capacity must be"),
        ({"session": "has space"}, "session must be"),
        ({"session": "x" * 129}, "session must be"),
        ({"outbox": "file.sqlite3"}, "outbox must be a DurableOutbox"),
    ],
)
def test_bad_stream_options_are_refused_at_construction(kwargs: dict[str, Any], match: str) -> None:
    """Every bad stream option is a ConfigError (a ValueError) naming the parameter."""
    with pytest.raises(ConfigError, match=match):
        AckedStream(**kwargs)


def test_bad_hub_options_are_refused_at_construction() -> None:
    """Hub limits are validated at construction with a message naming them."""
    with pytest.raises(ConfigError, match="max_sessions"):
        DeliveryHub(max_sessions=0)
    with pytest.raises(ConfigError, match="idle_ttl"):
        DeliveryHub(idle_ttl=0)
    with pytest.raises(ConfigError, match="resume"):
        DeliveryHub(resume=42)  # type: ignore[arg-type]


async def _drain(ws: Any) -> None:
    """Read until the connection closes (ConnectionClosed)."""
    while True:
        await ws.recv()


async def _raw_peer(ws: ServerConnection, frames: list[str | bytes]) -> None:
    """Speak the protocol by hand, as a server in another language would: answer the hello,
    send ``frames``, then ack whatever arrives."""
    hello = decode(await ws.recv())
    assert isinstance(hello, Hello)
    await ws.send(encode_hello(Hello(hello.session, "hand", 1, hello.epoch, hello.first - 1)))
    for frame in frames:
        await ws.send(frame)
    async for raw in ws:
        frame = decode(raw)
        if isinstance(frame, Data):
            await ws.send(encode_ack(frame.seq))


async def test_a_thousand_garbage_frames_are_counted_and_skipped() -> None:
    """A server written by hand sends 1,000 frames of garbage between valid data frames: the
    client counts and skips every one, delivers the valid messages once and in order, and
    its own messages are acknowledged."""
    rng = random.Random(7)
    junk: list[str | bytes] = []
    for _ in range(1000):
        if rng.random() < 0.5:
            junk.append(rng.randbytes(rng.randrange(0, 40)).replace(b"D", b"d"))
        else:
            junk.append(rng.choice(["", "X", "D1", "A", "H{", "Dx\nq", "H" + json.dumps([1])]))
    frames: list[str | bytes] = [encode_data(1, "one"), *junk, encode_data(2, b"two")]
    stream = AckedStream("garbage")

    async def handler(ws: ServerConnection, server: ScriptedServer) -> None:
        await _raw_peer(ws, frames)

    async with ScriptedServer(handler, ping_interval=None) as server:
        conn = _conn(server.url, stream)
        async with conn, stream.open(conn):
            assert await stream.recv() == "one"
            assert await stream.recv() == b"two"
            await stream.send("still fine")
            await stream.wait_acked(5)
    assert stream.stats.invalid_frames == 1000
    assert conn.stats.reconnects == 0


async def test_out_of_order_data_drops_the_transport_and_recovers() -> None:
    """A peer that skips a number on a live transport broke the protocol: the client drops
    that transport (counted), reconnects, and the re-sent stream is delivered without the
    hole."""
    stream = AckedStream("holes")
    attempts = 0

    async def handler(ws: ServerConnection, server: ScriptedServer) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await _raw_peer(ws, [encode_data(1, "a"), encode_data(3, "c")])
        else:
            await _raw_peer(ws, [encode_data(2, "b"), encode_data(3, "c")])

    async with ScriptedServer(handler, ping_interval=None) as server:
        conn = _conn(server.url, stream)
        async with conn, stream.open(conn):
            assert [await stream.recv() for _ in range(3)] == ["a", "b", "c"]
    assert stream.stats.protocol_errors == 1
    assert conn.stats.failures.get("delivery_protocol_error") == 1


async def test_a_server_that_never_says_hello_is_dropped_and_retried() -> None:
    """A server that accepts but never answers the hello is dropped after ``hello_timeout``
    and dialed again; messages wait in the window meanwhile and are not lost."""
    stream = AckedStream("mute", hello_timeout=0.2)
    app = HubApp(DeliveryHub())
    calls = 0

    async def handler(ws: ServerConnection, server: ScriptedServer) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await ws.wait_closed()
        else:
            await app.handler(ws, server)

    async with ScriptedServer(handler, ping_interval=None) as server:
        conn = _conn(server.url, stream)
        async with conn, stream.open(conn):
            await stream.send("patient")
            await stream.wait_acked(5)
    assert app.received == ["patient"]
    assert conn.stats.failures.get("hello_timeout") == 1


async def test_hub_refuses_bad_first_frames_and_hostile_clients() -> None:
    """The hub closes with 1002 a connection whose first frame is not a valid hello, counts
    invalid frames after it, drops a client that sends a hole, and is never broken by any of
    it: a good client is served afterwards."""
    app = HubApp(DeliveryHub(hello_timeout=0.3))
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        for first in ["hello?", "D1\nx", "A0", b"\x00\x01"]:
            async with connect(server.url) as ws:
                await ws.send(first)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert ws.close_code == 1002
        async with connect(server.url) as ws:  # says nothing at all
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        async with connect(server.url) as ws:
            await ws.send(encode_hello(Hello("hostile", "e1", 1, None, 0)))
            assert isinstance(decode(await ws.recv()), Hello)
            for i in range(1000):
                await ws.send(f"junk {i}")
            await ws.send(encode_data(1, "ok"))
            await ws.send(encode_data(3, "hole"))
            with pytest.raises(ConnectionClosed):
                await _drain(ws)
        await app.wait_for(lambda: len(app.received) == 1)
        assert app.sessions[0].stats.invalid_frames == 1000
        assert app.sessions[0].stats.protocol_errors == 1
        assert app.hub.refused == 5
        stream = AckedStream("good")
        conn = _conn(server.url, stream)
        async with conn, stream.open(conn):
            await stream.send("fine")
            await stream.wait_acked(5)
    assert app.received == ["ok", "fine"]


async def test_a_new_connection_takes_the_session_over() -> None:
    """When a client comes back while the server still holds its old connection (it has not
    noticed the loss), the new connection takes the session over: the old handler ends, and
    the session's state carries on."""
    app = HubApp(DeliveryHub())
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        async with connect(server.url) as old:
            await old.send(encode_hello(Hello("twice", "c1", 1, None, 0)))
            theirs = decode(await old.recv())
            assert isinstance(theirs, Hello)
            await old.send(encode_data(1, "first"))
            await app.wait_for(lambda: len(app.received) == 1)
            async with connect(server.url) as new:
                await new.send(encode_hello(Hello("twice", "c1", 2, theirs.epoch, 0)))
                again = decode(await new.recv())
                assert isinstance(again, Hello)
                assert again.epoch == theirs.epoch
                assert again.delivered == 1  # the session remembers #1
                await new.send(encode_data(2, "second"))
                await app.wait_for(lambda: len(app.received) == 2)
                with pytest.raises(ConnectionClosed):
                    await _drain(old)
    assert app.received == ["first", "second"]
    assert app.errors == []
    assert len(app.hub) == 1


async def test_hub_memory_is_bounded_by_max_sessions() -> None:
    """Past ``max_sessions`` the session detached the longest is evicted (its unacknowledged
    messages dead-lettered), and when every session is attached a new one is refused."""
    letters: list[Any] = []
    app = HubApp(DeliveryHub(max_sessions=2, on_dead_letter=letters.append))
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        for name in ("a", "b"):
            async with connect(server.url) as ws:
                await ws.send(encode_hello(Hello(name, "e", 1, None, 0)))
                await ws.recv()
            await app.wait_for(lambda: len(app.sessions) == len(app.hub.sessions()))
        session_a = app.hub.get("a")
        assert session_a is not None
        await session_a.send("never acked")
        async with connect(server.url) as c, connect(server.url) as d:
            await c.send(encode_hello(Hello("c", "e", 1, None, 0)))
            await c.recv()
            assert app.hub.sessions() == ["b", "c"]
            assert app.hub.evicted == 1
            await d.send(encode_hello(Hello("d", "e", 1, None, 0)))
            await d.recv()  # b was detached: evicted too
            async with connect(server.url) as e:
                await e.send(encode_hello(Hello("e", "e", 1, None, 0)))
                with pytest.raises(ConnectionClosed):
                    await e.recv()
                assert e.close_code == 1013
    assert [(letter.session, letter.message) for letter in letters] == [("a", "never acked")]


async def test_connect_acked_round_trip_and_user_on_open() -> None:
    """``connect_acked`` wires everything in one line; the user's ``on_open`` runs after the
    resume on every connect, and what it sends goes out after the re-sent messages."""
    app = HubApp(DeliveryHub())
    opened = 0

    async def on_open(stream: AckedStream) -> None:
        nonlocal opened
        opened += 1
        await stream.send(f"subscribe #{opened}")

    async with ScriptedServer(app.handler, ping_interval=None) as server:
        async with connect_acked(
            server.url, session="one-liner", on_open=on_open, backoff=FAST, ping_interval=0
        ) as stream:
            assert stream.connection is not None
            await stream.connection.wait_connected(5)
            await stream.send("hello")
            await app.wait_for(lambda: len(app.received) == 2)
            await server.restart(code=1012)
            await app.wait_for(lambda: len(app.received) == 3)
            await stream.wait_acked(5)
    assert app.received == ["subscribe #1", "hello", "subscribe #2"]


async def test_cancelling_the_client_anywhere_loses_nothing_silently() -> None:
    """The client's task is cancelled after a random number of sends, mid-stream, twenty
    times: each time the server got an in-order prefix with no duplicate, and every message
    sent is either received by the server or dead-lettered; no task is left behind."""
    rng = random.Random(3)
    for round_ in range(20):
        app = HubApp(DeliveryHub())
        letters: list[Any] = []
        stream = AckedStream(f"cancel-{round_}", drain_timeout=0, on_dead_letter=letters.append)
        sent: list[str] = []
        stop_after = rng.randrange(0, 60)
        async with ScriptedServer(app.handler, ping_interval=None) as server:
            conn = _conn(server.url, stream)
            with anyio.CancelScope() as scope:
                async with conn, stream.open(conn):
                    for i in range(100):
                        if i == stop_after:
                            scope.cancel()
                        sent.append(str(i))
                        await stream.send(str(i))
            await anyio.lowlevel.checkpoint()
        got = [int(m) for m in app.received]  # type: ignore[arg-type]
        assert got == list(range(len(got)))
        dead = {str(letter.message) for letter in letters}
        assert set(sent) <= {str(g) for g in got} | dead


async def test_a_connection_without_the_hook_is_refused_at_once() -> None:
    """Opening a stream on a connection made without ``on_open=stream.on_open`` fails at
    once with a message that says how to wire it (otherwise nothing would ever be sent)."""
    stream = AckedStream("unwired")
    conn = ResilientConnection("ws://127.0.0.1:9/", ping_interval=0)
    with pytest.raises(RuntimeError, match=r"on_open=stream\.on_open"):
        async with stream.open(conn):
            pass


async def test_rapid_resets_under_two_way_traffic_keep_both_streams_exact() -> None:
    """Thirty RST resets land at random moments while 1,500 messages flow each way (every
    message echoed), so resets hit hellos, re-sends, acks and data alike: both applications
    still see every message exactly once, in order."""
    app = HubApp(DeliveryHub(ack_every=8, ack_delay=0.001), reply=lambda m: f"echo {m}")
    stream = AckedStream("rapid", window=50, ack_every=8, ack_delay=0.001)
    echoes: list[str | bytes] = []
    rng = random.Random(11)
    total = 1500
    async with _served(app) as (_, proxy):
        conn = _conn(proxy.url_for("/"), stream)
        async with conn, stream.open(conn), anyio.create_task_group() as tg:
            done = anyio.Event()

            async def read() -> None:
                async for message in stream:
                    echoes.append(message)
                    if len(echoes) == total:
                        done.set()

            async def chaos() -> None:
                for j in range(1, 31):  # spread over the stream, each at a random moment
                    target = j * total // 31 + rng.randrange(-20, 20)
                    await app.wait_for(lambda t=target: len(app.received) >= t)
                    proxy.reset_all()

            tg.start_soon(read)
            tg.start_soon(chaos)
            for i in range(total):
                await stream.send(str(i))
            with anyio.fail_after(30):
                await done.wait()
            await stream.wait_acked(10)
            tg.cancel_scope.cancel()
    assert app.received == [str(i) for i in range(total)]
    assert echoes == [f"echo {i}" for i in range(total)]
    assert stream.stats.protocol_errors == 0
    assert conn.stats.reconnects >= 10


async def test_a_message_whose_handler_failed_is_delivered_again() -> None:
    """A server handler that raises while handling message #5 never acknowledged it: the
    client re-sends it on the next connection and the next handler gets it (and everything
    after it) once, in order. Nothing the application did not finish is lost."""
    hub = DeliveryHub()
    handled: list[str | bytes] = []
    failures = 0

    async def handler(ws: ServerConnection, server: ScriptedServer) -> None:
        nonlocal failures
        async with hub.serve(ws) as session:
            async for message in session:
                if message == "5" and failures == 0:
                    failures += 1
                    raise RuntimeError("the application crashed on #5")
                handled.append(message)

    stream = AckedStream("crashy")
    async with ScriptedServer(handler, ping_interval=None) as server:
        conn = _conn(server.url, stream)
        async with conn, stream.open(conn):
            for i in range(10):
                await stream.send(str(i))
            await stream.wait_acked(10)
    assert handled == [str(i) for i in range(10)]
    assert failures == 1
    assert conn.stats.reconnects >= 1


async def test_an_ack_for_a_message_never_sent_drops_the_transport() -> None:
    """A peer acknowledging a number we never sent is broken or hostile: the transport is
    dropped (counted), nothing is forgotten on its word, and the next connection delivers."""
    stream = AckedStream("liar")
    calls = 0
    app = HubApp(DeliveryHub())

    async def handler(ws: ServerConnection, server: ScriptedServer) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await _raw_peer(ws, [encode_ack(999)])
        else:
            await app.handler(ws, server)

    async with ScriptedServer(handler, ping_interval=None) as server:
        conn = _conn(server.url, stream)
        async with conn, stream.open(conn):
            await stream.send("kept")
            await stream.wait_acked(5)
    assert app.received == ["kept"]
    assert stream.stats.protocol_errors == 1


async def test_session_churn_keeps_the_hub_bounded() -> None:
    """300 clients, each with its own session identity, connect and leave: the hub never
    holds more than ``max_sessions`` sessions, forgetting the ones idle longest."""
    app = HubApp(DeliveryHub(max_sessions=50))
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        for i in range(300):
            async with connect(server.url, compression=None) as ws:
                await ws.send(encode_hello(Hello(f"churn-{i}", "e", 1, None, 0)))
                await ws.recv()
                await ws.send(encode_data(1, f"m{i}"))
                await app.wait_for(lambda n=i: len(app.received) == n + 1)
            assert len(app.hub) <= 50
    assert app.hub.evicted == 250
    assert app.hub.sessions()[-1] == "churn-299"
