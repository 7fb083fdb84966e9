"""The decision logic of an acknowledged stream, without I/O (no clock reads, no sockets).

One :class:`StreamState` is one side of a session: the outbound window (sequence numbers,
unacknowledged messages bounded by count and bytes) and the inbound cursor (what was received
and delivered of the peer's stream, for de-duplication and acks). The I/O layers (the client's
:class:`~resilient_conn.delivery.AckedStream`, the server's
:class:`~resilient_conn.delivery.DeliveryHub`) feed it frames and carry out what it returns.

Delivery rules (see ``docs/delivery.md``):

* a data frame is accepted only when its sequence number is the next expected one; a lower
  one is a duplicate (dropped, still acked); a higher one on a live transport breaks the
  protocol (the transport is dropped and the streams resume from the hellos);
* the hellos exchanged on every new transport tell each side what the other has delivered,
  so each re-sends exactly what is unacknowledged, in order;
* whatever cannot be known or kept is reported as a :class:`GapNotice`, never silently.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Literal

from .envelope import MAX_SEQ, EnvelopeError, Hello, check_epoch, check_session, encode_data

__all__ = [
    "DataVerdict",
    "GapKind",
    "GapNotice",
    "InboundCursor",
    "OutboundWindow",
    "Pending",
    "StreamState",
    "payload_of",
    "payload_size",
]


class GapKind(enum.Enum):
    """What kind of discontinuity a :class:`GapNotice` reports."""

    SKIPPED = "skipped"
    """The peer gave up on (dead-lettered) messages ``first_missing..last_missing`` of its
    stream before we received them: they will never arrive."""
    PEER_RESTARTED = "peer_restarted"
    """The peer's stream started a new epoch (it lost its state): messages its old epoch had
    not yet delivered to us, after ``first_missing - 1``, are lost unless the peer keeps a
    durable outbox (it would then have kept its epoch)."""
    PEER_FORGOT = "peer_forgot"
    """The peer no longer knows our stream: everything it acknowledged before was delivered
    to its earlier incarnation; our unacknowledged messages from ``first_missing`` on are
    re-sent, and its application may see again the ones it received but had not acked."""
    UNKNOWN_BEFORE = "unknown_before"
    """We join the peer's stream at ``last_missing + 1`` with no record of it: either we
    lost our state (a restart) or earlier messages were acknowledged by our earlier
    incarnation. Nothing is known about messages up to ``last_missing``."""
    PEER_AHEAD = "peer_ahead"
    """The peer says it delivered messages of ours we have no record of sending (our state
    went back, e.g. a durable store restored from an old copy); numbering continues after
    them."""


@dataclass(frozen=True, slots=True)
class GapNotice:
    """A discontinuity in a session, reported instead of silent loss or duplication.

    Attributes:
        kind: What happened (:class:`GapKind`).
        session: Session identity.
        direction: ``"inbound"`` when messages to us may be missing, ``"outbound"`` when
            messages we sent may be missing or duplicated at the peer.
        epoch: The stream epoch concerned (the old one when it changed).
        new_epoch: The new epoch, when it changed.
        first_missing: First sequence number concerned, if known.
        last_missing: Last sequence number concerned, if known.
        detail: One sentence for logs and alerts.
    """

    kind: GapKind
    session: str
    direction: Literal["inbound", "outbound"]
    epoch: str | None
    new_epoch: str | None
    first_missing: int | None
    last_missing: int | None
    detail: str


def payload_size(payload: str | bytes) -> int:
    """Bytes a payload counts against the window (UTF-8 size for text)."""
    if isinstance(payload, str):
        return len(payload) if payload.isascii() else len(payload.encode("utf-8"))
    return len(payload)


def payload_of(frame: str | bytes) -> str | bytes:
    """The application payload inside an encoded data frame."""
    if isinstance(frame, bytes):
        return frame[frame.index(b"\n") + 1 :]
    return frame[frame.index("\n") + 1 :]


@dataclass(slots=True)
class Pending:
    """One unacknowledged outbound message.

    Attributes:
        seq: Its sequence number.
        frame: The encoded data frame (sent as is, and re-sent as is).
        size: Payload size in bytes (what counts against the window).
        enqueued_at: Clock reading when it entered the window.
        ready: False while a durable outbox has not committed it yet (not sendable).
    """

    seq: int
    frame: str | bytes
    size: int
    enqueued_at: float
    ready: bool = True

    @property
    def payload(self) -> str | bytes:
        """The application's message."""
        return payload_of(self.frame)


