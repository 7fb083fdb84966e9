"""The I/O half of the channel state machine: carrying out a ChannelMachine's actions.

:class:`~resilient_conn.realtime._machine.ChannelMachine` decides; the client's
:class:`ChannelDriver` does what it decided, for one channel at a time:

* ``SendJoin`` / ``SendLeave``: build the frame (the join carries the CURRENT access token) and
  arm the join / leave timeout;
* ``ScheduleRejoin``: arm the rejoin timer (on the injected clock; join and leave timeouts are
  network timeouts and run in real time);
* ``Joined``: pair the server's postgres_changes ids, settle the subscriber, fire the gap hooks
  after a REjoin, re-track presence, flush the push buffer;
* ``JoinFailed`` / ``Closed``: settle the subscriber, count and log, retire the channel.

Each channel's timers live in its ``_timers`` (name -> cancel scope), so closing the channel
cancels them; the tasks run in the client's task group, so nothing outlives the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .._core.errors import ChannelJoinError
from ._machine import (
    Action,
    Closed,
    Joined,
    JoinFailed,
    ScheduleRejoin,
    SendJoin,
    SendLeave,
)
from ._outbox import Frame, Push
from .protocol import PHX_JOIN, PHX_LEAVE, Message

if TYPE_CHECKING:
    from ._host import ClientHost
    from .channel import Channel

__all__ = ["ChannelDriver"]


class ChannelDriver:
    """Carries out channel actions for one :class:`RealtimeClient` (its own machinery).

    Args:
        client: The client whose settings (token, push timeout), outbox, clock, task group,
            counters and channel registry the actions use.
    """

    def __init__(self, client: ClientHost) -> None:
        self._client = client
        self.retired: set[Channel] = set()
        """Closed channels whose async callbacks still run (ended when the client closes)."""

    async def run(self, ch: Channel, actions: list[Action]) -> None:
        """Carry out ``actions`` of ``ch`` and send the frames they produce."""
        frames = self.apply(ch, actions)
        if frames:
            await self._client._outbox.send(ch, frames)

    def apply(self, ch: Channel, actions: list[Action]) -> list[Frame]:
        """Carry out ``actions`` of ``ch``; return the frames to send (the caller sends them)."""
        client = self._client
        out: list[Frame] = []
        for action in actions:
            if isinstance(action, SendJoin):
                self._cancel_timer(ch, "rejoin")
                payload = ch.join_payload(client._token)
                join = Message(ch.topic, PHX_JOIN, payload, action.join_ref, action.join_ref)
                out.append((join, None))
                limit = client.push_timeout if ch.machine.joined_once else ch._join_timeout
                self._start_timer(ch, "join", limit, self._join_expired, ch, action.join_ref)
            elif isinstance(action, SendLeave):
                leave = Message(ch.topic, PHX_LEAVE, {}, action.ref, action.join_ref)
                out.append((leave, None))
                if action.ref == ch.machine.leave_ref:
                    self._start_timer(ch, "leave", client.push_timeout, self._leave_expired, ch)
            elif isinstance(action, ScheduleRejoin):
                self._start_timer(ch, "rejoin", action.delay, self._rejoin, ch, action.token)
            elif isinstance(action, Joined):
                self._cancel_timer(ch, "join")
                out.extend(self._joined(ch, action))
            elif isinstance(action, JoinFailed):
                self._cancel_timer(ch, "join")
                client.stats["join_errors"] += 1
                client._log.warning(
                    "resilient_conn.realtime.join_failed", topic=ch.topic, reason=action.reason
                )
                ch._settle_join(ChannelJoinError(ch.topic, action.reason))
            elif isinstance(action, Closed):
                client._log.info(
                    "resilient_conn.realtime.channel_closed", topic=ch.topic, reason=action.reason
                )
                if client._channels.get(ch.topic) is ch:
                    del client._channels[ch.topic]
                ch._closed(action.reason)
                # Keep closed channels whose async callbacks still run, to end them on close.
                self.retired = {c for c in self.retired if c._hooks_pending()}
                self.retired.add(ch)
        return out

    def _joined(self, ch: Channel, action: Joined) -> list[Frame]:
        client = self._client
        response = action.response if isinstance(action.response, dict) else {}
        ids = _pair_postgres_ids(ch.join_payload(None)["config"]["postgres_changes"], response)
        if ids is None:
            reason = "mismatch between server and client bindings for postgres changes"
            ch._settle_join(ChannelJoinError(ch.topic, reason))
            return self.apply(ch, ch.machine.leave())
        ch.postgres_ids = ids
        ch._settle_join(None)
        client._log.info("resilient_conn.realtime.joined", topic=ch.topic, rejoined=action.rejoined)
        if action.rejoined:
            client.stats["rejoins"] += 1
            ch._gap_hooks.emit(ch)
        outbox = client._outbox
        frames = []
        if (
            action.rejoined
            and ch._tracked is not None
            and not any(p.event == "presence" for p in ch._buffer)
        ):
            loop = asyncio.get_running_loop()
            retrack = Push("presence", ch._track_body(), True, None, loop.create_future())
            frames.append(outbox.prepare(ch, retrack))
        frames += [outbox.prepare(ch, p) for p in ch._buffer if not p.future.done()]
        ch._buffer.clear()
        return frames

    # --- timers ----------------------------------------------------------------------------

    def _start_timer(
        self, ch: Channel, name: str, delay: float, fn: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        self._cancel_timer(ch, name)
        tg = self._client._tg
        if tg is None:
            return
        scope = anyio.CancelScope()
        ch._timers[name] = scope
        tg.start_soon(self._timer, ch, name, scope, delay, fn, args)

    def _cancel_timer(self, ch: Channel, name: str) -> None:
        scope = ch._timers.pop(name, None)
        if scope is not None:
            scope.cancel()

    async def _timer(
        self,
        ch: Channel,
        name: str,
        scope: anyio.CancelScope,
        delay: float,
        fn: Callable[..., Awaitable[None]],
        args: tuple[Any, ...],
    ) -> None:
        with scope:
            if name == "rejoin":
                await self._client._clock.sleep(delay)
            else:
                await anyio.sleep(delay)
            if ch._timers.get(name) is scope:
                del ch._timers[name]
            await fn(*args)

    async def _join_expired(self, ch: Channel, join_ref: str) -> None:
        await self.run(ch, ch.machine.join_timed_out(join_ref))

    async def _leave_expired(self, ch: Channel) -> None:
        if ch.machine.leave_ref is not None:
            await self.run(ch, ch.machine.leave_timed_out(ch.machine.leave_ref))

    async def _rejoin(self, ch: Channel, token: int) -> None:
        await self._client._refresh_token()
        await self.run(ch, ch.machine.rejoin_due(token))


def _pair_postgres_ids(wanted: list[dict[str, Any]], response: dict[str, Any]) -> list[int] | None:
    """Pair the server's echoed postgres_changes with ours by index (None on a mismatch)."""
    if not wanted:
        return []
    echoed = response.get("postgres_changes")
    if not isinstance(echoed, list) or len(echoed) != len(wanted):
        return None
    ids: list[int] = []
    for mine, theirs in zip(wanted, echoed, strict=True):
        if not isinstance(theirs, dict) or not isinstance(theirs.get("id"), int):
            return None
        for key, default in (("event", "*"), ("schema", "public"), ("table", "*")):
            if theirs.get(key, default) != mine.get(key, default):
                return None
        if theirs.get("filter") != mine.get("filter"):
            return None
        ids.append(theirs["id"])
    return ids
