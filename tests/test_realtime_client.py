"""RealtimeClient and Channel behaviour against the faithful PhoenixServer on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient_conn._core.errors import (
    BufferFullError,
    ChannelClosedError,
    ChannelJoinError,
    ConfigError,
    PushTimeoutError,
    RealtimeError,
)
from resilient_conn.connection.events import ConnectionState, StateChange
from resilient_conn.realtime import Channel, ChannelState, Message, RealtimeClient
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing.phoenix import PhoenixServer

pytestmark = pytest.mark.anyio

T = 5.0  # bound on every wait


@pytest.fixture
async def server() -> AsyncIterator[PhoenixServer]:
    """A running PhoenixServer with a tiny join-error delay."""
    async with PhoenixServer(join_error_delay=0.01) as srv:
        yield srv


def make_client(server: PhoenixServer, **kwargs: Any) -> RealtimeClient:
    """A client with fast backoffs aimed at ``server``."""
    options: dict[str, Any] = {
        "apikey": "anon",
        "access_token": "tok",
        "heartbeat_interval": 5.0,
        "push_timeout": 2.0,
        "rejoin_backoff": Backoff(initial_delay=0.01, max_delay=0.05),
        "backoff": Backoff(initial_delay=0.01, max_delay=0.05),
        "stable_after": 0.05,
    }
    options.update(kwargs)
    return RealtimeClient(server.realtime_url, **options)


async def next_message(channel: Channel) -> Message:
    """The next message from the channel's queue, bounded."""
    with anyio.fail_after(T):
        return await anext(aiter(channel))


class Waiter:
    """Collects values from a callback and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._event = anyio.Event()

    def __call__(self, item: Any) -> None:
        """Record ``item`` and wake waiters."""
        self.items.append(item)
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, n: int = 1) -> None:
        """Wait (bounded) until ``n`` items were recorded."""
        with anyio.fail_after(T):
            while len(self.items) < n:
                await self._event.wait()


def state_waiter(client: RealtimeClient, state: ConnectionState) -> Waiter:
    """A Waiter collecting connection changes into ``state``."""
    waiter = Waiter()

    def hook(change: StateChange) -> None:
        if change.new is state:
            waiter(change)

    client.connection.on_state_change(hook)
    return waiter


# --- joining ---------------------------------------------------------------------------------


async def test_join_with_postgres_changes_gets_ids_and_delivers_changes(
    server: PhoenixServer,
) -> None:
    """The join carries config + token; ids come back by index; changes reach on() and iter."""
    pg = [
        {"event": "INSERT", "schema": "public", "table": "todos"},
        {"event": "*", "schema": "public", "table": "notes", "filter": "id=eq.1"},
    ]
    async with make_client(server) as client:
        room = client.channel("db", postgres_changes=pg)
        await room.subscribe()
        assert room.state is ChannelState.JOINED
        assert room.topic == "realtime:db"
        (join,) = server.joins_of("db")
        assert join.access_token == "tok"
        assert join.config["postgres_changes"] == pg
        assert len(room.postgres_ids) == 2
        inserts = Waiter()
        room.on("postgres_changes", inserts, filter="INSERT")
        await server.inject_postgres_change("db", table="todos", record={"id": 7})
        await server.inject_postgres_change("db", table="notes", type="UPDATE", record={"id": 1})
        first = await next_message(room)
        assert first.event == "system"  # "Subscribed to PostgreSQL"
        change = await next_message(room)
        assert change.payload["ids"] == [room.postgres_ids[0]]
        assert change.payload["data"]["record"] == {"id": 7}
        assert (await next_message(room)).payload["data"]["type"] == "UPDATE"
        await inserts.wait()
        assert len(inserts.items) == 1
    assert server.connections[0].apikey == "anon"
    assert server.connections[0].vsn == "2.0.0"


async def test_join_error_reason_is_surfaced_and_the_channel_closes(server: PhoenixServer) -> None:
    """A refused join raises ChannelJoinError with the server's reason; no retry follows."""
    server.reject_joins("Unauthorized: You do not have permissions to read from this Channel")
    async with make_client(server) as client:
        room = client.channel("secret")
        with pytest.raises(ChannelJoinError) as info:
            await room.subscribe()
        assert info.value.reason.startswith("Unauthorized:")
        assert room.state is ChannelState.CLOSED
        assert room.closed_reason == info.value.reason
        assert client.stats["join_errors"] == 1
        assert room not in client.channels


