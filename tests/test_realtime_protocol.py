"""Pure tests of the Phoenix codec, refs, reply matching and the channel state machine."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_conn._core.errors import RealtimeProtocolError
from resilient_conn.realtime.channel import (
    ChannelMachine,
    ChannelState,
    Closed,
    Joined,
    JoinFailed,
    ScheduleRejoin,
    SendJoin,
    SendLeave,
)
from resilient_conn.realtime.protocol import (
    Message,
    RefCounter,
    ReplyTable,
    V1Serializer,
    V2Serializer,
    close_ref,
    make_serializer,
    parse_reply,
)

# --- strategies ------------------------------------------------------------------------------

short = st.text(max_size=20)
refs = st.none() | st.integers(min_value=1, max_value=10**9).map(str)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short, inner, max_size=3),
    max_leaves=10,
)
payloads = st.dictionaries(short, json_values, max_size=4)
topics = st.sampled_from(["phoenix", "realtime:room1", "realtime:public:todos"]) | short.map(
    lambda s: "realtime:" + s
)

# Events of the section 3 table, by direction.
C2S = ["phx_join", "phx_leave", "heartbeat", "access_token", "broadcast", "presence"]
S2C = ["phx_reply", "phx_close", "phx_error", "broadcast", "postgres_changes", "presence_diff"]
S2C += ["presence_state", "system"]


def messages(events: list[str]) -> st.SearchStrategy[Message]:
    """Messages with any of ``events``, any refs, JSON payloads."""
    return st.builds(
        Message,
        topic=topics,
        event=st.sampled_from(events),
        payload=payloads,
        ref=refs,
        join_ref=refs,
    )


# --- serializers -----------------------------------------------------------------------------


@given(messages(C2S))
def test_client_to_server_events_round_trip_in_both_versions(msg: Message) -> None:
    """Every client->server event of the table survives client encode + server decode."""
    for vsn in ("1.0.0", "2.0.0"):
        frame = make_serializer(vsn, "client").encode(msg)
        assert isinstance(frame, str)
        assert make_serializer(vsn, "server").decode(frame) == msg


@given(messages(S2C))
def test_server_to_client_events_round_trip_in_both_versions(msg: Message) -> None:
    """Every server->client event survives; v1 server frames never carry join_ref."""
    v2 = V2Serializer("server").encode(msg)
    assert V2Serializer("client").decode(v2) == msg
    v1 = V1Serializer("server").encode(msg)
    assert "join_ref" not in json.loads(v1)
    assert V1Serializer("client").decode(v1) == Message(msg.topic, msg.event, msg.payload, msg.ref)


def test_v2_heartbeat_matches_the_documented_wire_example() -> None:
    """The v2 heartbeat frame is byte-for-byte the protocol document's example."""
    msg = Message("phoenix", "heartbeat", {}, ref="5")
    assert V2Serializer().encode(msg) == '[null,"5","phoenix","heartbeat",{}]'
    reply = V2Serializer().decode('[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]')
    assert parse_reply(reply) == ("ok", {})
    assert reply.ref == "5"


def test_v1_heartbeat_matches_the_documented_wire_example() -> None:
    """The v1 object frame has topic/event/payload/ref and decodes the documented reply."""
    frame = V1Serializer().encode(Message("phoenix", "heartbeat", {}, ref="5"))
    assert json.loads(frame) == {
        "topic": "phoenix",
        "event": "heartbeat",
        "payload": {},
        "ref": "5",
    }
    reply = V1Serializer().decode(
        '{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"5"}'
    )
    assert reply.ref == "5"
    assert parse_reply(reply) == ("ok", {})


def test_v2_array_extra_elements_are_ignored_and_integer_refs_become_strings() -> None:
    """Extra array elements are ignored; numeric refs are read as their string form."""
    msg = V2Serializer("server").decode('[1, 2, "realtime:a", "phx_join", {}, "extra"]')
    assert msg == Message("realtime:a", "phx_join", {}, ref="2", join_ref="1")


