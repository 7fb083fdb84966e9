"""Connection states, the table of legal transitions, and the ``StateChange`` event.

::

    IDLE -> CONNECTING -> CONNECTED -> BACKOFF -> CONNECTING ...
                 |            |           ^
                 v            v           |
              BACKOFF      CLOSING -> CLOSED
                 |
                 v
            CIRCUIT_OPEN -> CONNECTING (probe)
                 |
                 v
              BACKOFF (a shared coordinator's ramp: "waiting for reconnect ramp")
    any live state -> FAILED (fatal error; final)   any live state -> CLOSING (user closes)

A transition not in :data:`TRANSITIONS` is a bug in the supervisor and raises
:class:`IllegalTransition`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["TRANSITIONS", "ConnectionState", "IllegalTransition", "StateChange"]


class ConnectionState(enum.Enum):
    """Where a logical connection is in its life."""

    IDLE = "idle"
    """Constructed, not started."""
    CONNECTING = "connecting"
    """Dialing and handshaking."""
    CONNECTED = "connected"
    """A transport is open; sends go straight to it."""
    BACKOFF = "backoff"
    """Waiting before the next dial."""
    CIRCUIT_OPEN = "circuit_open"
    """The breaker is open; waiting until it admits a probe dial."""
    CLOSING = "closing"
    """The user is closing: draining the buffer, closing the transport."""
    CLOSED = "closed"
    """Closed by the user. Final."""
    FAILED = "failed"
    """Stopped by a fatal error (401, 403, bad URL, ...). Final."""

    @property
    def is_final(self) -> bool:
        """True for CLOSED and FAILED: nothing happens after them."""
        return self in (ConnectionState.CLOSED, ConnectionState.FAILED)


_S = ConnectionState
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    _S.IDLE: frozenset({_S.CONNECTING, _S.CLOSING, _S.CLOSED}),
    _S.CONNECTING: frozenset({_S.CONNECTED, _S.BACKOFF, _S.CIRCUIT_OPEN, _S.CLOSING, _S.FAILED}),
    _S.CONNECTED: frozenset({_S.BACKOFF, _S.CIRCUIT_OPEN, _S.CONNECTING, _S.CLOSING, _S.FAILED}),
    _S.BACKOFF: frozenset({_S.CONNECTING, _S.CIRCUIT_OPEN, _S.CLOSING, _S.FAILED}),
    # CIRCUIT_OPEN -> BACKOFF: a shared coordinator's probe succeeded and this connection
    # now waits for its slot of the reconnect ramp.
    _S.CIRCUIT_OPEN: frozenset({_S.CONNECTING, _S.BACKOFF, _S.CLOSING, _S.FAILED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
    _S.FAILED: frozenset(),
}
"""Legal moves: ``TRANSITIONS[old]`` is the set of states ``old`` may move to."""


class IllegalTransition(RuntimeError):
    """The supervisor tried a transition that is not in :data:`TRANSITIONS` (a bug)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition of a connection, as hooks and logs see it.

    Attributes:
        old: The state left.
        new: The state entered.
        reason: Why, in a few words (``"server closed 1012"``, ``"heartbeat timeout"``).
        attempt: The dial attempt number since the last stable connection (0 when connected).
        error: The error behind the transition, if any: the exception object itself. Its text
            may quote what a server sent; the library redacts it before logging, and so should
            a hook before it forwards it anywhere (``resilient_conn._log.redact_text``).
        at: Wall-clock time of the transition (``time.time()``).
        name: The connection's name.
    """

    old: ConnectionState
    new: ConnectionState
    reason: str
    attempt: int
    error: BaseException | None
    at: float
    name: str
