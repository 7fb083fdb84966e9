"""The application the demo runs, on the library's acknowledged stream.

WebSocket has no acknowledgements: a message written to a socket that then dies (a silent
peer, a reset) may or may not have reached the server, and the connection cannot know. The
demo does not close that gap by hand: it sends through an
:class:`~resilient_conn.delivery.AckedStream` and the server reads through a
:class:`~resilient_conn.delivery.DeliveryHub`, so the library numbers every message, keeps
it until the server acknowledges it, re-sends it after every reconnect and drops the copies.

What is left to the application is the counting the SUMMARY is made of, kept independent of
the library's own counters:

* the server application records every sequence number the hub hands it (and any copy or
  reordering that reached it, which must never happen);
* the client records every sequence number it sends, and every one the stream gives up
  (its dead letters), so ``lost = sent - delivered - dead_lettered`` can be checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection

from .._core.errors import BufferFullError, ConnectionClosedError
from ..delivery import AckedStream, DeliveryDeadLetter, DeliveryHub, EnvelopeError, GapNotice
from ..testing import ScriptedServer

__all__ = [
    "DRAIN_TIMEOUT",
    "SESSION",
    "WINDOW",
    "DemoClient",
    "DemoServerState",
    "decode_seq",
    "encode_message",
]

SESSION = "demo"
"""Session identity of the demo's acknowledged stream (the hub keeps its state under it)."""
WINDOW = 10_000
"""Most unacknowledged messages the demo's stream keeps (500 s of sending at 20 msg/s)."""
DRAIN_TIMEOUT = 1.0
"""How long closing the demo's stream waits for acks (the stream's default is 5 s). The demo
waits for them itself before closing, so this only bounds an interrupted run (Ctrl-C during
an outage)."""


def encode_message(seq: int) -> str:
    """Return the JSON text of message ``seq``."""
    return json.dumps({"seq": seq, "body": f"reading #{seq}"})


def decode_seq(message: str | bytes, key: str = "seq") -> int | None:
    """Return the integer under ``key`` in a JSON object message, or None if there is none."""
    try:
        data = json.loads(message)
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class DemoServerState:
    """The demo server: a :class:`DeliveryHub` and what its application received.

    One instance serves every connection and survives the server's restarts (the hub keeps
    the session across them, as a server process that stays up would).

    Args:
        on_gap: Called with every gap notice of the hub's sessions (none is expected).

    Attributes:
        hub: The hub every connection attaches to.
        delivered: Sequence numbers the application received.
        duplicates_delivered: Copies of an already received number that reached the
            application (the hub drops copies: must stay 0).
        reordered: Messages that reached the application after a higher number (must stay 0).
        invalid: Messages whose sequence number could not be read.
        flapping: While True, every new connection is accepted and closed at once (1011).
        flaps: Connections dropped by flapping.
        refused: Connections the hub refused or that left before their hello.
    """

    def __init__(self, on_gap: Callable[[GapNotice], object] | None = None) -> None:
        self.hub = DeliveryHub(on_gap=on_gap)
        self.delivered: set[int] = set()
        self.duplicates_delivered = 0
        self.reordered = 0
        self.invalid = 0
        self.flapping = False
        self.flaps = 0
        self.refused = 0
        self._highest = 0

    @property
    def duplicates_suppressed(self) -> int:
        """Copies the hub received and dropped before they reached the application."""
        session = self.hub.get(SESSION)
        return 0 if session is None else session.stats.duplicates

    async def handler(self, ws: ServerConnection, server: ScriptedServer) -> None:
        """Serve one connection: attach it to its session and record each message handed over."""
        if self.flapping:
            self.flaps += 1
            await ws.close(1011, "flapping")
            return
        try:
            async with self.hub.serve(ws) as session:
                async for message in session:
                    self.record(message)
        except (EnvelopeError, ConnectionClosedError):
            # no hello (the client left during a fault, or it was not ours): nothing was
            # taken from this connection, and the hub counted it; the client dials again
            self.refused += 1

    def record(self, message: str | bytes) -> None:
        """Account for one message the hub handed to the application."""
        seq = decode_seq(message)
        if seq is None:
            self.invalid += 1
            return
        if seq in self.delivered:
            self.duplicates_delivered += 1
            return
        if seq < self._highest:
            self.reordered += 1
        self._highest = max(self._highest, seq)
        self.delivered.add(seq)


class DemoClient:
    """The demo client: numbered readings sent through an :class:`AckedStream`, counted.

    Wire it to the connection with ``on_open=client.stream.on_open`` and run the stream with
    ``async with client.stream.open(conn)``.

    Args:
        on_give_up: Called with each sequence number the stream gave up on and why.
        on_gap: Called with every gap notice of the stream (none is expected).
        window: Most unacknowledged messages the stream keeps (``overflow="block"``).
        **stream_options: Further :class:`AckedStream` settings (``send_timeout``,
            ``drain_timeout`` (default :data:`DRAIN_TIMEOUT`)...).
    """

    def __init__(
        self,
        on_give_up: Callable[[int, str], None] | None = None,
        on_gap: Callable[[GapNotice], object] | None = None,
        window: int = WINDOW,
        **stream_options: Any,
    ) -> None:
        stream_options.setdefault("drain_timeout", DRAIN_TIMEOUT)
        self.stream = AckedStream(
            SESSION,
            window=window,
            on_dead_letter=self._on_dead_letter,
            on_gap=on_gap,
            **stream_options,
        )
        """The library's acknowledged stream the readings go through."""
        self._on_give_up = on_give_up
        self.sent: set[int] = set()
        """Every sequence number handed to the stream."""
        self.dead: set[int] = set()
        """Sequence numbers given up (dead-lettered by the stream, or refused by it)."""

    @property
    def unacked(self) -> int:
        """Messages sent and not yet acknowledged by the server."""
        return self.stream.unacked

    @property
    def resent(self) -> int:
        """Copies the stream wrote again after a reconnect."""
        return self.stream.stats.resent

    async def send(self, seq: int) -> None:
        """Send reading ``seq``; a message the stream refuses is counted as given up."""
        self.sent.add(seq)
        try:
            await self.stream.send(encode_message(seq))
        except BufferFullError:  # the window stayed full for send_timeout: reported, not lost
            self._give_up(seq, "buffer_full")

    def _on_dead_letter(self, letter: DeliveryDeadLetter) -> None:
        seq = decode_seq(letter.message)
        if seq is not None:
            self._give_up(seq, letter.reason.value)

    def _give_up(self, seq: int, reason: str) -> None:
        self.dead.add(seq)
        if self._on_give_up is not None:
            self._on_give_up(seq, reason)
