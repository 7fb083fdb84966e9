"""The outbox: a connection's bounded outbound buffer, its overflow policy and dead letters.

While the connection is down, ``send()`` hands messages here. :meth:`Outbox.admit` applies
the overflow policy at once (evict, refuse, dead-letter) or tells the caller to wait for room;
:meth:`Outbox.flush` writes what is buffered, in order, to a new transport. Whatever cannot be
delivered becomes a :class:`~resilient_conn.buffer.DeadLetter` with its reason: counted, kept
in a bounded deque, and handed to the dead-letter callbacks. Nothing leaves silently.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
from websockets.exceptions import ConnectionClosed

from .._core.clock import Clock
from .._core.errors import BufferFullError
from .._core.hooks import HookSet, Unsubscribe
from .._core.notify import Notifier
from ..adapters.base import Transport
from .buffer import DeadLetter, DeadLetterReason, OutboundBuffer, Overflow, message_size
from .metrics import ConnectionStats

__all__ = ["Outbox"]

Message = str | bytes


class Outbox:
    """Buffer, overflow policy and dead-letter sink of one connection (internal).

    Args:
        name: Connection name (in dead letters and errors).
        clock: The connection's clock (enqueue and dead-letter times).
        stats: The connection's counters (dead letters, messages and bytes out).
        capacity: Buffer capacity in messages.
        capacity_bytes: Buffer capacity in bytes.
        overflow: What :meth:`admit` does when the buffer is full.
        ttl: Buffered messages older than this are dead-lettered ``expired`` at flush time.
        write_timeout: Longest a flush waits for one write (a peer that stopped reading).
        keep: How many recent dead letters :attr:`dead_letters` keeps.
        hook_timeout: Longest an async dead-letter callback may run.
        changed: Notified whenever the buffer shrinks (wakes senders waiting for room): the
            connection's own notifier.
        log: The connection's bound logger.
    """

    # "__dict__": a test may still wrap a method on one instance (made only on first use)
    __slots__ = (
        "__dict__", "_changed", "_clock", "_dead", "_hook_timeout", "_hooks", "_keep", "_log",
        "_stats", "_ttl", "_write_timeout", "buffer", "name", "overflow",
    )

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        stats: ConnectionStats,
        capacity: int,
        capacity_bytes: int,
        overflow: Overflow,
        ttl: float | None,
        write_timeout: float,
        keep: int,
        hook_timeout: float,
        changed: Notifier,
        log: Any,
    ) -> None:
        self.name = name
        self.buffer = OutboundBuffer(capacity, capacity_bytes)
        self.overflow = overflow
        self._dead: deque[DeadLetter] | None = None  # made on first use (most never need it)
        self._keep = keep
        self._hooks: HookSet[DeadLetter] | None = None  # made on first use, as _dead
        self._hook_timeout = hook_timeout
        self._clock = clock
        self._stats = stats
        self._ttl = ttl
        self._write_timeout = write_timeout
        self._changed = changed
        self._log = log

    @property
    def dead_letters(self) -> deque[DeadLetter]:
        """The most recent dead letters, oldest first (at most ``keep``)."""
        dead = self._dead
        if dead is None:
            dead = self._dead = deque(maxlen=self._keep)
        return dead

    def subscribe(self, callback: Callable[[DeadLetter], Any]) -> Unsubscribe:
        """Call ``callback(dead_letter)`` for every message that cannot be delivered."""
        return self.hooks.add(callback)

    @property
    def hooks(self) -> HookSet[DeadLetter]:
        """The dead-letter callbacks."""
        hooks = self._hooks
        if hooks is None:
            hooks = self._hooks = HookSet("dead_letter", self._hook_timeout)
        return hooks

    def dead_letter(
        self,
        message: Message,
        reason: DeadLetterReason,
        enqueued_at: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Record ``message`` as undeliverable: counted, kept, logged, handed to callbacks."""
        letter = DeadLetter(message, reason, enqueued_at, self._clock.now(), self.name, error)
        self._stats.count_dead_letter(reason.value)
        self.dead_letters.append(letter)
        self._log.info(
            "resilient_conn.dead_letter", reason=reason.value, size=message_size(message)
        )
        if self._hooks is not None:
            self._hooks.emit(letter)

    def admit(self, message: Message) -> bool:
        """Buffer ``message`` or dispose of it by the overflow policy.

        Returns:
            True when the message is dealt with (buffered, or dead-lettered ``too_large`` /
            ``overflow``); False when the policy is ``block`` and there is no room yet (the
            caller waits for a change and calls :meth:`try_append`).

        Raises:
            BufferFullError: The policy is ``raise`` and the buffer is full.
        """
        buf = self.buffer
        size = message_size(message)
        if not buf.can_ever_fit(size):
            self.dead_letter(message, DeadLetterReason.TOO_LARGE)
            return True
        if not buf.fits(size):
            policy = self.overflow
            if policy is Overflow.BLOCK:
                return False
            if policy is Overflow.DROP_NEWEST:
                self.dead_letter(message, DeadLetterReason.OVERFLOW)
                return True
            if policy is Overflow.RAISE:
                raise BufferFullError(f"{self.name}: outbound buffer full ({len(buf)} messages)")
            for old, _, enqueued_at in buf.make_room(size):
                self.dead_letter(old, DeadLetterReason.OVERFLOW, enqueued_at)
        buf.append(message, size, self._clock.now())
        return True

    def try_append(self, message: Message) -> bool:
        """Buffer ``message`` if it fits now; return whether it did."""
        size = message_size(message)
        if not self.buffer.fits(size):
            return False
        self.buffer.append(message, size, self._clock.now())
        return True

    async def flush(self, ws: Transport, *, until: float | None = None) -> bool:
        """Write buffered messages to ``ws`` in order; False if the transport died meanwhile.

        Args:
            ws: The transport.
            until: ``anyio.current_time()`` deadline (closing's drain): no write starts after
                it, and none runs past it (the transport is aborted then). Without it each
                write still gets at most ``write_timeout``.
        """
        buf = self.buffer
        ttl = self._ttl
        stats = self._stats
        while buf:
            if ttl is not None:
                for message, _, enqueued_at in buf.expire(self._clock.now(), ttl):
                    self.dead_letter(message, DeadLetterReason.EXPIRED, enqueued_at)
                if not buf:
                    break
            message, size, _ = buf.peek()
            limit = self._write_timeout
            if until is not None:
                limit = min(limit, until - anyio.current_time())
                if limit <= 0:
                    return False
            # Shielded: once a message is written it must leave the buffer, or a cancelled
            # close would send it twice; the timeout bounds a peer that stopped reading.
            with anyio.CancelScope(shield=True):
                try:
                    with anyio.fail_after(limit):
                        await ws.send(message)
                except ConnectionClosed:
                    return False
                except TimeoutError:
                    ws.abort()
                    return False
                buf.popleft()
            stats.messages_out += 1
            stats.bytes_out += size
            self._changed.notify()
        return True

    def dead_letter_all(self, reason: DeadLetterReason, error: BaseException | None) -> None:
        """Dead-letter everything still buffered (closing, or the connection failed)."""
        for message, _, enqueued_at in self.buffer.drain():
            self.dead_letter(message, reason, enqueued_at, error)
        self._changed.notify()
