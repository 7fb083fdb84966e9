"""Hypothesis fuzzing of the inbound path: codec, channel machine, and a live client.

Arbitrary JSON values and byte strings, framed for both serializers, go through
``decode`` (which may only raise RealtimeProtocolError), through the pure channel machine and
presence bookkeeping (which may only raise RealtimeProtocolError for a bad payload, and never
make an illegal move), and finally from a real server to a live client on 127.0.0.1, which must
still be joined and answering heartbeats afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_conn._core.errors import RealtimeProtocolError
from resilient_conn.realtime import ChannelState, RealtimeClient
from resilient_conn.realtime._machine import ChannelMachine
from resilient_conn.realtime._presence import apply_diff, presence_entries
from resilient_conn.realtime.protocol import (
    PHX_CLOSE,
    PHX_ERROR,
    PHX_REPLY,
    Message,
    RefCounter,
    close_ref,
    make_serializer,
    parse_reply,
)
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing.phoenix import PhoenixServer

TOPIC = "realtime:room1"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
refs = st.none() | st.sampled_from(["1", "2", "3", "99"]) | st.integers(0, 5) | json_values
events = st.sampled_from(
    [PHX_REPLY, "broadcast", "presence_state", "presence_diff", "system", "postgres_changes"]
) | st.text(max_size=10)
topics = st.sampled_from([TOPIC, "phoenix", "realtime:other"]) | json_values


def _not_fatal(event: Any, payload: Any) -> bool:
    """A Supabase system error closes a channel legitimately: not hostile input."""
    return not (
        event == "system"
        and isinstance(payload, dict)
        and payload.get("extension") == "system"
        and payload.get("status") == "error"
    )


@st.composite
def envelopes(draw: st.DrawFn, vsn: str) -> str:
    """A text frame shaped like a message (so it reaches dispatch) with arbitrary parts."""
    join_ref, ref, topic = draw(refs), draw(refs), draw(topics)
    event, payload = draw(events), draw(json_values)
    if event in (PHX_CLOSE, PHX_ERROR) or not _not_fatal(event, payload):
        event = "broadcast"
    if vsn == "1.0.0":
        obj = {"topic": topic, "event": event, "payload": payload, "ref": ref}
        if draw(st.booleans()):
            obj["join_ref"] = join_ref
        return json.dumps(obj)
    extra = draw(st.lists(json_values, max_size=2))
    return json.dumps([join_ref, ref, topic, event, payload, *extra][: draw(st.integers(0, 7))])


def frames(vsn: str) -> st.SearchStrategy[str | bytes]:
    """Any frame a hostile server could send on a socket of protocol ``vsn``."""
    binary = st.binary(max_size=80) | st.builds(
        lambda kind, rest: bytes([kind]) + rest, st.integers(0, 6), st.binary(max_size=60)
    )
    return envelopes(vsn) | json_values.map(json.dumps) | st.text(max_size=40) | binary


def dispatch_to_machine(machine: ChannelMachine, msg: Message) -> None:
    """What the client's dispatch does with ``msg`` for the machine and presence."""
    if msg.event == PHX_REPLY:
        status, response = parse_reply(msg)
        machine.reply(msg.ref, status, response)
    elif msg.event == PHX_CLOSE:
        machine.server_close(close_ref(msg))
    elif msg.event == PHX_ERROR:
        machine.server_error(close_ref(msg))
    elif msg.event == "presence_state":
        presence_entries(msg.payload, "presence_state")
    elif msg.event == "presence_diff":
        apply_diff({}, msg.payload)


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_codec_and_machine_accept_any_frame_or_raise_only_protocol_errors(
    vsn: str, data: st.DataObject
) -> None:
    """decode, the machine and the presence bookkeeping raise nothing but
    RealtimeProtocolError on any frame, and the machine only makes legal moves."""
    frame = data.draw(frames(vsn))
    machine = ChannelMachine(TOPIC, RefCounter(), socket_open=True)
    machine.join()
    machine.reply(machine.join_ref, "ok", {})
    try:
        msg = make_serializer(vsn, "client").decode(frame)
        dispatch_to_machine(machine, msg)
    except RealtimeProtocolError:
        pass
    assert isinstance(machine.state, ChannelState)


batches = st.sampled_from(["1.0.0", "2.0.0"]).flatmap(
    lambda vsn: st.tuples(st.just(vsn), st.lists(frames(vsn), min_size=1, max_size=25))
)


@pytest.mark.anyio
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=batches)
async def test_a_live_client_stays_joined_whatever_the_server_sends(
    case: tuple[str, list[str | bytes]],
) -> None:
    """A batch of arbitrary frames from a real server (either protocol version): the client
    is still joined, receives the next broadcast and answers a heartbeat round trip."""
    vsn, batch = case
    options: dict[str, Any] = {
        "vsn": vsn,
        "heartbeat_interval": 30.0,
        "backoff": Backoff(initial_delay=0.01, max_delay=0.05),
        "stable_after": 0.05,
    }
    async with PhoenixServer() as server, RealtimeClient(server.realtime_url, **options) as client:
        room = client.channel("room1", queue_size=10_000)
        with anyio.fail_after(5):
            await room.subscribe()
            for frame in batch:
                await server.send_raw(frame)
            await server.broadcast("room1", "marker", {})
            async for message in room:
                payload = message.payload
                if (
                    isinstance(payload, dict)
                    and payload.get("event") == "marker"
                    and (message.topic, message.event) == (TOPIC, "broadcast")
                ):
                    break
            report = await client.connection.check()
        assert room.state is ChannelState.JOINED
        assert report.rtt is not None
        assert client.stats["malformed"] <= len(batch)
