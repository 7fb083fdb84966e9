"""Delivery you can count on: acknowledged streams and a durable outbox.

WebSocket has no acknowledgements: what sits in socket buffers when a transport dies is gone.
An *acknowledged stream* numbers every message, has the peer acknowledge them cumulatively,
keeps what is unacknowledged (bounded, with the connection's overflow and dead-letter rules),
re-sends it in order after every reconnect, and de-duplicates on the receiving side, so each
side's application sees every message once per session identity. Both directions.

* Client: :class:`AckedStream` over a :class:`~resilient_conn.ResilientConnection` (or
  :func:`connect_acked`); add a :class:`DurableOutbox` to survive a crash of the process.
* Server: :class:`DeliveryHub` (``hub.serve(ws)`` for websockets, ``hub.serve_asgi(scope,
  receive, send)`` for ASGI).
* Wire format: :mod:`resilient_conn.delivery.envelope`, specified in ``docs/delivery.md``.
* What cannot be guaranteed is reported: :class:`GapNotice`, :class:`DeliveryDeadLetter`.
"""

from __future__ import annotations

from ._options import (
    DEFAULT_ACK_DELAY,
    DEFAULT_ACK_EVERY,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    StreamOptions,
)
from .client import AckedStream, connect_acked
from .durable import (
    DurableOutbox,
    OutboxError,
    OutboxSummary,
    StoredDeadLetter,
    read_dead_letters,
    read_summary,
    requeue_dead_letters,
)
from .envelope import PROTOCOL_VERSION, EnvelopeError
from .records import DeliveryDeadLetter, DeliveryStats
from .server import DEFAULT_IDLE_TTL, DEFAULT_MAX_SESSIONS, DeliveryHub, ServerSession
from .state import GapKind, GapNotice

__all__ = [
    "DEFAULT_ACK_DELAY",
    "DEFAULT_ACK_EVERY",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_IDLE_TTL",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_BYTES",
    "PROTOCOL_VERSION",
    "AckedStream",
    "DeliveryDeadLetter",
    "DeliveryHub",
    "DeliveryStats",
    "DurableOutbox",
    "EnvelopeError",
    "GapKind",
    "GapNotice",
    "OutboxError",
    "OutboxSummary",
    "ServerSession",
    "StoredDeadLetter",
    "StreamOptions",
    "connect_acked",
    "read_dead_letters",
    "read_summary",
    "requeue_dead_letters",
]
