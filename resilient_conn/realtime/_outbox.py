"""Pushes on their way out and waiting for replies: refs, the reply table, sending, re-sending.

A :class:`Push` is one channel push (a broadcast, a presence track...) and the future its caller
awaits. The client's :class:`Outbox` gives each push a fresh ref, registers the ones that expect
a reply in a :class:`~resilient_conn.realtime.protocol.ReplyTable`, encodes and sends frames,
and settles every push exactly once: with the reply, with the error that stopped it, or with
"never came" when its reply deadline (three push timeouts) passes.

When no transport is live (one is opening, or just died) frames are not lost: pushes go back to
the front of their channel's buffer and control frames (joins, leaves) are sent again once a
transport is up, if they still mean something then. When a transport ends, pushes still
waiting for a reply are put back in their channel's buffer too, to be sent again after the
rejoin (at-least-once, like a retry after a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc

from .._core.errors import (
    ConnectionClosedError,
    ConnectionFailedError,
    NotConnectedError,
    RealtimeError,
    RealtimeProtocolError,
)
from ._machine import ChannelMachine, ChannelState
from .protocol import PHX_JOIN, PHX_LEAVE, Message, RefCounter, ReplyTable, Serializer

if TYPE_CHECKING:
    from ..connection.connection import ResilientConnection

__all__ = ["Frame", "Outbox", "Push", "settle"]


@dataclass(slots=True, eq=False)
class Push:
    """One push waiting to go out and/or for its reply."""

    event: str
    payload: Any
    expects_reply: bool
    kind: int | None
    future: asyncio.Future[Any]
    ref: str | None = None
    topic: str = ""


class Channel(Protocol):
    """What the outbox needs of a channel (``channel.Channel`` satisfies it)."""

    topic: str
    machine: ChannelMachine
    _buffer: deque[Push]
    _flush_pending: bool

    @property
    def state(self) -> ChannelState:
        """The channel's state."""
        ...


Frame = tuple[Message, Push | None]
"""A message to send and the push it carries (``None`` for control frames: join, leave...)."""


def settle(push: Push, error: BaseException) -> None:
    """Fail ``push`` with ``error`` unless it is already settled."""
    if not push.future.done():
        push.future.set_exception(error)
        push.future.exception()  # mark retrieved: the awaiter may already be gone


