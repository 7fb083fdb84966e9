"""The application the demo runs: an acking, de-duplicating server and an acking sender.

WebSocket has no acknowledgements: a message written to a socket that then dies (a silent
peer, a reset) may or may not have reached the server, and the library cannot know. A careful
application closes that gap itself, and so does the demo:

* the server acks each sequence number and de-duplicates by it (counting what it suppressed);
* the client keeps unacked messages (bounded) and re-sends, from ``on_open`` after every
  reconnect, those that were handed to a transport that has since gone away. Messages sent
  while disconnected wait in the library's own outbound buffer, which flushes them after
  ``on_open``; whatever the library dead-letters is given up and counted, never lost silently.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection

from .._core.errors import BufferFullError
from ..connection.buffer import DeadLetter
from ..connection.connection import ResilientConnection
from ..connection.events import ConnectionState
from ..testing import ScriptedServer

__all__ = ["AckingSender", "DemoServerState", "decode_seq", "encode_message"]


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


@dataclass(slots=True)
class DemoServerState:
    """What the demo server saw, shared by all its connections (it survives restarts).

    Attributes:
        delivered: Sequence numbers received at least once.
        duplicates: Copies received of an already delivered sequence number (suppressed).
        flapping: While True, every new connection is accepted and closed at once (1011).
        flaps: Connections dropped by flapping.
    """

    delivered: set[int] = field(default_factory=set)
    duplicates: int = 0
    flapping: bool = False
    flaps: int = 0

    async def handler(self, ws: ServerConnection, server: ScriptedServer) -> None:
        """Serve one connection: ack every sequence number, apply each one only once."""
        if self.flapping:
            self.flaps += 1
            await ws.close(1011, "flapping")
            return
        async for message in ws:
            seq = decode_seq(message)
            if seq is None:
                continue
            if seq in self.delivered:
                self.duplicates += 1
            else:
                self.delivered.add(seq)
            await ws.send(json.dumps({"ack": seq}))


class AckingSender:
    """Sends sequence-numbered messages and re-sends the unacked ones after a reconnect.

    Wire it to a connection with ``on_open=sender.on_open`` and
    ``on_dead_letter=sender.on_dead_letter``, and feed acks to :meth:`on_ack`.

    Args:
        capacity: Most unacked messages kept; beyond it the oldest is given up (counted as
            dead-lettered, never dropped silently).
        on_give_up: Called with each sequence number given up and why.
    """

    def __init__(
        self, capacity: int = 10_000, on_give_up: Callable[[int, str], None] | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        # seq -> [message, handed to a transport?]
        self._unacked: OrderedDict[int, list[object]] = OrderedDict()
        self._on_give_up = on_give_up
        self.sent: set[int] = set()
        """Every sequence number ever sent (first copies)."""
        self.dead: set[int] = set()
        """Sequence numbers given up (dead-lettered by the library or evicted here)."""
        self.resent = 0
        """Copies re-sent from ``on_open``."""
        self.acked = 0
        """Acks received."""

    @property
    def unacked(self) -> int:
        """Messages sent but not acknowledged yet."""
        return len(self._unacked)

    async def send(self, conn: ResilientConnection, seq: int) -> None:
        """Send message ``seq`` (buffered by the library while disconnected)."""
        message = encode_message(seq)
        # CONNECTED means a transport exists: the message goes to it (directly, or through the
        # buffer flushed onto it). Otherwise it waits in the buffer for the next transport.
        on_wire = conn.state is ConnectionState.CONNECTED
        self.sent.add(seq)
        self._unacked[seq] = [message, on_wire]
        while len(self._unacked) > self.capacity:
            old, _ = self._unacked.popitem(last=False)
            self._give_up(old, "unacked_overflow")
        try:
            await conn.send(message)
        except BufferFullError:  # the library refused it: the application gives it up, loudly
            self._unacked.pop(seq, None)
            self._give_up(seq, "buffer_full")

    async def on_open(self, conn: ResilientConnection) -> None:
        """Re-send what earlier transports took but never acked (``on_open`` hook)."""
        stale = [(seq, entry[0]) for seq, entry in self._unacked.items() if entry[1]]
        for entry in self._unacked.values():
            entry[1] = True  # buffered ones are flushed onto this transport right after
        for _, message in stale:
            assert isinstance(message, str)
            await conn.send(message)
            self.resent += 1

    def on_ack(self, message: str | bytes) -> None:
        """Handle a message from the server: an ack forgets its sequence number."""
        seq = decode_seq(message, "ack")
        if seq is not None and self._unacked.pop(seq, None) is not None:
            self.acked += 1

    def on_dead_letter(self, letter: DeadLetter) -> None:
        """The library gave up on a message: stop tracking it and count it as dead-lettered."""
        seq = decode_seq(letter.message)
        if seq is not None:
            self._unacked.pop(seq, None)
            self._give_up(seq, letter.reason.value)

    def _give_up(self, seq: int, reason: str) -> None:
        self.dead.add(seq)
        if self._on_give_up is not None:
            self._on_give_up(seq, reason)
