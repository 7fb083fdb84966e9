"""The channel state machine of PHOENIX-PROTOCOL.md section 6, without I/O.

:class:`ChannelMachine` takes events (the user joins or leaves, a reply arrives, the socket
opens or closes, a timer fires) and returns a list of actions for its owner to carry out
(send a join, arm a rejoin timer, tell the subscriber the join failed, ...). It reads no clock,
owns no task and touches no socket, so every path is tested without an event loop. The
:class:`~resilient_conn.realtime.channel.Channel` object owns one and the client carries out
its actions.

::

    closed  --join---------> joining --reply ok-------> joined
    joining --error/timeout-> errored --socket open / rejoin timer--> joining
    joined/joining --phx_error, socket close--> errored
    any --leave--> leaving --reply / timeout--> closed
    any --phx_close for the CURRENT join_ref--> closed (no auto rejoin)

Choices where the protocol is silent: a failure of the FIRST join (error reply, timeout,
``phx_error``) ends the channel (closed, the subscriber gets the reason) instead of retrying
forever behind the caller's back; once a channel has been joined, every later failure is
retried with the rejoin backoff. A Supabase ``system`` error marks the channel as fatally
closed: it is never rejoined, and the following ``phx_close`` (or a socket close) ends it with
the server's message as the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import RefCounter

__all__ = [
    "CLOSED_BY_SERVER",
    "UNSUBSCRIBED",
    "Action",
    "ChannelMachine",
    "ChannelState",
    "Closed",
    "IllegalChannelTransition",
    "JoinFailed",
    "Joined",
    "ScheduleRejoin",
    "SendJoin",
    "SendLeave",
    "default_rejoin_delay",
]


class ChannelState(enum.Enum):
    """Where a channel is in its life (Phoenix's five states)."""

    CLOSED = "closed"
    """Not joined and not trying to be (initial and final)."""
    JOINING = "joining"
    """A join was (or will be, once the socket opens) sent; waiting for its reply."""
    JOINED = "joined"
    """Joined: pushes go out and events come in."""
    LEAVING = "leaving"
    """A leave was sent; waiting for its reply."""
    ERRORED = "errored"
    """Lost (socket closed, server error, failed rejoin); will rejoin."""


_S = ChannelState
_TRANSITIONS: dict[ChannelState, frozenset[ChannelState]] = {
    _S.CLOSED: frozenset({_S.JOINING}),
    _S.JOINING: frozenset({_S.JOINED, _S.ERRORED, _S.LEAVING, _S.CLOSED}),
    _S.JOINED: frozenset({_S.ERRORED, _S.LEAVING, _S.CLOSED}),
    _S.ERRORED: frozenset({_S.JOINING, _S.LEAVING, _S.CLOSED}),
    _S.LEAVING: frozenset({_S.CLOSED}),
}


class IllegalChannelTransition(RuntimeError):
    """The machine tried a move that is not in its table (a bug)."""


@dataclass(frozen=True, slots=True)
class SendJoin:
    """Send ``phx_join`` with ``ref = join_ref = join_ref`` and arm its timeout."""

    join_ref: str


@dataclass(frozen=True, slots=True)
class SendLeave:
    """Send ``phx_leave`` with ``ref`` on the channel's ``join_ref``."""

    ref: str
    join_ref: str | None


@dataclass(frozen=True, slots=True)
class ScheduleRejoin:
    """Call :meth:`ChannelMachine.rejoin_due` with ``token`` after ``delay`` seconds."""

    delay: float
    token: int


@dataclass(frozen=True, slots=True)
class Joined:
    """The join succeeded: flush buffered pushes; ``rejoined`` means a gap may exist."""

    rejoined: bool
    response: Any


@dataclass(frozen=True, slots=True)
class JoinFailed:
    """A join attempt failed with ``reason`` (server reason, ``"timeout"``, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The channel ended; ``reason`` says why. Fail whatever still waits on it."""

    reason: str


Action = SendJoin | SendLeave | ScheduleRejoin | Joined | JoinFailed | Closed

UNSUBSCRIBED = "unsubscribed"
CLOSED_BY_SERVER = "closed by server"


def default_rejoin_delay(attempt: int) -> float:
    """Phoenix's rejoin schedule: 1, 2, 5 s, then 10 s (``attempt`` counts from 1)."""
    return (1.0, 2.0, 5.0)[attempt - 1] if attempt <= 3 else 10.0


class ChannelMachine:
    """One channel's state machine.

    Args:
        topic: The channel topic (for messages only).
        refs: The socket's ref counter (joins and leaves take fresh refs from it).
        rejoin_delay: Seconds to wait before rejoin attempt ``n`` (1-based).
        socket_open: Whether the socket is open now.
    """

    __slots__ = (
        "_rejoin_delay",
        "_socket_open",
        "_token",
        "attempts",
        "closed_reason",
        "desired",
        "fatal_reason",
        "join_ref",
        "joined_once",
        "leave_ref",
        "refs",
        "state",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        refs: RefCounter,
        rejoin_delay: Callable[[int], float] = default_rejoin_delay,
        *,
        socket_open: bool = False,
    ) -> None:
        self.topic = topic
        self.refs = refs
        self._rejoin_delay = rejoin_delay
        self._socket_open = socket_open
        self._token = 0
        self.state = ChannelState.CLOSED
        self.join_ref: str | None = None
        self.leave_ref: str | None = None
        self.desired = False
        self.joined_once = False
        self.attempts = 0
        self.fatal_reason: str | None = None
        self.closed_reason: str | None = None

    def __repr__(self) -> str:
        return f"ChannelMachine({self.topic!r}, {self.state.value}, join_ref={self.join_ref})"

    @property
    def socket_open(self) -> bool:
        """Whether the machine believes the socket is open."""
        return self._socket_open

    def abort(self, reason: str) -> list[Action]:
        """End the channel now whatever its state (client closing, connection failed)."""
        if self.state is ChannelState.CLOSED:
            return []
        return self._close(reason)

    @property
    def can_push(self) -> bool:
        """True when pushes may go out now (joined)."""
        return self.state is ChannelState.JOINED

    def _set(self, new: ChannelState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise IllegalChannelTransition(f"{self.topic}: {self.state.value} -> {new.value}")
        self.state = new

    def _send_join(self) -> list[Action]:
        self._set(ChannelState.JOINING)
        self._token += 1
        self.join_ref = self.refs.next()
        return [SendJoin(self.join_ref)]

    def _close(self, reason: str) -> list[Action]:
        self.desired = False
        self._token += 1
        self._set(ChannelState.CLOSED)
        self.closed_reason = reason
        return [Closed(reason)]

    def _schedule(self) -> list[Action]:
        if not self._socket_open or not self.desired:
            return []
        self.attempts += 1
        self._token += 1
        return [ScheduleRejoin(self._rejoin_delay(self.attempts), self._token)]

    def _failed(self, reason: str) -> list[Action]:
        if not self.joined_once:
            return [JoinFailed(reason), *self._close(reason)]
        self._set(ChannelState.ERRORED)
        return [JoinFailed(reason), *self._schedule()]

    # --- user events -----------------------------------------------------------------------

    def join(self) -> list[Action]:
        """The user subscribes. Sends a join now if the socket is open, else on open."""
        if self.state is not ChannelState.CLOSED:
            return []
        self.desired = True
        self.fatal_reason = self.closed_reason = None
        self.joined_once = False
        self.attempts = 0
        if self._socket_open:
            return self._send_join()
        self._set(ChannelState.JOINING)
        self.join_ref = None
        return []

    def leave(self) -> list[Action]:
        """The user unsubscribes: send a leave if there is anything to leave, else close."""
        if self.state in (ChannelState.CLOSED, ChannelState.LEAVING):
            return []
        self.desired = False
        self._token += 1
        if (
            self._socket_open
            and self.join_ref is not None
            and self.state
            in (
                ChannelState.JOINED,
                ChannelState.JOINING,
            )
        ):
            self._set(ChannelState.LEAVING)
            self.leave_ref = self.refs.next()
            return [SendLeave(self.leave_ref, self.join_ref)]
        return self._close(UNSUBSCRIBED)

    # --- socket events ---------------------------------------------------------------------

    def socket_opened(self) -> list[Action]:
        """A transport opened: (re)join now if the channel should be joined."""
        self._socket_open = True
        if self.desired and self.state in (ChannelState.JOINING, ChannelState.ERRORED):
            return self._send_join()
        return []

    def socket_closed(self) -> list[Action]:
        """The transport closed (or its heartbeat timed out)."""
        self._socket_open = False
        if self.state is ChannelState.LEAVING:
            return self._close(UNSUBSCRIBED)
        if self.fatal_reason is not None and self.state is not ChannelState.CLOSED:
            return self._close(self.fatal_reason)
        if self.state in (ChannelState.JOINED, ChannelState.JOINING) and self.join_ref:
            self._token += 1
            self._set(ChannelState.ERRORED)
        return []

    # --- server events ---------------------------------------------------------------------

    def reply(self, ref: str | None, status: str, response: Any) -> list[Action]:
        """A ``phx_reply`` for the join or the leave (other refs are not the machine's)."""
        if ref is None:
            return []
        if self.state is ChannelState.JOINING and ref == self.join_ref:
            if status == "ok":
                self._set(ChannelState.JOINED)
                rejoined = self.joined_once
                self.joined_once = True
                self.attempts = 0
                return [Joined(rejoined, response)]
            return self._failed(_reason(response))
        if self.state is ChannelState.LEAVING and ref == self.leave_ref:
            return self._close(UNSUBSCRIBED)
        return []

    def join_timed_out(self, join_ref: str) -> list[Action]:
        """The join sent as ``join_ref`` got no reply in time: leave it and retry later."""
        if self.state is not ChannelState.JOINING or join_ref != self.join_ref:
            return []
        leave = SendLeave(self.refs.next(), join_ref) if self._socket_open else None
        return ([leave] if leave else []) + self._failed("timeout")

    def leave_timed_out(self, leave_ref: str) -> list[Action]:
        """The leave got no reply in time: consider the channel closed anyway."""
        if self.state is ChannelState.LEAVING and leave_ref == self.leave_ref:
            return self._close(UNSUBSCRIBED)
        return []

    def rejoin_due(self, token: int) -> list[Action]:
        """A rejoin timer armed by :class:`ScheduleRejoin` fired."""
        if (
            token == self._token
            and self.state is ChannelState.ERRORED
            and self.desired
            and self._socket_open
        ):
            return self._send_join()
        return []

    def server_error(self, join_ref: str | None) -> list[Action]:
        """``phx_error``: the server-side channel crashed. Stale join refs are ignored."""
        if join_ref is None or join_ref != self.join_ref:
            return []
        if self.state is ChannelState.JOINING:
            return self._failed("phx_error")
        if self.state is ChannelState.JOINED:
            self._set(ChannelState.ERRORED)
            return self._schedule()
        return []

    def server_close(self, join_ref: str | None) -> list[Action]:
        """``phx_close``: ends the channel if it is for the CURRENT join (no auto rejoin)."""
        if join_ref is None or join_ref != self.join_ref or self.state is ChannelState.CLOSED:
            return []
        if self.state is ChannelState.LEAVING:
            return self._close(UNSUBSCRIBED)
        return self._close(self.fatal_reason or CLOSED_BY_SERVER)

    def system_error(self, message: str) -> list[Action]:
        """A fatal Supabase ``system`` error: never rejoin; the next close carries ``message``."""
        if self.state is ChannelState.CLOSED:
            return []
        self.fatal_reason = message
        self.desired = False
        self._token += 1
        return []


def _reason(response: Any) -> str:
    if isinstance(response, dict):
        reason = response.get("reason")
        if isinstance(reason, str):
            return reason
    return repr(response)
