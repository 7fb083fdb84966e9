"""Defaults and validation shared by both ends of an acknowledged stream (internal)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._core.errors import ConfigError
from ..connection.buffer import Overflow
from ..resilience.config import check_int

__all__ = [
    "DEFAULT_ACK_DELAY",
    "DEFAULT_ACK_EVERY",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_BYTES",
    "StreamOptions",
]

DEFAULT_WINDOW = 1000
"""Most unacknowledged messages one side keeps (like ``buffer_size``)."""
DEFAULT_WINDOW_BYTES = 1 << 20
"""Most unacknowledged payload bytes one side keeps (1 MiB, like ``buffer_bytes``)."""
DEFAULT_SEND_TIMEOUT = 10.0
"""How long a ``"block"`` send waits for room in the window (seconds)."""
DEFAULT_MAX_QUEUE = 1024
"""Received messages queued for the application before the reader stops reading."""
DEFAULT_ACK_EVERY = 64
"""An ack is sent at the latest after this many delivered messages..."""
DEFAULT_ACK_DELAY = 0.01
"""...or this many seconds after the first unacknowledged delivery."""
DEFAULT_HELLO_TIMEOUT = 10.0
"""How long a side waits for the peer's hello on a new transport (seconds)."""
DEFAULT_DRAIN_TIMEOUT = 5.0
"""How long closing a stream waits for outstanding acks (seconds)."""


def _positive(value: float, name: str, *, zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _count(value: int, name: str) -> int:
    return check_int(value, name, 1)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Validated settings of one side of an acknowledged stream (see ``AckedStream``)."""

    window: int = DEFAULT_WINDOW
    window_bytes: int = DEFAULT_WINDOW_BYTES
    overflow: Overflow = Overflow.BLOCK
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    message_ttl: float | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    ack_every: int = DEFAULT_ACK_EVERY
    ack_delay: float = DEFAULT_ACK_DELAY
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    dead_letter_capacity: int = 1000

    @classmethod
    def build(
        cls,
        *,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        overflow: str | Overflow = "block",
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        message_ttl: float | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        ack_every: int = DEFAULT_ACK_EVERY,
        ack_delay: float = DEFAULT_ACK_DELAY,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        dead_letter_capacity: int = 1000,
    ) -> StreamOptions:
        """Validate every setting.

        Raises:
            ConfigError: A value is out of range (the message names it).
        """
        try:
            policy = Overflow(overflow)
        except ValueError:
            choices = ", ".join(repr(o.value) for o in Overflow)
            raise ConfigError(f"overflow must be one of {choices}, got {overflow!r}") from None
        check_int(dead_letter_capacity, "dead_letter_capacity")
        return cls(
            window=_count(window, "window"),
            window_bytes=_count(window_bytes, "window_bytes"),
            overflow=policy,
            send_timeout=_positive(send_timeout, "send_timeout"),
            message_ttl=None if message_ttl is None else _positive(message_ttl, "message_ttl"),
            max_queue=_count(max_queue, "max_queue"),
            ack_every=_count(ack_every, "ack_every"),
            ack_delay=_positive(ack_delay, "ack_delay", zero=True),
            hello_timeout=_positive(hello_timeout, "hello_timeout"),
            drain_timeout=_positive(drain_timeout, "drain_timeout", zero=True),
            dead_letter_capacity=dead_letter_capacity,
        )