class OutboundWindow:
    """Sequence numbers and unacknowledged messages, bounded by count and bytes.

    Args:
        capacity: Most unacknowledged messages (>= 1).
        capacity_bytes: Most unacknowledged payload bytes (>= 1).
        next_seq: The next sequence number to assign (a durable outbox restores it).
    """

    __slots__ = ("_bytes", "_items", "capacity", "capacity_bytes", "next_seq")

    def __init__(self, capacity: int, capacity_bytes: int, next_seq: int = 1) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"window must be an int >= 1, got {capacity!r}")
        if (
            isinstance(capacity_bytes, bool)
            or not isinstance(capacity_bytes, int)
            or capacity_bytes < 1
        ):
            raise ValueError(f"window_bytes must be an int >= 1, got {capacity_bytes!r}")
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self.next_seq = next_seq
        self._items: deque[Pending] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def nbytes(self) -> int:
        """Payload bytes waiting for an ack."""
        return self._bytes

    @property
    def first(self) -> int:
        """Lowest sequence number still held (``next_seq`` when none is)."""
        return self._items[0].seq if self._items else self.next_seq

    def fits(self, size: int) -> bool:
        """Whether a message of ``size`` bytes fits now."""
        return len(self._items) < self.capacity and self._bytes + size <= self.capacity_bytes

    def can_ever_fit(self, size: int) -> bool:
        """Whether a message of ``size`` bytes fits in an empty window."""
        return size <= self.capacity_bytes

    def push(
        self, payload: str | bytes, now: float, *, ready: bool = True, size: int | None = None
    ) -> Pending:
        """Number ``payload``, keep it until acked, and return its entry (caller checked room).

        Args:
            payload: The message.
            now: Clock reading (its enqueue time).
            ready: False while a durable outbox has not committed it.
            size: Its :func:`payload_size`, if the caller has it already.
        """
        seq = self.next_seq
        if seq > MAX_SEQ:
            raise EnvelopeError("the stream ran out of sequence numbers (2**63-1)")
        if size is None:
            size = payload_size(payload)
        entry = Pending(seq, encode_data(seq, payload), size, now, ready)
        self.next_seq = seq + 1
        self._items.append(entry)
        self._bytes += size
        return entry

    def restore(self, entry: Pending) -> None:
        """Append an entry loaded from a durable outbox (sequence numbers must increase)."""
        if self._items and entry.seq <= self._items[-1].seq:
            raise ValueError(f"restored seq {entry.seq} is not after {self._items[-1].seq}")
        self._items.append(entry)
        self._bytes += entry.size
        self.next_seq = max(self.next_seq, entry.seq + 1)

    def get(self, seq: int) -> Pending | None:
        """The entry for ``seq``, or None if it was acked or not assigned yet."""
        items = self._items
        if not items:
            return None
        index = seq - items[0].seq
        if 0 <= index < len(items):
            return items[index]
        return None

    def ack(self, upto: int) -> list[Pending]:
        """Forget every entry up to ``upto`` (a cumulative ack); return them."""
        items = self._items
        done = []
        while items and items[0].seq <= upto:
            entry = items.popleft()
            self._bytes -= entry.size
            done.append(entry)
        return done

    def ready_frames(self, seq: int, limit: int, max_bytes: int) -> list[str | bytes]:
        """Frames from ``seq`` on, in order: at most ``limit``, up to one not ready or bytes."""
        items = self._items
        out: list[str | bytes] = []
        start = max(seq - items[0].seq, 0) if items else 0
        for entry in islice(items, start, start + limit):
            if not entry.ready or (out and max_bytes <= 0):
                break
            out.append(entry.frame)
            max_bytes -= entry.size
        return out

    def pop_oldest(self) -> Pending:
        """Remove and return the oldest entry (to make room)."""
        entry = self._items.popleft()
        self._bytes -= entry.size
        return entry

    def expire(self, now: float, ttl: float) -> list[Pending]:
        """Remove and return the entries at the front older than ``ttl``."""
        items = self._items
        out = []
        while items and now - items[0].enqueued_at > ttl:
            out.append(self.pop_oldest())
        return out

    def drain(self) -> list[Pending]:
        """Remove and return everything, oldest first."""
        out = list(self._items)
        self._items.clear()
        self._bytes = 0
        return out

    def entries(self) -> list[Pending]:
        """A copy of the entries, oldest first."""
        return list(self._items)


class DataVerdict(enum.Enum):
    """What to do with a data frame."""

    DELIVER = "deliver"
    """The next message: hand it to the application."""
    DUPLICATE = "duplicate"
    """Already received: drop it (and ack, so the peer can forget it)."""
    OUT_OF_ORDER = "out_of_order"
    """A message after a hole on a live transport: the protocol is broken; drop the transport."""
    NO_HELLO = "no_hello"
    """Data before the peer's hello on this transport: the protocol is broken."""


@dataclass(slots=True)
class InboundCursor:
    """How far the peer's stream has been received and delivered.

    Attributes:
        peer_epoch: Epoch of the peer's stream (None until the first hello).
        received: Highest sequence number accepted in order (queued or delivered).
        delivered: Highest sequence number handed to the application.
    """

    peer_epoch: str | None = None
    received: int = 0
    delivered: int = 0

    def on_data(self, seq: int) -> DataVerdict:
        """Classify data frame ``seq`` (and count it as received when it is the next one)."""
        if self.peer_epoch is None:
            return DataVerdict.NO_HELLO
        if seq == self.received + 1:
            self.received = seq
            return DataVerdict.DELIVER
        if seq <= self.received:
            return DataVerdict.DUPLICATE
        return DataVerdict.OUT_OF_ORDER

    def on_delivered(self, seq: int, epoch: str) -> bool:
        """Record that the application is done with ``seq`` of ``epoch``.

        Returns:
            True if the ack position moved (a message queued from an older epoch does not).
        """
        if epoch != self.peer_epoch or seq <= self.delivered:
            return False
        self.delivered = seq
        return True

    def preset(self, epoch: str, delivered: int) -> None:
        """Start from a position the application kept (a restarted server's ``resume``)."""
        self.peer_epoch = epoch
        self.received = self.delivered = delivered


