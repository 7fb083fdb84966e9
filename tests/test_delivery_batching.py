"""How an acknowledged stream paces its writes and acks (one endpoint, a recording link).

The pump hands what is ready to the transport in batches (bounded by count and bytes), in
order, also when it re-sends after a reconnect; a receiver working through a backlog sends
an ack every ``ack_every`` messages as it goes, not once at the end.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection

from resilient_conn import Backoff, CircuitBreaker, Overflow, ResilientConnection
from resilient_conn.delivery import AckedStream, DeliveryHub
from resilient_conn.delivery._endpoint import Attachment, Endpoint
from resilient_conn.delivery._outbound import BATCH, BATCH_BYTES
from resilient_conn.delivery.envelope import Hello, decode, encode_data
from resilient_conn.delivery.state import OutboundWindow, StreamState
from resilient_conn.testing import ChaosProxy, ScriptedServer
from tests._delivery_app import HubApp
from tests._transports import TRANSPORTS

pytestmark = pytest.mark.anyio


class _RecordingLink:
    """A transport that takes every frame and remembers how they were handed over."""

    def __init__(self) -> None:
        self.batches: list[list[str | bytes]] = []
        self.frames: list[str | bytes] = []

    async def send(self, frame: str | bytes) -> None:
        self.frames.append(frame)

    async def send_many(self, frames: Sequence[str | bytes]) -> None:
        self.batches.append(list(frames))
        self.frames.extend(frames)

    def fail(self, reason: str) -> None:
        raise AssertionError(reason)

    def fast_send_many(self) -> tuple[Any, tuple[type[Exception], ...]]:
        return self.send_many, ()


def _endpoint(window: int = 1000, ack_every: int = 64) -> Endpoint:
    return Endpoint(
        StreamState("s", "mine", OutboundWindow(window, 1 << 30)),
        overflow=Overflow.BLOCK,
        send_timeout=5.0,
        message_ttl=None,
        max_queue=1000,
        ack_every=ack_every,
        ack_delay=60.0,  # only the count triggers acks here
        dead_letter_capacity=10,
    )


def _attach(ep: Endpoint, hello: Hello) -> tuple[Attachment, _RecordingLink]:
    link = _RecordingLink()
    att = Attachment(link)
    ep.begin(att)
    assert ep.apply_hello(hello, att)
    return att, link


async def test_ready_messages_go_out_in_bounded_batches_in_order_and_again_after_a_reconnect() -> (
    None
):
    """150 queued messages leave in batches of at most BATCH (64), in sequence order; after
    a reconnect whose hello says the peer delivered 100, the other 50 are re-sent in one
    batch and counted as re-sent; large messages make smaller batches (BATCH_BYTES)."""
    ep = _endpoint()
    att, link = _attach(ep, Hello("s", "theirs", 1, None, 0))
    for i in range(150):
        await ep.send(f"m{i}")
    await ep.write_ready(att)
    assert [len(b) for b in link.batches] == [BATCH, BATCH, 150 - 2 * BATCH]
    assert link.frames == [encode_data(i + 1, f"m{i}") for i in range(150)]
    assert (ep.stats.written, ep.stats.resent) == (150, 0)

    ep.detach(att)
    again, relink = _attach(ep, Hello("s", "theirs", 1, "mine", 100))
    await ep.resume(again, ep.state.hello())
    assert relink.batches == [[encode_data(i + 1, f"m{i}") for i in range(100, 150)]]
    assert (ep.stats.written, ep.stats.resent) == (200, 50)

    big = "x" * (BATCH_BYTES // 2 + 1)
    for _ in range(5):
        await ep.send(big)
    await ep.write_ready(again)
    assert [len(b) for b in relink.batches[1:]] == [2, 2, 1]  # bytes bound, one past it


async def test_a_receiver_working_through_a_backlog_acks_every_ack_every_messages() -> None:
    """200 messages already queued, taken one after another without the application
    yielding: the acker still sends A64, A128, A192 as the application goes (recv() lets it
    run), so the sender can refill its window meanwhile; the rest waits for ack_delay."""
    ep = _endpoint()
    att, link = _attach(ep, Hello("s", "theirs", 1, None, 0))
    ep.mark_ready(att)
    for seq in range(1, 201):
        assert ep.dispatch_fast(encode_data(seq, f"m{seq}"), att)
    seen: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(ep.ack_loop)
        await anyio.wait_all_tasks_blocked()
        for _ in range(200):
            message = await ep.recv()
            assert isinstance(message, str)
            seen.append(message)
        ep.done_with_taken()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert seen == [f"m{seq}" for seq in range(1, 201)]
    acks = [decode(frame) for frame in link.frames]
    assert [a.seq for a in acks] == [64, 128, 192]  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_batched_writes_lose_nothing_across_resets_on_each_transport(transport: str) -> None:
    """5 senders x 200 messages through a small window (batches of 64 in flight) while the
    network resets every connection twice, on each transport: the server application gets
    every message exactly once, each sender's in order, nothing dead-lettered."""
    app = HubApp(DeliveryHub())
    stream = AckedStream("batched", window=200)
    async with (
        ScriptedServer(app.handler, ping_interval=None, close_timeout=0.5) as server,
        ChaosProxy("127.0.0.1", server.port, connect_timeout=1.0) as proxy,
    ):
        conn = ResilientConnection(
            proxy.url_for("/"),
            on_open=stream.on_open,
            transport=transport,
            compression=None,
            backoff=Backoff(0.01, 0.05, rng=random.Random(1)),
            breaker=CircuitBreaker(failure_threshold=1000, name="batching-tests"),
            stable_after=0.1,
            ping_interval=0,
            open_timeout=2.0,
            close_timeout=1.0,
        )
        async with conn, stream.open(conn):

            async def send(k: int) -> None:
                for i in range(200):
                    await stream.send(f"{k}:{i}")

            async def resets() -> None:
                for threshold in (300, 700):
                    await app.wait_for(lambda t=threshold: len(app.received) >= t)
                    proxy.reset_all()

            async with anyio.create_task_group() as tg:
                tg.start_soon(resets)
                for k in range(5):
                    tg.start_soon(send, k)
            await stream.wait_acked(20)
    received = app.received
    assert len(received) == len(set(received)) == 1000
    for k in range(5):
        mine = [m for m in received if str(m).startswith(f"{k}:")]
        assert mine == [f"{k}:{i}" for i in range(200)]
    assert stream.dead_letters == []
    assert conn.stats.reconnects >= 2