async def test_subscribe_times_out_when_the_server_never_answers(server: PhoenixServer) -> None:
    """No join reply within the timeout: ChannelJoinError('timeout'), and a leave is sent."""
    server.reject_joins("slow", delay=30.0)
    async with make_client(server) as client:
        room = client.channel("slow")
        with pytest.raises(ChannelJoinError) as info:
            await room.subscribe(timeout=0.2)
        assert info.value.reason == "timeout"
        with anyio.fail_after(T):
            await server.wait_for_push("phx_leave", topic="slow")
        assert room.state is ChannelState.CLOSED


# --- broadcast and presence ------------------------------------------------------------------


async def test_broadcast_without_ack_goes_out_and_is_received_by_others(
    server: PhoenixServer,
) -> None:
    """send_broadcast (no ack) reaches the server and the other client; filter by event."""
    async with make_client(server) as a, make_client(server) as b:
        room_a = a.channel("room1")
        room_b = b.channel("room1", queue_size=0)
        await room_a.subscribe()
        await room_b.subscribe()
        cursors = Waiter()
        room_b.on("broadcast", cursors, filter="cursor")
        await room_a.send_broadcast("typing", {"who": "a"})
        await room_a.send_broadcast("cursor", {"x": 1})
        await cursors.wait()
        assert [m.payload["payload"] for m in cursors.items] == [{"x": 1}]
        await server.broadcast("room1", "cursor", {"x": 2})
        await cursors.wait(2)
        assert cursors.items[1].payload["payload"] == {"x": 2}
        assert room_b.buffered == 0


async def test_broadcast_with_ack_waits_for_the_reply_and_self_receives(
    server: PhoenixServer,
) -> None:
    """With ack the push returns after the server's ok; with self the sender gets its own."""
    async with make_client(server) as client:
        room = client.channel("room1", broadcast={"ack": True, "self": True})
        await room.subscribe()
        await room.send_broadcast("ping", {"n": 1})
        own = await next_message(room)
        assert own.event == "broadcast"
        assert own.payload == {"type": "broadcast", "event": "ping", "payload": {"n": 1}}


async def test_binary_broadcast_travels_as_a_user_broadcast(server: PhoenixServer) -> None:
    """A bytes payload goes out as kind 3 and arrives at a v2 subscriber as kind 4."""
    async with make_client(server) as a, make_client(server) as b:
        await a.channel("bin").subscribe()
        room_b = b.channel("bin")
        await room_b.subscribe()
        await a.channel("bin").send_broadcast("blob", b"\x00\x01")
        msg = await next_message(room_b)
        assert msg.kind == 4
        assert msg.payload["payload"] == b"\x00\x01"


async def test_presence_state_and_diff_keep_the_presence_map(server: PhoenixServer) -> None:
    """presence_state on join, diffs from track / other clients / untrack update presence."""
    await server.presence_track("lobby", "bob", {"status": "away"})
    async with make_client(server) as client:
        lobby = client.channel("lobby", presence={"key": "alice"})
        await lobby.subscribe()
        assert (await next_message(lobby)).event == "presence_state"
        assert set(lobby.presence) == {"bob"}
        await lobby.track({"status": "online"})
        assert (await next_message(lobby)).event == "presence_diff"
        assert lobby.presence["alice"][0]["status"] == "online"
        await server.presence_untrack("lobby", "bob")
        await next_message(lobby)
        await lobby.untrack()
        await next_message(lobby)
        assert lobby.presence == {}


# --- liveness and reconnects -----------------------------------------------------------------


async def test_heartbeat_reply_loss_reconnects_and_rejoins_at_the_next_beat(
    server: PhoenixServer,
) -> None:
    """One unanswered heartbeat -> transport killed at the next beat -> rejoined, gap hook."""
    async with make_client(server, heartbeat_interval=0.2) as client:
        room = client.channel("room1")
        await room.subscribe()
        gaps = Waiter()
        room.on_gap(gaps)
        with anyio.fail_after(T):
            await server.wait_for_heartbeats(2)  # so the first reply was processed
        assert client.connection.snapshot().rtt is not None
        server.drop_heartbeats = True
        before = server.heartbeats
        with anyio.fail_after(T):
            await server.wait_for_connections(2)
        server.drop_heartbeats = False
        # The first unanswered beat was the only one: detection came at the next beat.
        assert server.heartbeats == before + 1
        await gaps.wait()
        assert room.state is ChannelState.JOINED
        assert client.stats["heartbeat_timeouts"] == 1
        assert client.stats["rejoins"] == 1
        failures = client.connection.snapshot().stats["failures"]
        assert failures == {"heartbeat_timeout": 1}