@dataclass(slots=True)
class StreamState:
    """Both directions of one side of a session.

    Args:
        session: Session identity.
        epoch: This side's outbound stream epoch.
        window: The outbound window.

    Attributes:
        inbound: The cursor on the peer's stream.
        peer_knows_us: Whether the peer has ever confirmed our epoch (an ack or a hello
            naming it): a later hello that does not is then a :attr:`GapKind.PEER_FORGOT`.
    """

    session: str
    epoch: str
    window: OutboundWindow
    inbound: InboundCursor = field(default_factory=InboundCursor)
    peer_knows_us: bool = False

    def __post_init__(self) -> None:
        check_session(self.session)
        check_epoch(self.epoch)

    def hello(self) -> Hello:
        """The hello this side sends on a new transport."""
        inbound = self.inbound
        return Hello(
            session=self.session,
            epoch=self.epoch,
            first=self.window.first,
            peer_epoch=inbound.peer_epoch,
            delivered=inbound.delivered if inbound.peer_epoch is not None else 0,
        )

    def on_ack(self, upto: int) -> list[Pending] | None:
        """Apply a cumulative ack; None if it acks a number never sent (a protocol error)."""
        if upto >= self.window.next_seq:
            return None
        self.peer_knows_us = True
        return self.window.ack(upto)

    def on_hello(self, hello: Hello) -> tuple[list[Pending], list[GapNotice]]:
        """Apply the peer's hello; return the entries it acknowledges and the gap notices.

        Raises:
            EnvelopeError: The hello names another session.
        """
        if hello.session != self.session:
            raise EnvelopeError(f"hello for session {hello.session!r} on session {self.session!r}")
        notices = self._inbound_hello(hello)
        acked: list[Pending] = []
        window = self.window
        if hello.peer_epoch == self.epoch:
            if hello.delivered >= window.next_seq:
                notices.append(
                    self._notice(
                        GapKind.PEER_AHEAD,
                        "outbound",
                        self.epoch,
                        None,
                        window.next_seq,
                        hello.delivered,
                        f"the peer delivered up to #{hello.delivered} of ours but we were at "
                        f"#{window.next_seq - 1}; numbering continues after it",
                    )
                )
                window.next_seq = hello.delivered + 1
            acked = window.ack(hello.delivered)
            self.peer_knows_us = True
        elif self.peer_knows_us or window.first > 1:
            notices.append(
                self._notice(
                    GapKind.PEER_FORGOT,
                    "outbound",
                    self.epoch,
                    None,
                    window.first,
                    None,
                    f"the peer no longer knows our stream {self.epoch}; unacknowledged "
                    f"messages from #{window.first} are re-sent (its application may see some "
                    "again)",
                )
            )
        return acked, notices

    def _inbound_hello(self, hello: Hello) -> list[GapNotice]:
        cur = self.inbound
        notices = []
        if cur.peer_epoch is None:
            if hello.first > 1:
                notices.append(
                    self._notice(
                        GapKind.UNKNOWN_BEFORE,
                        "inbound",
                        hello.epoch,
                        None,
                        1,
                        hello.first - 1,
                        f"joining the peer's stream {hello.epoch} at #{hello.first} with no "
                        "record of what came before",
                    )
                )
        elif hello.epoch != cur.peer_epoch:
            notices.append(
                self._notice(
                    GapKind.PEER_RESTARTED,
                    "inbound",
                    cur.peer_epoch,
                    hello.epoch,
                    cur.received + 1,
                    None,
                    f"the peer's stream restarted ({cur.peer_epoch} -> {hello.epoch}): what "
                    f"it had not delivered to us after #{cur.received} is lost",
                )
            )
        elif hello.first > cur.received + 1:
            notices.append(
                self._notice(
                    GapKind.SKIPPED,
                    "inbound",
                    hello.epoch,
                    None,
                    cur.received + 1,
                    hello.first - 1,
                    f"the peer gave up on #{cur.received + 1}..#{hello.first - 1} of its "
                    "stream before we received them",
                )
            )
        if cur.peer_epoch != hello.epoch:
            cur.peer_epoch = hello.epoch
            cur.received = cur.delivered = hello.first - 1
        elif hello.first > cur.received + 1:
            cur.received = hello.first - 1
        return notices

    def _notice(
        self,
        kind: GapKind,
        direction: Literal["inbound", "outbound"],
        epoch: str | None,
        new_epoch: str | None,
        first: int | None,
        last: int | None,
        detail: str,
    ) -> GapNotice:
        return GapNotice(kind, self.session, direction, epoch, new_epoch, first, last, detail)