def test_v1_close_ref_falls_back_to_ref() -> None:
    """A v1 phx_close names the join in ``ref``; close_ref() reads it there."""
    msg = V1Serializer().decode('{"topic":"t","event":"phx_close","payload":{},"ref":"7"}')
    assert close_ref(msg) == "7"
    assert close_ref(Message("t", "phx_close", {}, ref="9", join_ref="7")) == "7"


binary_text = st.text(max_size=30).filter(lambda s: len(s.encode()) <= 255)
opt_binary_ref = st.none() | st.integers(1, 10**6).map(str)


@given(opt_binary_ref, opt_binary_ref, binary_text, binary_text, st.binary(max_size=64))
def test_binary_kind_0_client_push_round_trips(
    join_ref: str | None, ref: str | None, topic: str, event: str, data: bytes
) -> None:
    """Kind 0 client->server: sizes(join_ref, ref, topic, event), strings, raw data."""
    msg = Message(topic, event, data, ref, join_ref)
    frame = V2Serializer("client").encode(msg)
    assert isinstance(frame, bytes)
    assert frame[0] == 0
    assert V2Serializer("server").decode(frame) == Message(topic, event, data, ref, join_ref, 0)


@given(opt_binary_ref, binary_text, binary_text, st.binary(max_size=64))
def test_binary_kind_0_server_push_and_kind_2_broadcast_round_trip(
    join_ref: str | None, topic: str, event: str, data: bytes
) -> None:
    """Kind 0 server->client has no ref; kind 2 (no refs at all) carries topic and event."""
    server, client = V2Serializer("server"), V2Serializer("client")
    pushed = server.encode(Message(topic, event, data, ref=None, join_ref=join_ref or "1"))
    assert isinstance(pushed, bytes)
    assert pushed[0] == 0
    assert client.decode(pushed) == Message(topic, event, data, None, join_ref or "1", 0)
    fanned = server.encode(Message(topic, event, data))
    assert isinstance(fanned, bytes)
    assert fanned[0] == 2
    assert client.decode(fanned) == Message(topic, event, data, kind=2)


@given(opt_binary_ref, opt_binary_ref, binary_text, st.sampled_from(["ok", "error"]), st.binary())
def test_binary_kind_1_reply_round_trips(
    join_ref: str | None, ref: str | None, topic: str, status: str, data: bytes
) -> None:
    """Kind 1: a binary reply decodes to a phx_reply whose response is the raw bytes."""
    frame = V2Serializer("server").encode_binary_reply(topic, status, data, ref, join_ref)
    msg = V2Serializer("client").decode(frame)
    assert (msg.topic, msg.event, msg.ref, msg.join_ref, msg.kind) == (
        topic,
        "phx_reply",
        ref,
        join_ref,
        1,
    )
    assert parse_reply(msg) == (status, data)


user_payloads = st.binary(max_size=32) | json_values
metas = st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)


@given(opt_binary_ref, opt_binary_ref, binary_text, binary_text, user_payloads, metas)
def test_binary_kinds_3_and_4_user_broadcast_round_trip(
    join_ref: str | None, ref: str | None, topic: str, event: str, inner: Any, meta: Any
) -> None:
    """Kind 3 (client push) and kind 4 (server fan-out) carry event, meta and raw or JSON data."""
    body: dict[str, Any] = {"type": "broadcast", "event": event, "payload": inner}
    if meta:
        body["meta"] = meta
    up = V2Serializer("client").encode(Message(topic, "broadcast", body, ref, join_ref, kind=3))
    assert isinstance(up, bytes)
    assert up[0] == 3
    assert V2Serializer("server").decode(up) == Message(topic, "broadcast", body, ref, join_ref, 3)
    down = V2Serializer("server").encode(Message(topic, "broadcast", body, kind=4))
    assert isinstance(down, bytes)
    assert down[0] == 4
    assert V2Serializer("client").decode(down) == Message(topic, "broadcast", body, kind=4)


