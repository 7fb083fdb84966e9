"""Acknowledged-stream decisions without I/O: the window, de-duplication, acks, hellos, gap
notices, and a model of two peers over transports that die at any point (pure)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_conn.delivery import EnvelopeError, GapKind
from resilient_conn.delivery.envelope import Ack, Data, Hello, decode, encode_ack
from resilient_conn.delivery.state import (
    DataVerdict,
    InboundCursor,
    OutboundWindow,
    StreamState,
    payload_of,
)


def test_window_numbers_bounds_and_trims() -> None:
    """The window numbers messages 1, 2, 3..., is bounded by count and bytes, and a cumulative
    ack forgets exactly the messages up to it."""
    w = OutboundWindow(3, 10)
    assert w.first == 1
    assert not w
    a = w.push("abc", 0.0)
    b = w.push(b"de", 1.0)
    assert (a.seq, b.seq, w.first, w.next_seq, w.nbytes) == (1, 2, 1, 3, 5)
    assert w.fits(5)
    assert not w.fits(6)
    assert w.can_ever_fit(10)
    assert not w.can_ever_fit(11)
    w.push("x", 2.0)
    assert not w.fits(0)  # count bound
    assert w.get(2) is b
    assert w.get(0) is None
    assert w.get(4) is None
    assert [e.seq for e in w.ack(2)] == [1, 2]
    assert w.first == 3
    assert len(w) == 1
    assert w.nbytes == 1
    assert w.ack(2) == []
    assert payload_of(b.frame) == b"de"
    assert a.payload == "abc"


def test_window_expiry_and_eviction_take_the_oldest() -> None:
    """Expiry and eviction remove from the front only, oldest first."""
    w = OutboundWindow(10, 100)
    for t in range(4):
        w.push(str(t), float(t))
    assert [e.seq for e in w.expire(now=3.5, ttl=2.0)] == [1, 2]
    assert w.pop_oldest().seq == 3
    assert [e.seq for e in w.drain()] == [4]
    assert w.first == 5


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_window_rejects_bad_bounds(bad: object) -> None:
    """A window bound that is not a positive int is refused with a message naming it."""
    with pytest.raises(ValueError, match="window must be"):
        OutboundWindow(bad, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_bytes must be"):
        OutboundWindow(10, bad)  # type: ignore[arg-type]


def test_cursor_deduplicates_and_refuses_holes() -> None:
    """The receiver accepts only the next number: lower ones are duplicates, higher ones are
    a broken protocol; nothing is accepted before the peer's hello."""
    cur = InboundCursor()
    assert cur.on_data(1) is DataVerdict.NO_HELLO
    cur.peer_epoch = "e"
    assert cur.on_data(1) is DataVerdict.DELIVER
    assert cur.on_data(1) is DataVerdict.DUPLICATE
    assert cur.on_data(3) is DataVerdict.OUT_OF_ORDER
    assert cur.on_data(2) is DataVerdict.DELIVER
    assert cur.on_delivered(2, "e")
    assert cur.delivered == 2
    assert not cur.on_delivered(1, "e")
    assert not cur.on_delivered(5, "old-epoch")


def _pair() -> tuple[StreamState, StreamState]:
    return (
        StreamState("s", "client1", OutboundWindow(100, 10_000)),
        StreamState("s", "server1", OutboundWindow(100, 10_000)),
    )


def test_first_contact_raises_no_notice() -> None:
    """Two fresh sides meeting for the first time have nothing to report."""
    client, server = _pair()
    acked, notices = server.on_hello(client.hello())
    assert (acked, notices) == ([], [])
    acked, notices = client.on_hello(server.hello())
    assert (acked, notices) == ([], [])
    assert server.hello().peer_epoch == "client1"


def test_hello_acknowledges_what_the_peer_delivered() -> None:
    """A hello naming our epoch acts as an ack of its ``delivered``: those are forgotten and
    the rest is what we re-send."""
    client, server = _pair()
    server.on_hello(client.hello())
    client.on_hello(server.hello())
    for i in range(5):
        client.window.push(str(i), 0.0)
    for seq in range(1, 4):
        assert server.inbound.on_data(seq) is DataVerdict.DELIVER
        server.inbound.on_delivered(seq, "client1")
    acked, notices = client.on_hello(server.hello())
    assert [e.seq for e in acked] == [1, 2, 3]
    assert notices == []
    assert client.window.first == 4


