"""A hostile or broken Realtime server cannot kill the client, and a flood costs bounded work.

Reproductions from issue 13: a ``presence_diff``/``presence_state`` whose payload is not the
expected dict used to raise in the reader and cancel the client's task group (and the user's
code inside ``async with``); an async ``on()`` handler got one task per inbound message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from resilient_conn.realtime import Channel, ChannelState, Message, RealtimeClient
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing.phoenix import PhoenixServer

pytestmark = pytest.mark.anyio

T = 5.0  # bound on every wait


@pytest.fixture
async def server() -> AsyncIterator[PhoenixServer]:
    """A running PhoenixServer."""
    async with PhoenixServer(join_error_delay=0.01) as srv:
        yield srv


def make_client(server: PhoenixServer, **kwargs: Any) -> RealtimeClient:
    """A Supabase-style client with fast backoffs aimed at ``server``."""
    options: dict[str, Any] = {
        "apikey": "anon",
        "heartbeat_interval": 5.0,
        "push_timeout": 2.0,
        "backoff": Backoff(initial_delay=0.01, max_delay=0.05),
        "stable_after": 0.05,
    }
    options.update(kwargs)
    return RealtimeClient(server.realtime_url, **options)


async def marker(server: PhoenixServer, room: Channel, name: str = "marker") -> None:
    """Broadcast ``name`` and wait until the channel's queue yields it.

    Frames are read in order, so once the marker arrived every frame sent before it has been
    decoded and dispatched (or counted as malformed).
    """
    await server.broadcast(room.topic, name, {})
    with anyio.fail_after(T):
        async for message in room:
            if isinstance(message.payload, dict) and message.payload.get("event") == name:
                return


BAD_PRESENCE = [
    ("presence_diff", ["not", "a", "dict"]),
    ("presence_diff", "text"),
    ("presence_diff", {"joins": {"k": "not a dict"}, "leaves": {}}),
    ("presence_diff", {"joins": {"k": {"metas": "nope"}}, "leaves": {}}),
    ("presence_diff", {"joins": {}, "leaves": {"k": {"metas": [1, 2]}}}),
    ("presence_diff", {"joins": [], "leaves": 7}),
    ("presence_state", ["x"]),
    ("presence_state", {"k": None}),
    ("presence_state", {"k": {"metas": [None]}}),
]


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_malformed_presence_payloads_are_counted_and_the_client_survives(
    server: PhoenixServer, vsn: str
) -> None:
    """Each bad presence payload is one malformed frame; the reader, the channel, the user's
    code inside ``async with`` and the presence map all survive (the map is left unchanged).

    Reproduction: ``presence_diff`` with a list payload raised AttributeError in the reader,
    which cancelled the client's task group (``malformed`` stayed 0)."""
    async with make_client(server, vsn=vsn) as client:
        room = client.channel("room1", presence={"key": "me"})
        await room.subscribe()
        await server.presence_track("room1", "other", {"at": 1})
        await marker(server, room, "tracked")
        before = dict(room.presence)
        assert "other" in before
        for event, payload in BAD_PRESENCE:
            await server.push("room1", event, payload)
        await marker(server, room)
        assert client.stats["malformed"] == len(BAD_PRESENCE)
        assert room.state is ChannelState.JOINED
        assert room.presence == before
        await server.presence_track("room1", "late", {"at": 2})
        await marker(server, room, "after")
        assert "late" in room.presence


def _hostile_frames() -> list[str | bytes]:
    """The bad frames the issue lists: each is counted and skipped."""
    deep = "[" * 100_000 + "]" * 100_000
    big = json.dumps([None, None, "realtime:room1", "broadcast", {"x": "a" * 900_000}])
    return [
        "{not json",
        "[1,2]",  # wrong arity
        '[null,null,7,"broadcast",{}]',  # topic not a string
        '[null,{"r":1},"realtime:room1","broadcast",{}]',  # ref not a string
        '{"topic":"realtime:room1"}',  # v1 shape on a v2 socket
        deep,
        '[null,"999","realtime:room1","phx_reply",[]]',  # unknown ref, bad reply payload
        '[null,"998","phoenix","phx_reply","ok"]',
        b"",
        b"\x07\x01\x01ab",  # unknown binary kind
        b"\x02\x05\x01abc",  # truncated
        b"\x02\x02\x01\xff\xfex{}",  # bad UTF-8 in the topic
        b"\x04\x0e\x01\x00\x09realtime:room1e\x00\xff",  # user broadcast, bad encoding
        '[null,null,"realtime:room1","presence_diff",[1]]',
        big,  # 900 KB: well-formed, delivered (within max_size), not malformed
    ]


