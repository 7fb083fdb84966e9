"""The PhoenixServer test double, driven by a raw websockets client speaking the wire format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from resilient_conn.realtime.protocol import Message, V2Serializer
from resilient_conn.testing.phoenix import PhoenixServer

pytestmark = pytest.mark.anyio

T = 5.0  # bound on every wait


@pytest.fixture
async def server() -> AsyncIterator[PhoenixServer]:
    """A running server with a tiny join-error delay."""
    async with PhoenixServer(join_error_delay=0.01) as srv:
        yield srv


async def recv(ws: ClientConnection) -> Any:
    """Next frame, JSON-decoded when text."""
    with anyio.fail_after(T):
        frame = await ws.recv()
    return json.loads(frame) if isinstance(frame, str) else frame


async def send(ws: ClientConnection, *arr: Any) -> None:
    """Send a v2 array frame."""
    await ws.send(json.dumps(list(arr)))


def join_payload(**config: Any) -> dict[str, Any]:
    """A Supabase join payload with ``config`` merged into the defaults."""
    base: dict[str, Any] = {
        "broadcast": {"ack": False, "self": False},
        "presence": {"enabled": False, "key": ""},
        "postgres_changes": [],
        "private": False,
    }
    base.update(config)
    return {"config": base, "access_token": "tok-1"}


async def test_heartbeat_is_answered_on_both_paths_in_both_versions(server: PhoenixServer) -> None:
    """v2 (by vsn) gets arrays, no vsn gets v1 objects; refs are echoed; both paths work."""
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, None, "5", "phoenix", "heartbeat", {})
        assert await recv(ws) == [
            None,
            "5",
            "phoenix",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]
    async with connect(server.realtime_url + "?apikey=k") as ws:
        await ws.send('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}')
        assert await recv(ws) == {
            "topic": "phoenix",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": "9",
        }
    assert [c.vsn for c in server.connections] == ["2.0.0", "1.0.0"]
    assert server.connections[1].apikey == "k"
    assert server.heartbeats == 2


async def test_join_replies_with_postgres_ids_then_system_then_presence_state(
    server: PhoenixServer,
) -> None:
    """A join gets ok with ids per entry (same filter, same id), then system, presence_state."""
    pg = [
        {"event": "INSERT", "schema": "public", "table": "todos"},
        {"event": "*", "schema": "public", "table": "notes", "filter": "id=eq.1"},
        {"event": "INSERT", "schema": "public", "table": "todos"},
    ]
    await server.presence_track("room1", "bob", {"online": True})
    async with connect(server.url + "?vsn=2.0.0") as ws:
        payload = join_payload(postgres_changes=pg, presence={"enabled": True, "key": "me"})
        await send(ws, "1", "1", "realtime:room1", "phx_join", payload)
        reply = await recv(ws)
        assert reply[:4] == ["1", "1", "realtime:room1", "phx_reply"]
        echoed = reply[4]["response"]["postgres_changes"]
        assert [{k: v for k, v in e.items() if k != "id"} for e in echoed] == pg
        assert echoed[0]["id"] == echoed[2]["id"] != echoed[1]["id"]
        system = await recv(ws)
        assert system[:4] == ["1", None, "realtime:room1", "system"]
        assert system[4]["channel"] == "room1"
        assert system[4]["status"] == "ok"
        state = await recv(ws)
        assert state[:4] == ["1", None, "realtime:room1", "presence_state"]
        assert list(state[4]) == ["bob"]
    (record,) = server.joins_of("room1")
    assert record.access_token == "tok-1"
    assert record.accepted


async def test_unrouted_join_and_push_to_unjoined_topic_get_unmatched_topic(
    server: PhoenixServer,
) -> None:
    """Joins outside realtime:* and pushes to unjoined topics: error with join_ref null."""
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, "1", "1", "room1", "phx_join", {})
        assert await recv(ws) == [
            None,
            "1",
            "room1",
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        ]
        await send(ws, "7", "2", "realtime:x", "broadcast", {"type": "broadcast", "event": "e"})
        assert (await recv(ws))[0] is None
        await send(ws, "7", "3", "realtime:x", "phx_leave", {})
        assert (await recv(ws))[4] == {"status": "ok", "response": {}}


async def test_duplicate_join_closes_the_old_join_ref_after_the_new_reply(
    server: PhoenixServer,
) -> None:
    """The new join is answered first, then phx_close carries the OLD join_ref."""
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, "1", "1", "realtime:r", "phx_join", join_payload())
        assert (await recv(ws))[4]["status"] == "ok"
        await send(ws, "2", "2", "realtime:r", "phx_join", join_payload())
        assert (await recv(ws))[:2] == ["2", "2"]
        assert await recv(ws) == ["1", "1", "realtime:r", "phx_close", {}]


async def test_leave_replies_then_closes_and_broadcast_acks_only_when_asked(
    server: PhoenixServer,
) -> None:
    """Broadcast reaches others (and self with self=true); ack replies; leave -> ok, phx_close."""
    async with (
        connect(server.url + "?vsn=2.0.0") as a,
        connect(server.url + "?vsn=2.0.0") as b,
    ):
        await send(a, "1", "1", "realtime:r", "phx_join", join_payload())
        await recv(a)
        cfg = {"ack": True, "self": True}
        await send(b, "1", "1", "realtime:r", "phx_join", join_payload(broadcast=cfg))
        await recv(b)
        body = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
        await send(a, "1", "2", "realtime:r", "broadcast", body)
        assert await recv(b) == [None, None, "realtime:r", "broadcast", body]
        await send(b, "1", "2", "realtime:r", "broadcast", body)
        got = [await recv(b), await recv(b)]
        assert [None, None, "realtime:r", "broadcast", body] in got
        assert ["1", "2", "realtime:r", "phx_reply", {"status": "ok", "response": {}}] in got
        assert await recv(a) == [None, None, "realtime:r", "broadcast", body]
        await send(a, "1", "3", "realtime:r", "phx_leave", {})
        assert (await recv(a))[1] == "3"
        assert await recv(a) == ["1", "1", "realtime:r", "phx_close", {}]
    await server.wait_for_push("broadcast", 2)


async def test_binary_user_broadcast_goes_out_as_kind_4_and_as_json_to_v1(
    server: PhoenixServer,
) -> None:
    """A kind 3 push reaches v2 subscribers as kind 4 and v1 subscribers as a JSON broadcast."""
    ser = V2Serializer("client")
    async with (
        connect(server.url + "?vsn=2.0.0") as a,
        connect(server.url + "?vsn=2.0.0") as b,
        connect(server.url) as c,
    ):
        for ws in (a, b):
            await send(ws, "1", "1", "realtime:r", "phx_join", join_payload())
            await recv(ws)
        v1_join = {"topic": "realtime:r", "event": "phx_join", "ref": "1"}
        await c.send(json.dumps(v1_join | {"payload": join_payload()}))
        await recv(c)
        body = {"type": "broadcast", "event": "move", "payload": {"x": 2}}
        await a.send(ser.encode(Message("realtime:r", "broadcast", body, "2", "1", kind=3)))
        frame = await recv(b)
        assert isinstance(frame, bytes)
        assert frame[0] == 4
        assert ser.decode(frame) == Message("realtime:r", "broadcast", body, kind=4)
        assert (await recv(c))["payload"] == body


async def test_presence_track_sends_diffs_and_disconnect_leaves(server: PhoenixServer) -> None:
    """Track replies ok and fans a diff out; a subscriber's disconnect sends its leave."""
    async with connect(server.url + "?vsn=2.0.0") as a:
        presence = {"enabled": True, "key": "alice"}
        await send(a, "1", "1", "realtime:r", "phx_join", join_payload(presence=presence))
        await recv(a)
        assert (await recv(a))[3] == "presence_state"
        async with connect(server.url + "?vsn=2.0.0") as b:
            b_join = join_payload(presence=presence | {"key": "b"})
            await send(b, "1", "1", "realtime:r", "phx_join", b_join)
            await recv(b)
            await recv(b)
            track = {"type": "presence", "event": "track", "payload": {"mood": "ok"}}
            await send(b, "1", "2", "realtime:r", "presence", track)
            diff = await recv(a)
            assert diff[3] == "presence_diff"
            assert diff[4]["joins"]["b"]["metas"][0]["mood"] == "ok"
        diff = await recv(a)
        assert list(diff[4]["leaves"]) == ["b"]
    assert server.presence_state("r") == {}