async def test_server_restart_rejoins_every_channel_with_a_refreshed_token(
    server: PhoenixServer,
) -> None:
    """After a restart all channels rejoin; the provider is called again; joins carry it."""
    calls: list[str] = []

    async def token() -> str:
        calls.append(f"jwt-{len(calls) + 1}")
        return calls[-1]

    async with make_client(server, access_token=token) as client:
        rooms = [client.channel(f"room{i}") for i in range(3)]
        for room in rooms:
            await room.subscribe()
        gaps = Waiter()
        for room in rooms:
            room.on_gap(gaps)
        first_tokens = {j.access_token for j in server.joins}
        await server.restart()
        await gaps.wait(3)
        for room in rooms:
            assert room.state is ChannelState.JOINED
            old, new = server.joins_of(room.topic)
            assert old.join_ref != new.join_ref
            assert new.access_token == calls[-1]
        assert calls[-1] not in first_tokens
        assert len(calls) >= 4


async def test_stale_phx_close_is_ignored_and_current_one_closes(server: PhoenixServer) -> None:
    """A phx_close for an old join_ref (duplicate-join close) is ignored; the current closes."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        current = room.machine.join_ref
        await server.push("room1", "phx_close", {}, ref="0", join_ref="0")
        await server.broadcast("room1", "after", {})
        assert (await next_message(room)).payload["event"] == "after"
        assert room.state is ChannelState.JOINED
        closed = Waiter()
        room.on_close(closed)
        await server.push("room1", "phx_close", {}, ref=current, join_ref=current)
        await closed.wait()
        assert closed.items == ["closed by server"]


async def test_phx_error_triggers_a_rejoin_with_a_new_join_ref(server: PhoenixServer) -> None:
    """A crashed channel (phx_error) is rejoined after the rejoin backoff."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        gaps = Waiter()
        room.on_gap(gaps)
        await server.crash_channel("room1")
        await gaps.wait()
        assert len(server.joins_of("room1")) == 2
        assert room.state is ChannelState.JOINED


async def test_system_error_ends_the_channel_without_rejoin(server: PhoenixServer) -> None:
    """system error + phx_close: on_close and closed_reason say why; iteration raises; no rejoin."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        closed = Waiter()
        room.on_close(closed)
        await server.system_error("room1", "Too many messages per second")
        await closed.wait()
        assert room.closed_reason == "Too many messages per second"
        assert room.state is ChannelState.CLOSED
        assert (await next_message(room)).event == "system"
        with pytest.raises(ChannelClosedError, match="Too many messages"):
            await next_message(room)
        with pytest.raises(ChannelClosedError):
            await room.send_broadcast("x", {})
        await server.close_all(1001)
        with anyio.fail_after(T):
            await server.wait_for_connections(2)
            await client.connection.wait_connected()
        other = client.channel("room2")
        await other.subscribe()
        assert len(server.joins_of("room1")) == 1


async def test_set_auth_pushes_the_token_and_later_rejoins_use_it(server: PhoenixServer) -> None:
    """set_auth sends access_token to joined channels; the next rejoin carries it."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        await client.set_auth("fresh")
        with anyio.fail_after(T):
            await server.wait_for_push("access_token")
        push = next(p for p in server.pushes if p.event == "access_token")
        assert push.payload == {"access_token": "fresh"}
        assert push.join_ref == room.machine.join_ref
        gaps = Waiter()
        room.on_gap(gaps)
        await server.close_all(1012)
        await gaps.wait()
        assert server.joins_of("room1")[-1].access_token == "fresh"


# --- pushes while not joined ----------------------------------------------------------------


async def test_pushes_while_disconnected_are_buffered_then_flushed_on_rejoin(
    server: PhoenixServer,
) -> None:
    """A push made while the socket is down waits, then goes out on the NEW join ref."""
    async with make_client(server) as client:
        room = client.channel("room1", broadcast={"ack": True})
        await room.subscribe()
        down = state_waiter(client, ConnectionState.BACKOFF)
        server.reject_handshake(503, "down")
        await server.close_all(1012)
        await down.wait()
        assert room.state is ChannelState.ERRORED
        done = anyio.Event()

        async def push() -> None:
            await room.send_broadcast("late", {"n": 1}, timeout=T)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(push)
            with anyio.fail_after(T):
                while room.buffered == 0:
                    await anyio.lowlevel.checkpoint()
            server.reject_handshake(None)
            with anyio.fail_after(T):
                await done.wait()
        late = next(p for p in server.pushes if p.event == "broadcast")
        assert late.join_ref == server.joins_of("room1")[-1].join_ref