def test_server_that_forgot_reports_on_both_sides() -> None:
    """A server restarted without its state: the client learns the server's stream restarted
    (inbound loss possible) and re-sends all it holds; the server says it joined the client's
    stream with no record before the client's first unacknowledged message."""
    client, server = _pair()
    server.on_hello(client.hello())
    client.on_hello(server.hello())
    for i in range(5):
        client.window.push(str(i), 0.0)
    client.on_ack(2)
    server.inbound.on_data(1)  # the old server got #1 of its own... then died
    fresh = StreamState("s", "server2", OutboundWindow(100, 10_000))
    acked, notices = fresh.on_hello(client.hello())
    assert acked == []
    assert [n.kind for n in notices] == [GapKind.UNKNOWN_BEFORE]
    assert (notices[0].first_missing, notices[0].last_missing) == (1, 2)
    acked, notices = client.on_hello(fresh.hello())
    assert acked == []
    assert [n.kind for n in notices] == [GapKind.PEER_RESTARTED]
    assert notices[0].direction == "inbound"
    assert notices[0].new_epoch == "server2"
    assert client.window.first == 3  # #3..#5 are re-sent


def test_peer_that_forgot_our_stream_is_reported() -> None:
    """A peer whose hello no longer names our epoch, after it had acknowledged us, gets a
    PEER_FORGOT notice (its application may see unacked messages again)."""
    client, server = _pair()
    server.on_hello(client.hello())
    client.on_hello(server.hello())
    client.window.push("x", 0.0)
    amnesiac = Hello("s", "server1", 1, None, 0)
    _, notices = client.on_hello(amnesiac)
    assert [n.kind for n in notices] == [GapKind.PEER_FORGOT]
    assert notices[0].direction == "outbound"
    assert notices[0].first_missing == 1


def test_skipped_messages_are_reported_with_their_range() -> None:
    """When the peer gave up on messages (dead-lettered them) before we got them, its next
    hello starts after them: we report exactly which numbers will never arrive."""
    client, server = _pair()
    server.on_hello(client.hello())
    client.on_hello(server.hello())
    for i in range(6):
        client.window.push(str(i), 0.0)
    server.inbound.on_data(1)
    client.window.ack(1)
    client.window.pop_oldest()
    client.window.pop_oldest()  # #2, #3 dead-lettered by the client
    _, notices = server.on_hello(client.hello())
    assert [n.kind for n in notices] == [GapKind.SKIPPED]
    assert (notices[0].first_missing, notices[0].last_missing) == (2, 3)
    assert server.inbound.on_data(4) is DataVerdict.DELIVER


def test_peer_ahead_moves_numbering_past_it() -> None:
    """A peer that delivered numbers we never assigned (our state went back) is reported, and
    new numbers start after its position so nothing new is dropped as a duplicate."""
    client, _ = _pair()
    client.window.push("x", 0.0)
    _, notices = client.on_hello(Hello("s", "server1", 1, "client1", 7))
    assert [n.kind for n in notices] == [GapKind.PEER_AHEAD]
    assert client.window.next_seq == 8
    assert not client.window


def test_hello_for_another_session_and_bad_acks_are_refused() -> None:
    """A hello for another session is refused; an ack of a number never sent is reported as
    a protocol error (None), not applied."""
    client, _ = _pair()
    with pytest.raises(EnvelopeError, match="session"):
        client.on_hello(Hello("other", "e", 1, None, 0))
    client.window.push("x", 0.0)
    assert client.on_ack(2) is None
    acked = client.on_ack(1)
    assert acked is not None
    assert [e.seq for e in acked] == [1]


def test_stream_state_validates_identity() -> None:
    """Session identities and epochs are validated where the state is made."""
    with pytest.raises(EnvelopeError):
        StreamState("bad session", "e", OutboundWindow(1, 1))
    with pytest.raises(EnvelopeError):
        StreamState("s", "bad epoch", OutboundWindow(1, 1))