def test_binary_fields_longer_than_255_bytes_are_refused() -> None:
    """Each binary size field is one byte, so a 256-byte topic cannot be encoded."""
    with pytest.raises(RealtimeProtocolError, match="255"):
        V2Serializer().encode(Message("x" * 256, "e", b"data"))


@pytest.mark.parametrize(
    ("frame", "side"),
    [
        ("not json", "client"),
        ('{"topic": 1}', "client"),
        ("[1, 2, 3]", "client"),
        ('[null, null, "t", 5, {}]', "client"),
        (b"", "client"),
        (b"\x09abc", "client"),
        (b"\x03\x01\x01\x01\x01\x00\x01", "client"),
        (b"\x01\x05", "client"),
        (b"\x04\x01\x01\x00\x07tea", "client"),
        (b"\x02\x02\x01\xff\xfee", "client"),
        (b"\x01\x00", "server"),
        ("[" * 100_000, "client"),
    ],
)
def test_malformed_frames_raise_the_protocol_error(frame: str | bytes, side: str) -> None:
    """Bad JSON, bad shapes, unknown kinds, truncation, bad UTF-8, deep nesting: one error."""
    serializer = V2Serializer("client" if side == "client" else "server")
    with pytest.raises(RealtimeProtocolError):
        serializer.decode(frame)


def test_v1_has_no_binary_frames_and_no_binary_payloads() -> None:
    """Vsn 1.0.0 refuses binary frames both ways."""
    with pytest.raises(RealtimeProtocolError):
        V1Serializer().decode(b"\x00")
    with pytest.raises(RealtimeProtocolError):
        V1Serializer().encode(Message("t", "e", b"x"))


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(["1.0.0", "2.0.0"]), st.sampled_from(["c", "s"]))
def test_random_bytes_never_crash_the_decoder(data: bytes, vsn: str, side: str) -> None:
    """Any byte string either decodes or raises RealtimeProtocolError, nothing else."""
    serializer = make_serializer(vsn, "client" if side == "c" else "server")
    for frame in (data, data.decode("utf-8", "replace")):
        try:
            msg = serializer.decode(frame)
        except RealtimeProtocolError:
            continue
        assert isinstance(msg.topic, str)
        assert isinstance(msg.event, str)


@settings(max_examples=300)
@given(json_values | st.lists(json_values, min_size=5, max_size=6))
def test_random_json_never_crashes_the_decoder(value: Any) -> None:
    """Any JSON document decodes or raises RealtimeProtocolError in both versions."""
    text = json.dumps(value)
    for serializer in (V1Serializer(), V2Serializer()):
        with contextlib.suppress(RealtimeProtocolError):
            serializer.decode(text)


def test_make_serializer_rejects_unknown_versions_naming_vsn() -> None:
    """An unknown vsn is a ValueError that names the parameter."""
    with pytest.raises(ValueError, match="vsn"):
        make_serializer("3.0.0")
    with pytest.raises(ValueError, match="side"):
        V2Serializer("middle")  # type: ignore[arg-type]


def test_parse_reply_rejects_a_payload_without_status() -> None:
    """A phx_reply must carry a string status."""
    with pytest.raises(RealtimeProtocolError):
        parse_reply(Message("t", "phx_reply", {"response": {}}))


# --- refs and reply matching ---------------------------------------------------------------


def test_ref_counter_is_monotonic_strings() -> None:
    """Refs are "1", "2", ... and never repeat."""
    counter = RefCounter()
    assert counter.last is None
    assert [counter.next() for _ in range(3)] == ["1", "2", "3"]
    assert counter.last == "3"


