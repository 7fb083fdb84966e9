"""What an acknowledged stream reports: dead letters and counters (plain data, no I/O)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..connection.buffer import DeadLetterReason

__all__ = ["DeliveryDeadLetter", "DeliveryStats"]


@dataclass(frozen=True, slots=True)
class DeliveryDeadLetter:
    """A message of an acknowledged stream that was given up before it was acknowledged.

    It may still have reached the peer (it was sent but no ack came back); it was not
    confirmed. The reasons are the connection's (:class:`~resilient_conn.DeadLetterReason`):
    ``overflow``, ``expired``, ``too_large``, ``closed``, ``failed``.

    Attributes:
        seq: Its sequence number (0 when it never got one: refused before numbering).
        message: The message exactly as passed to ``send()``.
        reason: Why it was given up.
        enqueued_at: Clock reading when it entered the window (None if it never did).
        at: Clock reading when it was given up.
        session: Session identity of the stream.
        error: The error behind it, if any (as text: it may come from a durable store).
    """

    seq: int
    message: str | bytes
    reason: DeadLetterReason
    enqueued_at: float | None
    at: float
    session: str
    error: str | None = None


@dataclass(slots=True)
class DeliveryStats:
    """Live counters of one side of an acknowledged stream.

    Attributes:
        sent: Messages accepted by ``send()`` (numbered).
        written: Data frames written to a transport (first copies and re-sends).
        resent: Data frames written again after a reconnect.
        acked: Messages the peer acknowledged.
        delivered: Messages handed to the application (each once).
        duplicates: Data frames dropped as duplicates (already received).
        acks_sent: Ack frames written.
        hellos: Hellos received.
        invalid_frames: Frames that were not valid envelopes (counted and skipped).
        protocol_errors: Transports dropped because the peer broke the protocol.
        gaps: Gap notices raised.
        dead_letters: Dead letters by reason.
    """

    sent: int = 0
    written: int = 0
    resent: int = 0
    acked: int = 0
    delivered: int = 0
    duplicates: int = 0
    acks_sent: int = 0
    hellos: int = 0
    invalid_frames: int = 0
    protocol_errors: int = 0
    gaps: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe copy."""
        return {
            "sent": self.sent,
            "written": self.written,
            "resent": self.resent,
            "acked": self.acked,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "acks_sent": self.acks_sent,
            "hellos": self.hellos,
            "invalid_frames": self.invalid_frames,
            "protocol_errors": self.protocol_errors,
            "gaps": self.gaps,
            "dead_letters": dict(self.dead_letters),
        }