async def test_dropped_heartbeats_are_recorded_but_not_answered(server: PhoenixServer) -> None:
    """With drop_heartbeats on, the next frame the client sees is the join reply, not a beat."""
    server.drop_heartbeats = True
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, None, "1", "phoenix", "heartbeat", {})
        await send(ws, "2", "2", "realtime:r", "phx_join", join_payload())
        assert (await recv(ws))[1] == "2"
    assert server.heartbeats == 1


async def test_rejected_joins_get_the_reason_after_the_delay(server: PhoenixServer) -> None:
    """reject_joins() answers with the reason; the record says not accepted; None resets."""
    server.reject_joins("Unauthorized: no", topic="realtime:r", delay=0.0)
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, "1", "1", "realtime:r", "phx_join", join_payload())
        assert (await recv(ws))[4] == {
            "status": "error",
            "response": {"reason": "Unauthorized: no"},
        }
        server.reject_joins(None)
        await send(ws, "2", "2", "realtime:r", "phx_join", join_payload())
        assert (await recv(ws))[4]["status"] == "ok"
    assert [j.accepted for j in server.joins_of("r")] == [False, True]


async def test_handshake_rejection_has_status_and_json_error_body(server: PhoenixServer) -> None:
    """reject_handshake(401) makes the upgrade fail with 401 and {"error": ...}."""
    server.reject_handshake(401, "InvalidJWTToken")
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.url):
            pass
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body) == {"error": "InvalidJWTToken"}
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://127.0.0.1:{server.port}/nope"):
            pass