async def test_buffered_push_times_out_and_overflow_fails_the_oldest(
    server: PhoenixServer,
) -> None:
    """Never silent: an unsendable push raises PushTimeoutError; overflow BufferFullError."""
    async with make_client(server, push_buffer_size=1) as client:
        room = client.channel("room1")
        await room.subscribe()
        down = state_waiter(client, ConnectionState.BACKOFF)
        server.reject_handshake(503, "down")
        await server.close_all(1012)
        await down.wait()
        with pytest.raises(PushTimeoutError) as info:
            await room.send_broadcast("lost", {}, timeout=0.05)
        assert info.value.event == "broadcast"
        assert room.buffered == 0
        results: list[BaseException] = []

        async def push(name: str) -> None:
            try:
                await room.send_broadcast(name, {}, timeout=0.5)
            except (BufferFullError, PushTimeoutError) as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(push, "first")
            await anyio.lowlevel.checkpoint()
            tg.start_soon(push, "second")
        assert [type(e) for e in results] == [BufferFullError, PushTimeoutError]
        assert client.stats["pushes_dropped"] == 1


# --- misc --------------------------------------------------------------------------------------


async def test_malformed_frames_are_counted_and_skipped(server: PhoenixServer) -> None:
    """Garbage from the server is logged, counted, and the channel keeps working."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        await server.send_raw("{not json")
        await server.send_raw(b"\x09\x00")
        await server.broadcast("room1", "ok", {})
        assert (await next_message(room)).payload["event"] == "ok"
        assert client.stats["malformed"] == 2


async def test_protocol_v1_joins_receives_and_closes_by_ref(server: PhoenixServer) -> None:
    """vsn 1.0.0 works end to end; its phx_close names the join in ``ref``."""
    async with make_client(server, vsn="1.0.0") as client:
        room = client.channel("realtime:room1")
        await room.subscribe()
        assert server.connections[0].vsn == "1.0.0"
        await server.broadcast("room1", "hello", {"n": 1})
        assert (await next_message(room)).payload["payload"] == {"n": 1}
        closed = Waiter()
        room.on_close(closed)
        await server.system_error("room1", "Token has expired 1 seconds ago")
        await closed.wait()  # the v1 phx_close carried the join ref only in ``ref``
        assert closed.items == ["Token has expired 1 seconds ago"]
        other = client.channel("room2")
        await other.subscribe()
        await other.unsubscribe()
        assert other.state is ChannelState.CLOSED
        with anyio.fail_after(T):
            async for _ in other:
                pytest.fail("iteration must end after unsubscribe")


async def test_check_measures_a_heartbeat_round_trip(server: PhoenixServer) -> None:
    """The connection's check() uses a Phoenix heartbeat as its probe."""
    async with make_client(server) as client:
        await client.connection.wait_connected(T)
        report = await client.connection.check(timeout=T)
        assert report.rtt is not None
        assert server.heartbeats == 1


async def test_unsubscribe_leaves_and_the_server_sees_it(server: PhoenixServer) -> None:
    """unsubscribe sends phx_leave, the channel closes, its handlers stop."""
    async with make_client(server) as client:
        room = client.channel("room1")
        await room.subscribe()
        assert client.channel("room1") is room
        await room.unsubscribe()
        with anyio.fail_after(T):
            await server.wait_for_push("phx_leave", topic="room1")
        assert room.state is ChannelState.CLOSED
        assert room.closed_reason == "unsubscribed"
        assert client.channel("room1") is not room


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"vsn": "3.0.0"}, "vsn"),
        ({"push_buffer_size": 0}, "push_buffer_size"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval"),
        ({"push_timeout": 0}, "push_timeout"),
        ({"rejoin_backoff": 1.0}, "rejoin_backoff"),
        ({"on_open": print}, "on_open"),
        ({"access_token": 5}, "access_token"),
    ],
)
def test_bad_arguments_raise_config_error_naming_the_parameter(
    kwargs: dict[str, Any], param: str
) -> None:
    """Each bad argument is a ConfigError whose message names it."""
    with pytest.raises(ConfigError, match=param):
        RealtimeClient("ws://127.0.0.1:1/socket/websocket", **kwargs)