# --------------------------------------------------------------------------- the model
class _Side:
    """One peer as the I/O layer drives it: pump, re-send after hello, take, ack."""

    def __init__(self, epoch: str, window: int) -> None:
        self.state = StreamState("s", epoch, OutboundWindow(window, 1 << 20))
        self.sent: list[str] = []
        self.app: list[str] = []
        self.queue: deque[tuple[str, int, str]] = deque()
        self.out: deque[str | bytes] = deque()
        self.sent_upto = 0
        self.ready = False
        self.acked_sent = 0
        self.notices: list[GapKind] = []

    def send(self, text: str) -> None:
        if self.state.window.fits(len(text)):  # "block": the application waits otherwise
            self.state.window.push(text, 0.0)
            self.sent.append(text)
            self.pump()

    def pump(self) -> None:
        w = self.state.window
        while self.ready and (entry := w.get(max(self.sent_upto + 1, w.first))) is not None:
            self.out.append(entry.frame)
            self.sent_upto = entry.seq

    def hello(self, peer: _Side) -> None:
        """Apply the peer's hello (as the reader does), then re-send (as on_open does)."""
        _acked, notices = self.state.on_hello(peer.state.hello())
        self.notices += [n.kind for n in notices]
        self.acked_sent = self.state.inbound.delivered
        self.sent_upto = self.state.window.first - 1
        self.ready = True
        self.pump()

    def receive(self, frame: str | bytes) -> None:
        decoded = decode(frame)
        if isinstance(decoded, Data):
            verdict = self.state.inbound.on_data(decoded.seq)
            assert verdict in (DataVerdict.DELIVER, DataVerdict.DUPLICATE), verdict
            if verdict is DataVerdict.DELIVER:
                epoch = self.state.inbound.peer_epoch
                assert epoch is not None
                assert isinstance(decoded.payload, str)
                self.queue.append((decoded.payload, decoded.seq, epoch))
        else:
            assert isinstance(decoded, Ack)
            assert self.state.on_ack(decoded.seq) is not None
            self.pump()

    def take(self) -> None:
        if self.queue:
            payload, seq, epoch = self.queue.popleft()
            self.app.append(payload)
            self.state.inbound.on_delivered(seq, epoch)

    def ack(self) -> None:
        if self.ready and self.state.inbound.delivered > self.acked_sent:
            self.acked_sent = self.state.inbound.delivered
            self.out.append(encode_ack(self.acked_sent))


def _connect(a: _Side, b: _Side) -> None:
    for side in (a, b):
        side.out.clear()
        side.ready = False
    b.hello(a)
    a.hello(b)


def _settle(a: _Side, b: _Side) -> None:
    _connect(a, b)
    for _ in range(10_000):
        if not (a.out or b.out or a.queue or b.queue or a.state.window or b.state.window):
            return
        while a.out:
            b.receive(a.out.popleft())
        while b.out:
            a.receive(b.out.popleft())
        while a.queue or b.queue:
            a.take()
            b.take()
        a.ack()
        b.ack()
    raise AssertionError("the model did not settle")


steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.booleans()),
        st.tuples(st.just("deliver"), st.booleans(), st.integers(0, 5)),
        st.tuples(st.just("take"), st.booleans()),
        st.tuples(st.just("ack"), st.booleans()),
        st.tuples(st.just("cut"), st.booleans(), st.integers(0, 2)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(1, 6))
def test_model_exactly_once_in_order_across_any_cuts(
    ops: list[tuple[object, ...]], window: int
) -> None:
    """Two peers exchange messages both ways over transports cut at arbitrary points (frames
    in flight lost, in either direction, mid-burst): after a final reconnect each application
    has received every message the other sent, exactly once, in order, and no hole or
    protocol error ever occurred."""
    a, b = _Side("ea", window), _Side("eb", window)
    counter = 0
    _connect(a, b)
    for op in ops:
        side, other = (a, b) if op[1] else (b, a)
        if op[0] == "send":
            counter += 1
            side.send(f"m{counter}")
        elif op[0] == "deliver":
            for _ in range(int(op[2])):  # type: ignore[call-overload]
                if side.out:
                    other.receive(side.out.popleft())
        elif op[0] == "take":
            side.take()
        elif op[0] == "ack":
            side.ack()
        else:  # the transport dies; some frames may have left before (delivered above)
            _connect(a, b)
    _settle(a, b)
    assert b.app == a.sent
    assert a.app == b.sent
    assert a.notices == []
    assert b.notices == []