async def test_every_hostile_frame_is_skipped_and_the_client_stays_joined(
    server: PhoenixServer,
) -> None:
    """Non-JSON, wrong arity, bad types, deep nesting, binary kinds, bad UTF-8, unknown refs,
    bad presence, a 900 KB payload: the client stays joined, heartbeats still answer."""
    frames = _hostile_frames()
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        for frame in frames:
            await server.send_raw(frame)
        await marker(server, room)
        assert client.stats["malformed"] == len(frames) - 1
        assert room.state is ChannelState.JOINED
        with anyio.fail_after(T):
            report = await client.connection.check()
        assert report.rtt is not None


async def test_malformed_frames_are_logged_once_per_kind_not_once_per_frame(
    server: PhoenixServer,
) -> None:
    """1,000 bad frames of two kinds give 1,000 counts but two log lines (rate-limited)."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        with capture_logs() as logs:
            for _ in range(500):
                await server.send_raw("{not json")
                await server.push("room1", "presence_diff", [1])
            await marker(server, room)
        assert client.stats["malformed"] == 1000
        lines = [e for e in logs if e["event"] == "resilient_conn.realtime.malformed_frame"]
        assert sorted(e["kind"] for e in lines) == [
            "decode:RealtimeProtocolError",
            "dispatch:RealtimeProtocolError",
        ]


# --- bounded work per message -----------------------------------------------------------------


async def test_a_flood_to_a_slow_async_handler_costs_bounded_tasks_and_memory(
    server: PhoenixServer,
) -> None:
    """2,000 broadcasts to a stuck async handler: at most one worker task and
    ``handler_queue_size`` pending calls; the rest are dropped and counted. A second async
    handler on the same channel still gets the message sent after the flood, and a sync
    handler saw every message.

    Reproduction: one task per inbound message (109,210 live tasks after a 20 s flood)."""
    n, bound = 2_000, 50
    release = anyio.Event()
    seen_sync = 0
    fast_got = anyio.Event()
    max_tasks = 0

    async def stuck(message: Message) -> None:
        await release.wait()

    async def fast(message: Message) -> None:
        if message.payload.get("event") == "last":
            fast_got.set()

    def count(message: Message) -> None:
        nonlocal seen_sync, max_tasks
        seen_sync += 1
        max_tasks = max(max_tasks, len(asyncio.all_tasks()))

    async with make_client(server) as client:
        room = client.channel("room1", queue_size=0, handler_queue_size=bound)
        await room.subscribe()
        room.on("broadcast", stuck)
        room.on("broadcast", fast)
        room.on("broadcast", count)
        baseline = len(asyncio.all_tasks())
        for i in range(n):
            await server.broadcast("room1", "flood", {"i": i})
        await server.broadcast("room1", "last", {})
        with anyio.fail_after(T):
            await fast_got.wait()
        assert seen_sync == n + 1
        # the stuck handler holds one call and `bound` queued; everything else was dropped
        assert room._handlers.pending <= 2 * (bound + 1)
        assert room.handler_dropped >= n + 1 - (bound + 1) - (bound + 1)
        assert client.stats["handler_dropped"] == room.handler_dropped
        assert max_tasks <= baseline + 2  # one worker per async handler, never per message
        release.set()


async def test_overflow_policies_keep_the_newest_or_the_oldest_calls() -> None:
    """``drop_oldest`` keeps the last ``queue_size`` calls, ``drop_newest`` the first ones;
    the dropped coroutines are closed (no 'never awaited' warning) and counted."""
    from collections import Counter

    from resilient_conn.realtime._handlers import HandlerSet

    for policy, expected in (("drop_oldest", [7, 8, 9]), ("drop_newest", [0, 1, 2])):
        got: list[int] = []

        async def handler(message: int) -> None:
            got.append(message)  # noqa: B023 - run before the loop moves on

        stats: Counter[str] = Counter()
        async with anyio.create_task_group() as tg:
            handlers = HandlerSet(
                "t",
                queue_size=3,
                overflow=policy,
                timeout=None,
                task_group=lambda: tg,
                log=_NullLog(),
                stats=stats,
            )
            handlers.add(handler)
            for i in range(10):
                handlers.emit(i)  # no checkpoint: the worker has not run yet
        assert got == expected
        assert handlers.dropped == stats["handler_dropped"] == 7


async def test_handler_concurrency_bounds_the_calls_running_at_once() -> None:
    """With ``handler_concurrency=3`` at most three calls of one handler run at once, never
    more tasks than that, and every queued call runs."""
    from collections import Counter

    from resilient_conn.realtime._handlers import HandlerSet

    release = anyio.Event()
    three = anyio.Event()
    running = 0
    most = 0
    finished: list[int] = []

    async def handler(message: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 3:
            three.set()
        await release.wait()
        running -= 1
        finished.append(message)

    async with anyio.create_task_group() as tg:
        handlers = HandlerSet(
            "t",
            queue_size=100,
            overflow="drop_oldest",
            timeout=None,
            task_group=lambda: tg,
            log=_NullLog(),
            stats=Counter(),
            concurrency=3,
        )
        handlers.add(handler)
        for i in range(10):
            handlers.emit(i)
        with anyio.fail_after(T):
            await three.wait()
        assert handlers.pending == 10
        assert len([t for t in asyncio.all_tasks() if t.get_name().startswith("handler[")]) == 3
        release.set()
    assert most == 3
    assert sorted(finished) == list(range(10))


async def test_a_handler_that_raises_or_overruns_is_counted_and_the_next_message_arrives() -> None:
    """A raising sync handler, a raising async one and one cut by ``handler_timeout`` are
    counted in ``errors``; each still gets the following message."""
    from collections import Counter

    from resilient_conn.realtime._handlers import HandlerSet

    cancelled = anyio.Event()
    second = anyio.Event()
    calls: list[str] = []

    async def slow(message: str) -> None:
        if message == "first":
            try:
                await anyio.sleep_forever()
            finally:
                cancelled.set()
        second.set()

    async def boom(message: str) -> None:
        calls.append(message)
        raise ValueError("async boom client_secret=hunter2")

    def sync_boom(message: str) -> None:
        calls.append("sync:" + message)
        raise KeyError(message)

    stats: Counter[str] = Counter()
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            handlers = HandlerSet(
                "t",
                queue_size=10,
                overflow="drop_oldest",
                timeout=0.01,
                task_group=lambda: tg,
                log=_StructLog(),
                stats=stats,
            )
            for h in (slow, boom, sync_boom):
                handlers.add(h)
            handlers.emit("first")
            handlers.emit("second")
            with anyio.fail_after(T):
                await cancelled.wait()
                await second.wait()
    assert sorted(calls) == ["first", "second", "sync:first", "sync:second"]
    assert handlers.errors == stats["handler_errors"] == 5  # 2 async, 2 sync, 1 timeout
    assert "hunter2" not in repr(logs)


async def test_async_handlers_queued_when_the_client_closes_are_closed_not_leaked(
    server: PhoenixServer,
) -> None:
    """Leaving ``async with`` with calls still queued ends the workers and closes the queued
    coroutines: no task outlives the client and no coroutine is left un-awaited."""
    started = anyio.Event()

    async def stuck(message: Message) -> None:
        started.set()
        await anyio.sleep_forever()

    async with make_client(server) as client:
        room = client.channel("room1", queue_size=0)
        await room.subscribe()
        room.on("broadcast", stuck)
        for i in range(20):
            await server.broadcast("room1", "x", {"i": i})
        with anyio.fail_after(T):
            await started.wait()
        assert room._handlers.pending > 1
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("handler[")] == []
    assert room._handlers.pending == 0


class _NullLog:
    """A logger that drops everything."""

    def warning(self, event: str, **fields: Any) -> None:
        """Drop the event."""


class _StructLog:
    """Forwards to structlog (so capture_logs sees the events)."""

    def warning(self, event: str, **fields: Any) -> None:
        """Log through structlog."""
        import structlog

        structlog.get_logger("resilient_conn").warning(event, **fields)
