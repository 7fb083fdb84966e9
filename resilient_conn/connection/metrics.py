"""Counters a connection keeps about itself, and the frozen snapshot handed to health/metrics.

The supervisor owns one :class:`ConnectionStats` per connection and bumps plain integer fields
(no locks: one event loop). Readers take :meth:`ConnectionStats.snapshot`, a frozen copy that
is safe to keep, log or serialise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..resilience.breaker import BreakerState
    from .events import ConnectionState

__all__ = ["ConnectionSnapshot", "ConnectionStats"]


MAX_FAILURE_KINDS = 32
"""Most distinct failure kinds one connection's counters (and metric labels) hold."""


@dataclass(slots=True)
class ConnectionStats:
    """Mutable counters of one logical connection (owned and updated by the supervisor).

    Attributes:
        dials: Dial attempts started.
        connects: Dials that completed the handshake.
        reconnects: Connects after the first one.
        failures: Failures by kind (``"refused"``, ``"handshake_503"``, ``"lost"``,
            ``"heartbeat_timeout"``, ...).
        messages_in: Messages received.
        messages_out: Messages handed to a transport.
        bytes_in: Payload bytes received (text counted as its UTF-8 length).
        bytes_out: Payload bytes sent (text counted as its UTF-8 length, on every path).
        dead_letters: Messages dead-lettered, by reason.
        circuit_opens: Times the supervisor found the breaker open.
        handler_errors: Exceptions ``on_message`` raised (each logged with its message's
            connection; the next message still came).
        disconnected_seconds: Total time spent not connected after the first connect.
    """

    dials: int = 0
    connects: int = 0
    reconnects: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    circuit_opens: int = 0
    handler_errors: int = 0
    disconnected_seconds: float = 0.0
    # The two dicts are made on first use (most connections never fail or dead-letter),
    # behind properties: a __getattr__ would do it too, but a class with one takes every
    # attribute access (each counter add on the message path) off CPython's fast path.
    _failures: dict[str, int] | None = field(default=None, init=False, repr=False)
    _dead_letters: dict[str, int] | None = field(default=None, init=False, repr=False)

    @property
    def failures(self) -> dict[str, int]:
        """Failures by kind (made on first use: an unused one reads as a new empty dict)."""
        made = self._failures
        if made is None:
            made = self._failures = {}
        return made

    @failures.setter
    def failures(self, value: dict[str, int]) -> None:
        self._failures = value

    @property
    def dead_letters(self) -> dict[str, int]:
        """Dead letters by reason (made on first use, like :attr:`failures`)."""
        made = self._dead_letters
        if made is None:
            made = self._dead_letters = {}
        return made

    @dead_letters.setter
    def dead_letters(self, value: dict[str, int]) -> None:
        self._dead_letters = value

    def __repr__(self) -> str:
        # the lazy dicts under their public names, read without making them
        failures, dead_letters = self.counts()
        shown = {
            "_failures": ("failures", failures),
            "_dead_letters": ("dead_letters", dead_letters),
        }
        parts = (shown.get(f.name) or (f.name, getattr(self, f.name)) for f in fields(self))
        return f"ConnectionStats({', '.join(f'{name}={value!r}' for name, value in parts)})"

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of :attr:`failures` and :attr:`dead_letters` (an unused one is not made)."""
        failures, dead = self._failures, self._dead_letters
        return ({} if failures is None else dict(failures), {} if dead is None else dict(dead))

    def count_failure(self, kind: str) -> None:
        """Add one failure of ``kind``.

        Kinds become metric labels, so at most :data:`MAX_FAILURE_KINDS` distinct ones are
        kept; later new kinds (a custom classifier's, say) are counted as ``"other"``.
        """
        if kind not in self.failures and len(self.failures) >= MAX_FAILURE_KINDS:
            kind = "other"
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def count_dead_letter(self, reason: str) -> None:
        """Add one dead letter with ``reason``."""
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class ConnectionSnapshot:
    """Everything health checks and metrics need to know about a connection, at one instant.

    Times: ``connected_since`` is wall-clock (``time.time()``); ``uptime`` and
    ``disconnected_for`` are durations in seconds measured on the connection's clock.

    Attributes:
        name: The connection's name.
        url: The URL, redacted.
        state: The ``ConnectionState`` member.
        breaker_state: ``BreakerState`` member of the connection's breaker.
        retry_after: Seconds until the breaker admits a probe (0.0 when it would now).
        connected_since: Wall time of the current connection, or None when not connected.
        uptime: Seconds the current connection has been up, or None.
        disconnected_for: Seconds since the last connection ended (or since start if it never
            connected), or None while connected.
        last_error: The last error, redacted, or None.
        consecutive_failures: Failed dials/connections since the last stable connection.
        rtt: The last measured round trip in seconds, or None.
        buffered: Messages waiting in the outbound buffer.
        buffered_bytes: Bytes waiting in the outbound buffer.
        dead_letters: Total dead letters.
        stats: Copy of the counters (``ConnectionStats`` fields as a dict).
    """

    name: str
    url: str
    state: ConnectionState
    breaker_state: BreakerState
    retry_after: float
    connected_since: float | None
    uptime: float | None
    disconnected_for: float | None
    last_error: str | None
    consecutive_failures: int
    rtt: float | None
    buffered: int
    buffered_bytes: int
    dead_letters: int
    stats: dict[str, object]