async def test_a_hub_on_websockets_own_server_takes_queued_frames_and_answers() -> None:
    """A DeliveryHub behind websockets' own ``serve`` (its reader takes queued frames without
    a coroutine, and writes its answers in batches): 5 senders x 400 messages, every 100th
    answered; each side gets everything once and in order."""
    from websockets.asyncio.server import serve

    hub = DeliveryHub()
    received: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        async with hub.serve(ws) as session:
            async for message in session:
                received.append(message)
                if str(message).endswith("99"):  # #99, #199, #299, #399 of each sender
                    await session.send(f"ok {message}")

    stream = AckedStream("own-server")
    answers: list[str | bytes] = []
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn = ResilientConnection(
            f"ws://127.0.0.1:{port}/", on_open=stream.on_open, ping_interval=0
        )
        async with conn, stream.open(conn):

            async def send(k: int) -> None:
                for i in range(400):
                    await stream.send(f"{k}:{i}")

            async with anyio.create_task_group() as tg:
                for k in range(5):
                    tg.start_soon(send, k)
            await stream.wait_acked(20)
            with anyio.fail_after(20):
                while len(answers) < 20:
                    answers.append(await stream.recv())
    for k in range(5):
        assert [m for m in received if str(m).startswith(f"{k}:")] == [
            f"{k}:{i}" for i in range(400)
        ]
    assert len(received) == 2000
    assert answers == [f"ok {m}" for m in received if str(m).endswith("99")]


async def test_recv_nowait_takes_what_a_server_connection_has_queued() -> None:
    """``recv_nowait`` on a server connection returns the messages already queued (as
    ``recv()`` would, typed), then None once the queue is empty."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    from resilient_conn.adapters.websocket import recv_nowait, send_many

    got: list[str | bytes] = []
    done = anyio.Event()

    async def handler(ws: ServerConnection) -> None:
        got.append(await ws.recv())  # the batch arrived in one write: the rest is queued
        while (message := recv_nowait(ws)) is not None:
            got.append(message)
        done.set()
        await ws.wait_closed()

    batch: list[str | bytes] = [f"m{i}" if i % 2 else f"b{i}".encode() for i in range(50)]
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/") as client:
            await send_many(client, batch)
            with anyio.fail_after(5):
                await done.wait()
    assert got == batch