def test_urls_are_normalised_and_bad_ones_refused() -> None:
    """http(s) becomes ws(s), a bare host gets the Supabase path; ftp is refused."""
    client = RealtimeClient("https://abc.supabase.co", apikey="k")
    assert client.connection.name == "realtime:abc.supabase.co"
    with pytest.raises(ConfigError, match="url"):
        RealtimeClient("ftp://x")
    with pytest.raises(ConfigError, match="topic"):
        client.channel("realtime:")


async def test_channel_topic_forms_and_subscribe_outside_the_client(
    server: PhoenixServer,
) -> None:
    """'room1' and 'realtime:room1' are one channel; subscribing needs a running client."""
    client = make_client(server)
    assert client.channel("room1") is client.channel("realtime:room1")
    with pytest.raises(Exception, match="not running"):
        await client.channel("room1").subscribe()


async def test_presence_is_tracked_again_after_a_rejoin(server: PhoenixServer) -> None:
    """The server forgets presence on disconnect; the client re-tracks its last state."""
    async with make_client(server) as client:
        lobby = client.channel("lobby", presence={"key": "alice"})
        await lobby.subscribe()
        await lobby.track({"status": "online"})
        gaps = Waiter()
        lobby.on_gap(gaps)
        await server.close_all(1012)
        await gaps.wait()
        with anyio.fail_after(T):
            await server.wait_for(lambda: "alice" in server.presence_state("lobby"))
        assert server.presence_state("lobby")["alice"]["metas"][0]["status"] == "online"
        await lobby.untrack()
        assert "alice" not in server.presence_state("lobby")


def test_example_runs_against_the_local_server() -> None:
    """examples/supabase_listener.py --local joins, survives a restart, refreshes, leaves."""
    example = Path(__file__).resolve().parent.parent / "examples" / "supabase_listener.py"
    done = subprocess.run(
        [sys.executable, str(example), "--local"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for expected in ("[db] INSERT todos", "[gap] rejoined realtime:room1", "[closed] unsubscribed"):
        assert expected in out


async def test_a_failed_connection_fails_subscribe_with_the_cause(server: PhoenixServer) -> None:
    """HTTP 401 at the handshake: FAILED; subscribe raises ChannelJoinError naming it."""
    server.reject_handshake(401, "InvalidJWTToken")
    async with make_client(server) as client:
        room = client.channel("room1")
        with pytest.raises(ChannelJoinError, match="connection failed"):
            await room.subscribe()
        assert client.connection.state is ConnectionState.FAILED
        with pytest.raises(ChannelJoinError, match="connection failed"):
            await client.channel("room2").subscribe()


async def test_iteration_is_refused_when_the_queue_is_off(server: PhoenixServer) -> None:
    """queue_size=0 turns the queue off; iterating says so instead of hanging."""
    async with make_client(server) as client:
        room = client.channel("room1", queue_size=0)
        await room.subscribe()
        with pytest.raises(RealtimeError, match="queue_size=0"):
            await next_message(room)


async def test_a_push_whose_reply_was_lost_is_sent_again_after_the_rejoin(
    server: PhoenixServer,
) -> None:
    """At-least-once: an acked broadcast unanswered when the socket died is re-sent."""
    async with make_client(server) as client:
        room = client.channel("room1", broadcast={"ack": True})
        await room.subscribe()
        server.drop_push_replies = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(room.send_broadcast, "important", {"n": 1})
            with anyio.fail_after(T):
                await server.wait_for_push("broadcast")
            server.drop_push_replies = False
            await server.close_all(1012)
        first, second = [p for p in server.pushes if p.event == "broadcast"]
        assert first.payload == second.payload
        assert first.join_ref != second.join_ref == room.machine.join_ref


async def test_closing_with_many_joined_channels_is_prompt(server: PhoenixServer) -> None:
    """Leaving 30 joined channels produces more replies than the socket queues unread; the
    client still closes at once instead of waiting out close_timeout (30 s here)."""
    client = make_client(server, close_timeout=30.0)
    async with client:
        for i in range(30):
            await client.channel(f"room{i}").subscribe(timeout=5)
        started = time.monotonic()
    assert time.monotonic() - started < 10
    assert client.connection.state is ConnectionState.CLOSED