def test_reply_table_matches_by_ref_and_expires_by_deadline() -> None:
    """A reply pops its push once; unmatched pushes expire in deadline order."""
    table: ReplyTable[str] = ReplyTable()
    table.add("1", "a", 5.0)
    table.add("2", "b", 1.0)
    table.add("3", "c", 3.0)
    assert table.next_deadline() == 1.0
    assert table.pop("3") == "c"
    assert table.pop("3") is None
    assert table.pop(None) is None
    assert table.expire(2.0) == ["b"]
    assert table.next_deadline() == 5.0
    assert "1" in table
    assert len(table) == 1
    with pytest.raises(ValueError, match="already pending"):
        table.add("1", "again", 9.0)
    assert table.drain() == ["a"]
    assert table.next_deadline() is None


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 100)), max_size=40), st.floats(0, 100))
def test_reply_table_expire_returns_exactly_the_due_items(
    entries: list[tuple[int, float]], now: float
) -> None:
    """expire(now) returns every item with deadline <= now, and only those, once."""
    table: ReplyTable[int] = ReplyTable()
    seen: dict[str, float] = {}
    for ref, deadline in entries:
        if str(ref) not in seen:
            table.add(str(ref), ref, deadline)
            seen[str(ref)] = deadline
    due = sorted(table.expire(now))
    assert due == sorted(int(r) for r, d in seen.items() if d <= now)
    assert table.expire(now) == []
    assert len(table) == len(seen) - len(due)


# --- channel state machine -----------------------------------------------------------------


def joined_machine() -> tuple[ChannelMachine, str]:
    """A machine on an open socket that has completed its first join."""
    machine = ChannelMachine("realtime:room1", RefCounter(), socket_open=True)
    (send,) = machine.join()
    assert isinstance(send, SendJoin)
    actions = machine.reply(send.join_ref, "ok", {"postgres_changes": []})
    assert actions == [Joined(rejoined=False, response={"postgres_changes": []})]
    return machine, send.join_ref


def test_join_sends_a_join_whose_ref_is_its_join_ref_and_ok_joins() -> None:
    """Closed -> joining (send phx_join) -> joined on reply ok."""
    machine, join_ref = joined_machine()
    assert machine.state is ChannelState.JOINED
    assert machine.can_push
    assert machine.join_ref == join_ref
    assert machine.join() == []


def test_join_while_socket_closed_waits_for_the_socket() -> None:
    """A join made while disconnected is sent when the socket opens."""
    machine = ChannelMachine("t", RefCounter())
    assert machine.join() == []
    assert machine.state is ChannelState.JOINING
    (send,) = machine.socket_opened()
    assert isinstance(send, SendJoin)


def test_first_join_error_ends_the_channel_with_the_server_reason() -> None:
    """A refused first join closes the channel and reports the server's reason."""
    machine = ChannelMachine("t", RefCounter(), socket_open=True)
    (send,) = machine.join()
    assert isinstance(send, SendJoin)
    actions = machine.reply(send.join_ref, "error", {"reason": "Unauthorized: nope"})
    assert actions == [JoinFailed("Unauthorized: nope"), Closed("Unauthorized: nope")]
    assert machine.state is ChannelState.CLOSED


def test_socket_close_errors_the_channel_and_reopen_rejoins_with_a_new_ref() -> None:
    """Joined -> errored on socket close -> joining with a fresh join_ref; ok is a rejoin."""
    machine, old = joined_machine()
    assert machine.socket_closed() == []
    assert machine.state is ChannelState.ERRORED
    (send,) = machine.socket_opened()
    assert isinstance(send, SendJoin)
    assert send.join_ref != old
    assert machine.reply(send.join_ref, "ok", {}) == [Joined(rejoined=True, response={})]


