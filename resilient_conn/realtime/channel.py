"""The Channel object: one Phoenix channel (a Supabase Realtime topic) of a RealtimeClient.

A :class:`Channel` is what applications hold: ``subscribe()`` / ``unsubscribe()``, handlers
(``on``), iteration over a bounded queue, pushes (broadcast, presence) with a bounded buffer
while not joined, gap and close hooks. Its life is decided by a pure
:class:`~resilient_conn.realtime._machine.ChannelMachine` (re-exported here with its states and
actions); the client carries out the machine's actions and sends the frames.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._core.errors import (
    BufferFullError,
    ChannelClosedError,
    ChannelJoinError,
    PushTimeoutError,
    RealtimeError,
)
from .._core.hooks import HookSet, Unsubscribe
from ..resilience.config import check_positive
from ._handlers import HandlerSet
from ._machine import (
    UNSUBSCRIBED,
    Action,
    ChannelMachine,
    ChannelState,
    Closed,
    IllegalChannelTransition,
    Joined,
    JoinFailed,
    ScheduleRejoin,
    SendJoin,
    SendLeave,
)
from ._outbox import Push, settle
from ._presence import apply_diff as _apply_diff
from ._presence import presence_entries as _presence_entries
from .protocol import BROADCAST, KIND_USER_BROADCAST_PUSH, Message

if TYPE_CHECKING:
    from ._host import ClientHost

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


class Channel:
    """One Phoenix channel (a Supabase Realtime topic) of a :class:`RealtimeClient`.

    Get one from :meth:`RealtimeClient.channel`; do not construct it yourself. Events reach
    the application two ways, which can be combined:

    * ``channel.on(event, handler, filter=None)``: ``handler(message)`` (sync or async) for
      every :class:`~resilient_conn.realtime.protocol.Message` of ``event``. A sync handler
      runs inline; an async handler gets its own bounded queue (``handler_queue_size``) and
      ONE worker task that awaits its calls in order, never a task per message. A full queue
      drops by ``handler_overflow`` (counted in :attr:`handler_dropped`), so a flood costs
      bounded memory and a slow handler slows only itself;
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
        client: ClientHost,
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
        handler_queue_size: int = 100,
        handler_overflow: str = "drop_oldest",
        handler_timeout: float | None = None,
        handler_concurrency: int = 1,
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
        self._buffer: deque[Push] = deque()
        self._buffer_size = push_buffer_size
        self._handlers = HandlerSet(
            topic,
            queue_size=handler_queue_size,
            overflow=handler_overflow,
            timeout=handler_timeout,
            task_group=lambda: client._tg,
            concurrency=handler_concurrency,
            log=client._log,
            stats=client.stats,
        )
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
    def handler_dropped(self) -> int:
        """Async handler calls dropped because the handler's queue was full."""
        return self._handlers.dropped

    @property
    def handler_errors(self) -> int:
        """Handler calls that raised (or, with ``handler_timeout``, ran over)."""
        return self._handlers.errors

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
            handler: Sync or async callable; exceptions are logged (rate-limited), counted in
                :attr:`handler_errors` and isolated. Async calls queue per handler (see the
                class docstring).
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
        push = Push(event, payload, expects_reply, kind, asyncio.get_running_loop().create_future())
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

    def _buffer_push(self, push: Push) -> None:
        self._buffer.append(push)
        while len(self._buffer) > self._buffer_size:
            oldest = self._buffer.popleft()
            self._client.stats["pushes_dropped"] += 1
            settle(oldest, BufferFullError(f"push buffer of {self.topic!r} is full"))

    def _forget(self, push: Push) -> None:
        with contextlib.suppress(ValueError):
            self._buffer.remove(push)
        self._client._outbox.replies.pop(push.ref)
        if not push.future.done():
            push.future.cancel()

    def _deliver(self, message: Message) -> None:
        # A malformed presence payload raises before anything changed (the reader counts it).
        if message.event == "presence_state":
            self.presence = _presence_entries(message.payload, "presence_state")
        elif message.event == "presence_diff":
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
                waiter.exception()  # mark retrieved: subscribe() may have been cancelled

    def _closed(self, reason: str) -> None:
        for push in self._buffer:
            settle(push, ChannelClosedError(self.topic, reason))
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
        await self._handlers.aclose()
        for hooks in (self._gap_hooks, self._close_hooks):
            await hooks.aclose()


def _sub_event(message: Message) -> str | None:
    payload = message.payload
    if not isinstance(payload, dict):
        return None
    if message.event == "postgres_changes":
        data = payload.get("data")
        return data.get("type") if isinstance(data, dict) else None
    event = payload.get("event")
    return event if isinstance(event, str) else None