@settings(max_examples=100, deadline=None)
@given(steps, st.integers(1, 6), st.integers(0, 119))
def test_model_server_that_forgets_loses_nothing_sent_to_it(
    ops: list[tuple[object, ...]], window: int, forget_at: int
) -> None:
    """If the server loses its state once, at any point, every client message still reaches
    a server application (at least once; a copy only of what the old one received but had
    not acked), each incarnation sees them in order, and both sides were told (notices)."""
    a, b = _Side("ea", window), _Side("eb", window)
    incarnations = [b]
    counter = 0
    _connect(a, b)
    for i, op in enumerate(ops):
        if i == forget_at:
            b = _Side("eb2", window)
            incarnations.append(b)
            _connect(a, b)
        side, other = (a, b) if op[1] else (b, a)
        if op[0] == "send":
            counter += 1
            side.send(f"m{counter}")
        elif op[0] == "deliver":
            for _ in range(int(op[2])):  # type: ignore[call-overload]
                if side.out:
                    other.receive(side.out.popleft())
        elif op[0] == "take":
            side.take()
        elif op[0] == "ack":
            side.ack()
        else:
            _connect(a, b)
    _settle(a, b)
    seen: list[str] = []
    for server in incarnations:
        order = [int(m[1:]) for m in server.app]
        assert order == sorted(order)
        assert len(set(order)) == len(order)
        seen += server.app
    assert set(a.sent) <= set(seen)
    if len(incarnations) > 1 and incarnations[0].state.inbound.peer_epoch:
        assert GapKind.PEER_RESTARTED in a.notices


@pytest.mark.anyio
async def test_signal_wakes_waiters_times_out_and_forgets_cancelled_ones() -> None:
    """The endpoint's Signal wakes every waiter on notify, raises TimeoutError after its
    timeout, and leaves no waiter behind when one is cancelled or times out."""
    import anyio

    from resilient_conn.delivery._endpoint import Signal

    signal = Signal()
    state = {"ready": False}
    with pytest.raises(TimeoutError):
        await signal.wait_until(lambda: state["ready"], 0.01)
    assert signal.waiters == 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        await signal.wait_until(lambda: state["ready"])
    assert signal.waiters == 0
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(signal.wait_until, lambda: state["ready"], 5.0)
        await anyio.wait_all_tasks_blocked()
        assert signal.waiters == 3
        state["ready"] = True
        signal.notify()
    assert signal.waiters == 0


class _NullLink:
    """A transport that takes every frame (the test feeds the peer's frames by hand)."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []

    async def send(self, frame: str | bytes) -> None:
        self.frames.append(frame)

    def fail(self, reason: str) -> None:
        raise AssertionError(reason)

    async def send_many(self, frames: Sequence[str | bytes]) -> None:
        self.frames.extend(frames)

    def fast_send_many(self) -> tuple[Any, tuple[type[Exception], ...]]:
        return self.send_many, ()


@pytest.mark.anyio
async def test_blocked_senders_are_served_in_order_as_acks_free_room() -> None:
    """With a full window, blocked senders get in first come first served, one per freed
    slot; a sender that times out leaves its place to the next; closing wakes the rest
    with the error."""
    import anyio

    from resilient_conn import BufferFullError, ConnectionClosedError, Overflow
    from resilient_conn.delivery._endpoint import Attachment, Endpoint

    ep = Endpoint(
        StreamState("s", "mine", OutboundWindow(1, 1000)),
        overflow=Overflow.BLOCK,
        send_timeout=5.0,
        message_ttl=None,
        max_queue=10,
        ack_every=1,
        ack_delay=0.0,
        dead_letter_capacity=10,
    )
    att = Attachment(_NullLink())
    ep.begin(att)
    assert ep.apply_hello(Hello("s", "theirs", 1, None, 0), att)
    assert await ep.send("first") == 1
    order: list[str] = []

    async def send(text: str) -> None:
        await ep.send(text)
        order.append(text)

    async with anyio.create_task_group() as tg:
        for text in ("b", "c", "d"):
            tg.start_soon(send, text)
            await anyio.wait_all_tasks_blocked()
        for seq in (1, 2, 3):
            await ep.dispatch(encode_ack(seq), att)
            await anyio.wait_all_tasks_blocked()
            assert order == ["b", "c", "d"][:seq]
    late: list[BaseException] = []

    async def doomed() -> None:
        try:
            await ep.send("e")
        except ConnectionClosedError as exc:
            late.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed)
        await anyio.wait_all_tasks_blocked()
        ep.end(ConnectionClosedError("closed"))
    assert len(late) == 1
    quick = Endpoint(
        StreamState("s", "mine", OutboundWindow(1, 1000)),
        overflow=Overflow.BLOCK,
        send_timeout=0.01,
        message_ttl=None,
        max_queue=10,
        ack_every=1,
        ack_delay=0.0,
        dead_letter_capacity=10,
    )
    await quick.send("x")
    with pytest.raises(BufferFullError, match="still full"):
        await quick.send("y")
    assert not quick._blocked