def test_rejoin_failures_back_off_and_stale_timers_are_ignored() -> None:
    """A failed rejoin schedules growing delays; only the latest timer token rejoins."""
    machine = ChannelMachine("t", RefCounter(), float, socket_open=True)
    (send,) = machine.join()
    assert isinstance(send, SendJoin)
    machine.reply(send.join_ref, "ok", {})
    machine.socket_closed()
    (send,) = machine.socket_opened()
    assert isinstance(send, SendJoin)
    failed, first = machine.reply(send.join_ref, "error", {"reason": "busy"})
    assert failed == JoinFailed("busy")
    assert isinstance(first, ScheduleRejoin)
    assert first.delay == 1.0
    (send,) = machine.rejoin_due(first.token)
    assert isinstance(send, SendJoin)
    leave, failed, second = machine.join_timed_out(send.join_ref)
    assert isinstance(leave, SendLeave)
    assert leave.join_ref == send.join_ref
    assert failed == JoinFailed("timeout")
    assert isinstance(second, ScheduleRejoin)
    assert second.delay == 2.0
    assert machine.rejoin_due(first.token) == []
    assert machine.state is ChannelState.ERRORED
    (send,) = machine.rejoin_due(second.token)
    assert isinstance(send, SendJoin)
    assert machine.reply(send.join_ref, "ok", {}) == [Joined(rejoined=True, response={})]
    assert machine.attempts == 0


def test_stale_phx_close_and_phx_error_are_ignored() -> None:
    """A close/error naming an old join_ref (e.g. after a duplicate join) changes nothing."""
    machine, old = joined_machine()
    machine.socket_closed()
    (send,) = machine.socket_opened()
    assert isinstance(send, SendJoin)
    assert machine.server_close(old) == []
    assert machine.server_error(old) == []
    assert machine.server_close(None) == []
    assert machine.state is ChannelState.JOINING
    machine.reply(send.join_ref, "ok", {})
    assert machine.server_close(send.join_ref) == [Closed("closed by server")]
    assert machine.closed_reason == "closed by server"
    assert machine.socket_opened() == []


def test_phx_error_on_a_joined_channel_schedules_a_rejoin() -> None:
    """Joined -> errored on phx_error for the current join, with a rejoin timer."""
    machine, join_ref = joined_machine()
    (timer,) = machine.server_error(join_ref)
    assert isinstance(timer, ScheduleRejoin)
    assert machine.state is ChannelState.ERRORED


def test_system_error_then_close_ends_without_rejoin() -> None:
    """A system error marks the channel fatal: phx_close ends it with the server's message."""
    machine, join_ref = joined_machine()
    assert machine.system_error("Token has expired 5 seconds ago") == []
    assert machine.server_close(join_ref) == [Closed("Token has expired 5 seconds ago")]
    assert machine.socket_opened() == []


def test_system_error_then_socket_loss_still_ends_the_channel() -> None:
    """If the socket drops between the system error and phx_close, the channel still ends."""
    machine, _ = joined_machine()
    machine.system_error("Too many messages per second")
    assert machine.socket_closed() == [Closed("Too many messages per second")]


def test_leave_sends_phx_leave_and_reply_closes() -> None:
    """Any -> leaving (send phx_leave) -> closed on the leave's reply."""
    machine, join_ref = joined_machine()
    (leave,) = machine.leave()
    assert isinstance(leave, SendLeave)
    assert leave.join_ref == join_ref
    assert machine.state is ChannelState.LEAVING
    assert machine.leave() == []
    assert machine.reply(leave.ref, "ok", {}) == [Closed("unsubscribed")]
    assert machine.leave_timed_out(leave.ref) == []


def test_leave_while_disconnected_closes_at_once_and_leave_timeout_closes() -> None:
    """Nothing to leave on a dead socket: closed at once; a leave without reply times out."""
    machine, _ = joined_machine()
    machine.socket_closed()
    assert machine.leave() == [Closed("unsubscribed")]
    machine2, _ = joined_machine()
    (leave,) = machine2.leave()
    assert isinstance(leave, SendLeave)
    assert machine2.leave_timed_out(leave.ref) == [Closed("unsubscribed")]