async def test_system_error_then_phx_close_and_revoked_access_token(server: PhoenixServer) -> None:
    """system_error sends system(status=error) then phx_close; a revoked token does the same."""
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, "1", "1", "realtime:r", "phx_join", join_payload())
        await recv(ws)
        assert await server.system_error("r", "Too many messages per second") == 1
        sys_msg = await recv(ws)
        assert sys_msg[3] == "system"
        assert sys_msg[4]["message"] == "Too many messages per second"
        assert await recv(ws) == ["1", "1", "realtime:r", "phx_close", {}]
        await send(ws, "2", "2", "realtime:r", "phx_join", join_payload())
        await recv(ws)
        await send(ws, "2", "3", "realtime:r", "access_token", {"access_token": "fresh"})
        server.revoked_tokens.add("old")
        await send(ws, "2", "4", "realtime:r", "access_token", {"access_token": "old"})
        assert (await recv(ws))[4]["status"] == "error"
        assert (await recv(ws))[3] == "phx_close"


async def test_postgres_change_injection_reaches_matching_subscribers(
    server: PhoenixServer,
) -> None:
    """Injected changes carry the ids of the matching entries only."""
    pg = [{"event": "INSERT", "schema": "public", "table": "todos"}]
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await send(ws, "1", "1", "realtime:db", "phx_join", join_payload(postgres_changes=pg))
        pg_id = (await recv(ws))[4]["response"]["postgres_changes"][0]["id"]
        await recv(ws)  # system
        assert await server.inject_postgres_change("db", table="notes") == 0
        sent = await server.inject_postgres_change("db", table="todos", record={"id": 1})
        assert sent == 1
        event = await recv(ws)
        assert event[:4] == [None, None, "realtime:db", "postgres_changes"]
        assert event[4]["ids"] == [pg_id]
        assert event[4]["data"]["record"] == {"id": 1}


async def test_malformed_frames_are_dropped_and_close_and_restart_work(
    server: PhoenixServer,
) -> None:
    """Garbage is counted and dropped; close_all uses the code; restart keeps the port."""
    async with connect(server.url + "?vsn=2.0.0") as ws:
        await ws.send("{garbage")
        await send(ws, None, "1", "phoenix", "heartbeat", {})
        assert (await recv(ws))[1] == "1"
        assert server.malformed == 1
        await server.close_all(4000, "bye")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 4000
    port = server.port
    async with connect(server.url) as ws:
        await server.restart()
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1012
    assert server.port == port
    async with connect(server.url):
        with anyio.fail_after(T):
            await server.wait_for_connections(3)