class Outbox:
    """The send path of one client and its table of pushes awaiting replies.

    Args:
        conn: The connection frames are sent on (``buffer=False``: the channel buffers).
        serializer: Encodes messages for the wire.
        refs: The socket's ref counter.
        push_timeout: Returns the client's push timeout now (reply deadline = 3 times it).
        task_group: Returns the client's task group, or ``None`` when it is not running.
    """

    def __init__(
        self,
        conn: ResilientConnection,
        serializer: Serializer,
        refs: RefCounter,
        *,
        push_timeout: Callable[[], float],
        task_group: Callable[[], anyio.abc.TaskGroup | None],
    ) -> None:
        self._conn = conn
        self._ser = serializer
        self._refs = refs
        self._push_timeout = push_timeout
        self._task_group = task_group
        self.replies: ReplyTable[Push] = ReplyTable()
        """Pushes sent and waiting for their reply, by ref."""

    def prepare(self, ch: Channel, push: Push) -> Frame:
        """Give ``push`` a fresh ref (registering it for its reply) and build its message."""
        push.ref = self._refs.next()
        push.topic = ch.topic
        if push.expects_reply:
            deadline = anyio.current_time() + self._push_timeout() * 3
            self.replies.add(push.ref, push, deadline)
        msg = Message(ch.topic, push.event, push.payload, push.ref, ch.machine.join_ref, push.kind)
        return msg, push

    async def send(self, ch: Channel, frames: list[Frame]) -> None:
        """Send ``frames`` of ``ch`` in order; settle, re-buffer or re-send what cannot go."""
        for index, (msg, push) in enumerate(frames):
            if push is not None and push.future.done():
                continue
            try:
                frame = self._ser.encode(msg)
            except RealtimeProtocolError as exc:
                if push is not None:
                    self.replies.pop(push.ref)
                    settle(push, exc)
                continue
            try:
                await self._conn.send(frame, buffer=False)
            except NotConnectedError:
                # A transport is opening (its on_open is running) or just died: pushes wait in
                # the channel buffer; control frames are sent again once it is live, if still
                # meaningful (a new transport's on_open rejoins with a new ref anyway).
                self._requeue(ch, frames[index:])
                control = [m for m, p in frames[index:] if p is None]
                tg = self._task_group()
                if control and tg is not None:
                    tg.start_soon(self._resend_when_live, ch, control)
                return
            except (ConnectionClosedError, ConnectionFailedError) as exc:
                for _, later in frames[index:]:
                    if later is not None:
                        settle(later, exc)
                return
            if push is not None and not push.expects_reply and not push.future.done():
                push.future.set_result(None)

    def resolve(self, msg: Message, status: str, response: Any) -> bool:
        """Settle the push ``msg`` (a ``phx_reply``) answers; False if it answers none."""
        push = self.replies.pop(msg.ref)
        if push is None:
            return False
        if not push.future.done():
            if status == "ok":
                push.future.set_result(response)
            else:
                reason = response.get("reason") if isinstance(response, dict) else response
                settle(push, RealtimeError(f"{push.event} on {msg.topic} refused: {reason}"))
        return True

    def sweep(self, now: float) -> None:
        """Fail the pushes whose reply deadline passed by ``now``."""
        for push in self.replies.expire(now):
            settle(push, RealtimeError(f"reply to {push.event!r} never came"))

    def requeue_unanswered(self, channels: Mapping[str, Channel]) -> None:
        """The transport ended: put pushes still awaiting a reply back in their buffers.

        Their reply can no longer come, so they are sent again after the rejoin (while their
        timeout lasts). A push whose channel is gone fails.
        """
        unanswered: dict[str, list[Push]] = {}
        for push in self.replies.drain():
            if not push.future.done():
                push.ref = None
                unanswered.setdefault(push.topic, []).append(push)
        for topic, pushes in unanswered.items():
            owner = channels.get(topic)
            if owner is None:
                for push in pushes:
                    settle(push, RealtimeError(f"{push.event} on {topic}: channel gone"))
            else:
                owner._buffer.extendleft(reversed(pushes))

    def _requeue(self, ch: Channel, frames: list[Frame]) -> None:
        pushes = [p for _, p in frames if p is not None and not p.future.done()]
        for push in pushes:
            self.replies.pop(push.ref)
            push.ref = None
        if not pushes:
            return
        ch._buffer.extendleft(reversed(pushes))
        tg = self._task_group()
        if not ch._flush_pending and tg is not None:
            ch._flush_pending = True
            tg.start_soon(self._flush_when_live, ch)

    async def _resend_when_live(self, ch: Channel, messages: list[Message]) -> None:
        with contextlib.suppress(ConnectionClosedError, ConnectionFailedError):
            await self._conn.wait_connected()
        current = ch.machine.join_ref
        for msg in messages:
            still = (
                (msg.event == PHX_JOIN and ch.state is ChannelState.JOINING)
                or (msg.event == PHX_LEAVE and ch.state is ChannelState.LEAVING)
                or ch.state is ChannelState.JOINED
            )
            if still and msg.join_ref == current:
                await self.send(ch, [(msg, None)])

    async def _flush_when_live(self, ch: Channel) -> None:
        try:
            with contextlib.suppress(ConnectionClosedError, ConnectionFailedError):
                await self._conn.wait_connected()
        finally:
            ch._flush_pending = False
        if ch.machine.can_push and ch._buffer:
            frames = [self.prepare(ch, p) for p in ch._buffer if not p.future.done()]
            ch._buffer.clear()
            await self.send(ch, frames)
