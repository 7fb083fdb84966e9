"""Channels: the pure state machine of PHOENIX-PROTOCOL.md section 6 and the Channel object.

:class:`ChannelMachine` takes events (the user joins or leaves, a reply arrives, the socket
opens or closes, a timer fires) and returns a list of actions for its owner to carry out
(send a join, arm a rejoin timer, tell the subscriber the join failed, ...). It reads no clock,
owns no task and touches no socket, so every path is tested without an event loop.

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

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._hooks import HookSet, Unsubscribe
from ..config import check_positive
from ..errors import (
    BufferFullError,
    ChannelClosedError,
    ChannelJoinError,
    PushTimeoutError,
    RealtimeError,
)
from .protocol import BROADCAST, KIND_USER_BROADCAST_PUSH, Message, RefCounter

if TYPE_CHECKING:
    from .client import RealtimeClient

__all__ = [
    "Action",
    "Channel",
    "ChannelMachine",
    "ChannelState",
    "Closed",
    "IllegalChannelTransition",
    "JoinFailed",
    "Joined",
    "ScheduleRejoin",
    "SendJoin",
    "SendLeave",
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


# --- the Channel object ------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Push:
    """One push waiting to go out and/or for its reply."""

    event: str
    payload: Any
    expects_reply: bool
    kind: int | None
    future: asyncio.Future[Any]
    ref: str | None = None
    topic: str = ""


class Channel:
    """One Phoenix channel (a Supabase Realtime topic) of a :class:`RealtimeClient`.

    Get one from :meth:`RealtimeClient.channel`; do not construct it yourself. Events reach
    the application two ways, which can be combined:

    * ``channel.on(event, handler, filter=None)``: ``handler(message)`` (sync or async) for
      every :class:`~resilient_conn.realtime.protocol.Message` of ``event``;
    * ``async for message in channel``: a bounded queue (``queue_size``, default 1000). When it
      is full the OLDEST message is dropped and counted in :attr:`dropped`. Iteration ends
      after :meth:`unsubscribe`, and raises :class:`ChannelClosedError` when the server
      closed the channel (e.g. a system error).

    Pushes (:meth:`send_broadcast`, :meth:`track`, :meth:`untrack`) made while the channel is
    not joined wait in a bounded buffer (``push_buffer_size``) with their timeout already
    running; they go out, in order, as soon as the (re)join succeeds. A push that times out
    raises :class:`PushTimeoutError`; when the buffer is full the oldest push fails with
    :class:`BufferFullError`. Nothing is dropped silently.
    """

    def __init__(
        self,
        client: RealtimeClient,
        topic: str,
        *,
        broadcast: Mapping[str, Any] | None,
        presence: Mapping[str, Any] | None,
        postgres_changes: Sequence[Mapping[str, Any]] | None,
        private: bool,
        queue_size: int,
        push_buffer_size: int,
        rejoin_delay: Callable[[int], float],
        socket_open: bool,
    ) -> None:
        self._client = client
        self.topic = topic
        """The full topic, ``realtime:<name>``."""
        self.machine = ChannelMachine(topic, client._refs, rejoin_delay, socket_open=socket_open)
        """The pure state machine (read-only for applications)."""
        self._broadcast = {"ack": False, "self": False, **(broadcast or {})}
        self._presence = {"enabled": presence is not None, "key": "", **(presence or {})}
        self._pg = [dict(entry) for entry in postgres_changes or ()]
        self._private = private
        self.postgres_ids: list[int] = []
        """The server's id for each ``postgres_changes`` entry, by index, after a join."""
        self.presence: dict[str, list[dict[str, Any]]] = {}
        """Who is present: key -> metas, kept in sync from presence_state / presence_diff."""
        self.dropped = 0
        """Messages dropped from the iteration queue because it was full (oldest first)."""
        self._queue: deque[Message] = deque()
        self._queue_size = queue_size
        self._queue_event = asyncio.Event()
        self._buffer: deque[_Push] = deque()
        self._buffer_size = push_buffer_size
        self._handlers: HookSet[Message] = HookSet(f"channel[{topic}]")
        self._gap_hooks: HookSet[Channel] = HookSet(f"channel_gap[{topic}]")
        self._close_hooks: HookSet[str] = HookSet(f"channel_close[{topic}]")
        self._join_waiter: asyncio.Future[None] | None = None
        self._join_timeout = client.push_timeout
        self._timers: dict[str, anyio.CancelScope] = {}
        self._flush_pending = False
        self._tracked: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Channel {self.topic!r} {self.state.value}>"

    # --- public surface --------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """The channel's :class:`ChannelState`."""
        return self.machine.state

    @property
    def closed_reason(self) -> str | None:
        """Why the channel closed (``"unsubscribed"``, the server's message...), else None."""
        return self.machine.closed_reason

    @property
    def buffered(self) -> int:
        """Pushes waiting for the channel to be joined."""
        return len(self._buffer)

    def join_payload(self, token: str | None) -> dict[str, Any]:
        """The ``phx_join`` payload (Supabase config plus the access token)."""
        payload: dict[str, Any] = {
            "config": {
                "broadcast": self._broadcast,
                "presence": self._presence,
                "postgres_changes": self._pg,
                "private": self._private,
            }
        }
        if token is not None:
            payload["access_token"] = token
        return payload

    async def subscribe(self, timeout: float | None = None) -> None:
        """Join the channel and wait for the server's answer.

        If the client is not connected yet, the join goes out as soon as it is. Once joined,
        the client rejoins by itself after every reconnect (see :meth:`on_gap`).

        Args:
            timeout: Seconds to wait for the join reply (default: the client's push_timeout).

        Raises:
            ChannelJoinError: The server refused the join (``reason`` is the server's, e.g.
                ``"Unauthorized: ..."``), or no reply came in time (``reason="timeout"``).
                The channel is closed afterwards.
        """
        if self.state is ChannelState.JOINED:
            return
        limit = self._client.push_timeout if timeout is None else check_positive(timeout, "timeout")
        loop = asyncio.get_running_loop()
        waiter = self._join_waiter
        if waiter is None or waiter.done():
            waiter = self._join_waiter = loop.create_future()
        if self.state is ChannelState.CLOSED:
            self._client._register(self)
            failed = self._client._failure_reason()
            if failed is not None:
                raise ChannelJoinError(self.topic, failed)
            self._join_timeout = limit
            await self._client._refresh_token()
            await self._client._run(self, self.machine.join())
        try:
            with anyio.fail_after(limit + 0.05):
                await asyncio.shield(waiter)
        except ChannelClosedError as exc:
            raise ChannelJoinError(self.topic, exc.reason) from exc
        except TimeoutError:
            if self.state is ChannelState.JOINING and not self.machine.joined_once:
                if self.machine.join_ref is not None:
                    actions = self.machine.join_timed_out(self.machine.join_ref)
                else:
                    actions = self.machine.leave()
                await self._client._run(self, actions)
            raise ChannelJoinError(self.topic, "timeout") from None

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Leave the channel (``phx_leave``) and wait for the server to confirm.

        Buffered pushes fail with :class:`ChannelClosedError`; iteration ends. Idempotent.
        """
        limit = self._client.push_timeout if timeout is None else check_positive(timeout, "timeout")
        await self._client._run(self, self.machine.leave())
        with anyio.move_on_after(limit):
            while self.state is not ChannelState.CLOSED:
                await self._wait_queue()

    def on(
        self, event: str, handler: Callable[[Message], Any], filter: str | None = None
    ) -> Unsubscribe:
        """Call ``handler(message)`` for every inbound ``event``; return an unsubscribe handle.

        Args:
            event: ``"broadcast"``, ``"postgres_changes"``, ``"presence_state"``,
                ``"presence_diff"``, ``"system"``, or ``"*"`` for all.
            handler: Sync or async callable; exceptions are logged and isolated.
            filter: For ``broadcast`` the user event name (``"cursor"``); for
                ``postgres_changes`` the change type (``"INSERT"``, ``"UPDATE"``,
                ``"DELETE"``); ``None`` or ``"*"`` for all.
        """

        def matching(message: Message) -> Any:
            if event not in ("*", message.event):
                return None
            if filter not in (None, "*") and _sub_event(message) != filter:
                return None
            return handler(message)

        matching.__qualname__ = getattr(handler, "__qualname__", repr(handler))
        return self._handlers.add(matching)

    def on_gap(self, callback: Callable[[Channel], Any]) -> Unsubscribe:
        """Call ``callback(channel)`` after every successful REjoin.

        Phoenix has no replay: events sent while the channel was not joined are lost, so
        refetch whatever state you derive from them here.
        """
        return self._gap_hooks.add(callback)

    def on_close(self, callback: Callable[[str], Any]) -> Unsubscribe:
        """Call ``callback(reason)`` when the channel closes (unsubscribed, server system error)."""
        return self._close_hooks.add(callback)

    async def send_broadcast(
        self, event: str, payload: Any, *, timeout: float | None = None
    ) -> None:
        """Broadcast ``payload`` under user event ``event`` to the channel's subscribers.

        Returns once the message went out (or, with ``broadcast={"ack": True}``, once the
        server acknowledged it). A ``bytes`` payload is sent as a binary user broadcast
        (protocol 2.0.0 only).

        Raises:
            PushTimeoutError: Not sent / not acknowledged within ``timeout``
                (default push_timeout).
            ChannelClosedError: The channel is closed.
        """
        body = {"type": "broadcast", "event": event, "payload": payload}
        kind = KIND_USER_BROADCAST_PUSH if isinstance(payload, bytes) else None
        await self._push(BROADCAST, body, bool(self._broadcast.get("ack")), timeout, kind)

    async def track(self, state: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Publish this client's presence ``state`` on the channel (waits for the reply).

        The server forgets presence when the socket drops, so the last tracked state is
        tracked again by itself after every rejoin (until :meth:`untrack`).
        """
        self._tracked = dict(state)
        await self._push("presence", self._track_body(), True, timeout)

    async def untrack(self, *, timeout: float | None = None) -> None:
        """Withdraw this client's presence (waits for the reply)."""
        self._tracked = None
        await self._push("presence", {"type": "presence", "event": "untrack"}, True, timeout)

    def _track_body(self) -> dict[str, Any]:
        return {"type": "presence", "event": "track", "payload": self._tracked}

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if not self._queue_size:
            raise RealtimeError(f"{self.topic}: iteration is off (queue_size=0); use on()")
        while not self._queue:
            if self.state is ChannelState.CLOSED:
                reason = self.closed_reason or UNSUBSCRIBED
                if reason == UNSUBSCRIBED:
                    raise StopAsyncIteration
                raise ChannelClosedError(self.topic, reason)
            await self._wait_queue()
        return self._queue.popleft()

    # --- used by the client ----------------------------------------------------------------

    async def _wait_queue(self) -> None:
        self._queue_event.clear()
        await self._queue_event.wait()

    def _wake(self) -> None:
        self._queue_event.set()

    async def _push(
        self,
        event: str,
        payload: Any,
        expects_reply: bool,
        timeout: float | None,
        kind: int | None = None,
    ) -> Any:
        if self.state is ChannelState.CLOSED or self.state is ChannelState.LEAVING:
            raise ChannelClosedError(self.topic, self.closed_reason or "not subscribed")
        limit = self._client.push_timeout if timeout is None else check_positive(timeout, "timeout")
        push = _Push(
            event, payload, expects_reply, kind, asyncio.get_running_loop().create_future()
        )
        try:
            with anyio.fail_after(limit):
                if self.machine.can_push:
                    await self._client._send_push(self, push)
                else:
                    self._buffer_push(push)
                return await asyncio.shield(push.future)
        except TimeoutError:
            self._forget(push)
            raise PushTimeoutError(self.topic, event, limit) from None
        except BaseException:
            self._forget(push)
            raise

    def _buffer_push(self, push: _Push) -> None:
        self._buffer.append(push)
        while len(self._buffer) > self._buffer_size:
            oldest = self._buffer.popleft()
            self._client.stats["pushes_dropped"] += 1
            _settle(oldest, BufferFullError(f"push buffer of {self.topic!r} is full"))

    def _forget(self, push: _Push) -> None:
        with contextlib.suppress(ValueError):
            self._buffer.remove(push)
        self._client._replies.pop(push.ref)
        if not push.future.done():
            push.future.cancel()

    def _deliver(self, message: Message) -> None:
        if message.event == "presence_state" and isinstance(message.payload, dict):
            self.presence = {k: list(v.get("metas", [])) for k, v in message.payload.items()}
        elif message.event == "presence_diff" and isinstance(message.payload, dict):
            _apply_diff(self.presence, message.payload)
        if self._queue_size:
            self._queue.append(message)
            if len(self._queue) > self._queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._wake()
        self._handlers.emit(message)

    def _settle_join(self, error: BaseException | None) -> None:
        waiter, self._join_waiter = self._join_waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _closed(self, reason: str) -> None:
        for push in self._buffer:
            _settle(push, ChannelClosedError(self.topic, reason))
        self._buffer.clear()
        for scope in self._timers.values():
            scope.cancel()
        self._timers.clear()
        self._settle_join(ChannelClosedError(self.topic, reason))
        self._wake()
        self._close_hooks.emit(reason)

    def _hooks_pending(self) -> bool:
        return any(h.pending for h in (self._handlers, self._gap_hooks, self._close_hooks))

    async def _aclose_hooks(self) -> None:
        for hooks in (self._handlers, self._gap_hooks, self._close_hooks):
            await hooks.aclose()


def _settle(push: _Push, error: BaseException) -> None:
    if not push.future.done():
        push.future.set_exception(error)
        push.future.exception()  # mark retrieved: the awaiter may already be gone


def _sub_event(message: Message) -> str | None:
    payload = message.payload
    if not isinstance(payload, dict):
        return None
    if message.event == "postgres_changes":
        data = payload.get("data")
        return data.get("type") if isinstance(data, dict) else None
    event = payload.get("event")
    return event if isinstance(event, str) else None


def _apply_diff(state: dict[str, list[dict[str, Any]]], diff: dict[str, Any]) -> None:
    for key, value in (diff.get("leaves") or {}).items():
        gone = {m.get("phx_ref") for m in value.get("metas", [])}
        kept = [m for m in state.get(key, []) if m.get("phx_ref") not in gone]
        if kept:
            state[key] = kept
        else:
            state.pop(key, None)
    for key, value in (diff.get("joins") or {}).items():
        state.setdefault(key, []).extend(value.get("metas", []))