class ChannelMachineModel(RuleBasedStateMachine):
    """Random event sequences never break the machine's table or its invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = ChannelMachine("t", RefCounter(), lambda n: float(n))
        self.sent_refs: list[str] = []
        self.tokens: list[int] = []
        self.socket_open = False

    def _run(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, SendJoin):
                assert self.socket_open, "a join is only sent on an open socket"
                assert action.join_ref not in self.sent_refs, "every join has a fresh ref"
                self.sent_refs.append(action.join_ref)
            elif isinstance(action, ScheduleRejoin):
                assert self.socket_open
                self.tokens.append(action.token)
            elif isinstance(action, Closed):
                assert self.machine.state is ChannelState.CLOSED

    @rule()
    def join(self) -> None:
        """The user subscribes."""
        self._run(self.machine.join())

    @rule()
    def leave(self) -> None:
        """The user unsubscribes."""
        self._run(self.machine.leave())

    @rule()
    def open_socket(self) -> None:
        """A transport opens."""
        self.socket_open = True
        self._run(self.machine.socket_opened())

    @rule()
    def close_socket(self) -> None:
        """The transport ends."""
        self.socket_open = False
        self._run(self.machine.socket_closed())

    @rule(ok=st.booleans(), current=st.booleans())
    def reply(self, ok: bool, current: bool) -> None:
        """A reply to the current join/leave, or to something else."""
        ref = self.machine.join_ref if current else "nope"
        if current and self.machine.state is ChannelState.LEAVING:
            ref = self.machine.leave_ref
        self._run(self.machine.reply(ref, "ok" if ok else "error", {"reason": "r"}))

    @rule(current=st.booleans())
    def server_close(self, current: bool) -> None:
        """phx_close for the current or a stale join."""
        before = self.machine.state
        self._run(self.machine.server_close(self.machine.join_ref if current else "stale"))
        if not current:
            assert self.machine.state is before, "stale closes change nothing"

    @rule(current=st.booleans())
    def server_error(self, current: bool) -> None:
        """phx_error for the current or a stale join."""
        self._run(self.machine.server_error(self.machine.join_ref if current else "stale"))

    @rule()
    def system_error(self) -> None:
        """A fatal system error."""
        self._run(self.machine.system_error("fatal"))

    @rule()
    def join_timeout(self) -> None:
        """The current join times out."""
        if self.machine.join_ref is not None:
            self._run(self.machine.join_timed_out(self.machine.join_ref))

    @rule(data=st.data())
    def rejoin_timer(self, data: st.DataObject) -> None:
        """Some (possibly stale) rejoin timer fires."""
        if self.tokens:
            self._run(self.machine.rejoin_due(data.draw(st.sampled_from(self.tokens))))

    @invariant()
    def consistent(self) -> None:
        """Closed means not wanted; joined means a join ref; a fatal channel never rejoins."""
        m = self.machine
        if m.state is ChannelState.CLOSED:
            assert not m.desired
        if m.state is ChannelState.JOINED:
            assert m.join_ref is not None
            assert m.joined_once
        if m.fatal_reason is not None:
            assert not m.desired


TestChannelMachineModel = ChannelMachineModel.TestCase
TestChannelMachineModel.settings = settings(max_examples=200, stateful_step_count=30)


# --- layout ----------------------------------------------------------------------------------


def test_old_import_paths_still_give_the_same_objects() -> None:
    """Splitting channel.py, client.py and protocol.py kept every old import path working."""
    from resilient_conn.realtime import _machine, _refs, channel, protocol

    for name in channel.__all__:
        assert getattr(channel, name) is not None
    assert channel.ChannelMachine is _machine.ChannelMachine
    assert channel.ChannelState is _machine.ChannelState
    assert protocol.RefCounter is _refs.RefCounter
    assert protocol.ReplyTable is _refs.ReplyTable


def test_realtime_modules_stay_readable_in_one_sitting() -> None:
    """STYLE.md habit 10: no module of resilient_conn.realtime grows past 450 lines."""
    import resilient_conn.realtime

    root = Path(resilient_conn.realtime.__file__).parent
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in root.glob("*.py")}
    assert max(sizes.values()) <= 450, sizes
