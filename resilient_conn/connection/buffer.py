"""The bounded outbound buffer and dead letters (pure: no I/O, no clock reads).

While a connection is down, ``send()`` puts messages here; they are flushed in order after the
next connection's ``on_open`` hook. The buffer is bounded by message count and by bytes. What
cannot be kept is never dropped silently: it becomes a :class:`DeadLetter` with a reason, which
the connection hands to its dead-letter sink and counts.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["DeadLetter", "DeadLetterReason", "OutboundBuffer", "Overflow", "message_size"]


class Overflow(enum.Enum):
    """What ``send()`` does when the buffer is full."""

    BLOCK = "block"
    """Wait (up to ``send_timeout``) for room; then raise ``BufferFullError``."""
    DROP_OLDEST = "drop_oldest"
    """Evict the oldest buffered message (dead-lettered ``"overflow"``) to make room."""
    DROP_NEWEST = "drop_newest"
    """Dead-letter the new message (``"overflow"``) and return."""
    RAISE = "raise"
    """Raise ``BufferFullError`` at once; the caller keeps the message."""


class DeadLetterReason(enum.Enum):
    """Why a message was dead-lettered."""

    OVERFLOW = "overflow"
    """The buffer was full (drop_oldest / drop_newest)."""
    EXPIRED = "expired"
    """It waited longer than ``message_ttl``."""
    CLOSED = "closed"
    """The user closed the connection before it could be sent."""
    FAILED = "failed"
    """The connection reached FAILED (a fatal error) before it could be sent."""
    TOO_LARGE = "too_large"
    """It is larger than the buffer's byte capacity, so it can never be buffered."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be delivered, and why.

    Attributes:
        message: The message exactly as passed to ``send()``.
        reason: Why it was not delivered.
        enqueued_at: Clock reading when it entered the buffer (None if it never did).
        at: Clock reading when it was dead-lettered.
        connection: Name of the connection.
        error: The error behind it (e.g. the fatal error for ``FAILED``), if any.
    """

    message: str | bytes
    reason: DeadLetterReason
    enqueued_at: float | None
    at: float
    connection: str
    error: BaseException | None = None


def message_size(message: str | bytes) -> int:
    """Return the size that counts against ``buffer_bytes`` (UTF-8 bytes for text)."""
    if isinstance(message, str):
        return len(message) if message.isascii() else len(message.encode("utf-8"))
    return len(message)


_EMPTY: Any = ()  # stands in for an empty deque until the first append


class OutboundBuffer:
    """A FIFO of pending messages bounded by count and bytes.

    Args:
        max_messages: Capacity in messages (>= 1).
        max_bytes: Capacity in bytes (>= 1).
    """

    __slots__ = ("_bytes", "_items", "max_bytes", "max_messages")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # The deque is made on the first append: a connection that never buffers (most of
        # them, most of the time) holds an empty tuple instead of an empty deque.
        self._items: deque[tuple[str | bytes, int, float]] = _EMPTY
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def _deque(self) -> deque[tuple[str | bytes, int, float]]:
        items = self._items
        if items is _EMPTY:
            items = self._items = deque()
        return items

    @property
    def nbytes(self) -> int:
        """Bytes currently buffered."""
        return self._bytes

    def fits(self, size: int) -> bool:
        """Return whether a message of ``size`` bytes fits without evicting anything."""
        return len(self._items) < self.max_messages and self._bytes + size <= self.max_bytes

    def can_ever_fit(self, size: int) -> bool:
        """Return whether a message of ``size`` bytes fits in an empty buffer."""
        return size <= self.max_bytes

    def append(self, message: str | bytes, size: int, now: float) -> None:
        """Add a message at the end (the caller checked :meth:`fits` or evicted first)."""
        self._deque().append((message, size, now))
        self._bytes += size

    def appendleft(self, message: str | bytes, size: int, enqueued_at: float) -> None:
        """Put a message back at the front (a flush that could not send it)."""
        self._deque().appendleft((message, size, enqueued_at))
        self._bytes += size

    def popleft(self) -> tuple[str | bytes, int, float]:
        """Remove and return the oldest ``(message, size, enqueued_at)``."""
        item = self._items.popleft()
        self._bytes -= item[1]
        return item

    def peek(self) -> tuple[str | bytes, int, float]:
        """Return the oldest ``(message, size, enqueued_at)`` without removing it."""
        return self._items[0]

    def make_room(self, size: int) -> list[tuple[str | bytes, int, float]]:
        """Evict oldest messages until one of ``size`` bytes fits; return the evicted ones."""
        evicted = []
        while self._items and not self.fits(size):
            evicted.append(self.popleft())
        return evicted

    def expire(self, now: float, ttl: float) -> list[tuple[str | bytes, int, float]]:
        """Remove and return the messages at the front that were enqueued more than ``ttl`` ago."""
        expired = []
        while self._items and now - self._items[0][2] > ttl:
            expired.append(self.popleft())
        return expired

    def drain(self) -> list[tuple[str | bytes, int, float]]:
        """Remove and return everything, oldest first."""
        items = list(self._items)
        self._items = _EMPTY
        self._bytes = 0
        return items
