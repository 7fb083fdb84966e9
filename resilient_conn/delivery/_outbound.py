"""The sending half of an endpoint, and what it reports (internal).

:class:`Outbound` numbers the application's messages into the window (waiting, dropping or
raising when it is full, by the overflow policy), hands them to a durable :class:`Store` if
there is one, writes them in order through the *pump*, forgets them when the peer acks, and
reports what it gives up (dead letters) and what cannot be guaranteed (gap notices).
:class:`~resilient_conn.delivery._endpoint.Endpoint` adds the receiving half and the
transport lifecycle on top.

All writes of data frames go through one lock, so frames leave in sequence order: the
re-send after a reconnect and the pump never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import structlog

from .._core.errors import BufferFullError
from ..connection.buffer import DeadLetterReason, Overflow
from ._hooks import Hooks
from ._signal import Signal, expire
from ._transport import Attachment
from .records import DeliveryDeadLetter, DeliveryStats
from .state import GapNotice, Pending, StreamState, payload_size

__all__ = ["BATCH", "BATCH_BYTES", "Outbound", "Store"]

BATCH = 64
"""Most messages the pump hands to the transport in one write: the peer starts on them while
the next batch is framed (one write of a whole window would leave it idle meanwhile)."""
BATCH_BYTES = 64 * 1024
"""Most payload bytes in one write (a larger message goes alone)."""

_log = structlog.get_logger("resilient_conn.delivery")


class Store(Protocol):
    """What an endpoint needs from a durable outbox."""

    def append(self, entry: Pending) -> Awaitable[None]:
        """Persist ``entry``; the awaitable completes once it is committed."""

    def acked(self, upto: int) -> None:
        """Forget every entry up to ``upto`` (committed lazily)."""

    def dead(self, letters: list[DeliveryDeadLetter]) -> None:
        """Move entries to the dead letters (committed lazily)."""


class Outbound:
    """The sending half of one side of a session, and its reports (internal).

    Holds the state both halves share: the stream state, counters, the current transport,
    the end error, and the signals every loop waits on.
    """

    def __init__(
        self,
        state: StreamState,
        *,
        overflow: Overflow,
        send_timeout: float,
        message_ttl: float | None,
        dead_letter_capacity: int,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.stats = DeliveryStats()
        self.dead_letters: deque[DeliveryDeadLetter] = deque(maxlen=dead_letter_capacity)
        self.gaps: deque[GapNotice] = deque(maxlen=100)
        self.hooks = Hooks()
        self._overflow = overflow
        self._send_timeout = send_timeout
        self._ttl = message_ttl
        self._store = store
        self._now = clock
        self._current: Attachment | None = None
        self._sent_upto = 0  # highest seq written to the current transport
        self._high_written = 0  # highest seq ever written (re-sends are below it)
        self._write_lock = anyio.Lock()
        self._ended: BaseException | None = None
        self._blocked: deque[tuple[asyncio.Future[None], int]] = deque()  # senders, in order
        self.data_ready = Signal()  # recv() waiters
        self.room = Signal()  # window / inbound queue room, acks (wait_acked)
        self.pump_work = Signal()
        self.ack_work = Signal()
        self.hello_seen = Signal()

    # ------------------------------------------------------------------ hooks, reports
    def add_gap_hook(self, callback: Callable[[GapNotice], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` for every gap notice; returns an unsubscribe handle."""
        return self.hooks.add_gap(callback)

    def add_dead_letter_hook(
        self, callback: Callable[[DeliveryDeadLetter], Any]
    ) -> Callable[[], None]:
        """Call ``callback(letter)`` for every dead letter; returns an unsubscribe handle."""
        return self.hooks.add_dead(callback)

    def gap(self, notice: GapNotice) -> None:
        """Report a gap notice: counted, kept, logged, handed to the hooks."""
        self.stats.gaps += 1
        self.gaps.append(notice)
        _log.warning(
            "resilient_conn.delivery.gap",
            session=notice.session,
            kind=notice.kind.value,
            direction=notice.direction,
            detail=notice.detail,
        )
        self.hooks.emit(self.hooks.gap, notice)

    def dead_letter(
        self, entries: list[Pending], reason: DeadLetterReason, error: str | None = None
    ) -> None:
        """Give up on ``entries``: counted, kept, stored, logged, handed to the hooks."""
        if not entries:
            return
        now = self._now()
        session = self.state.session
        letters = [
            DeliveryDeadLetter(e.seq, e.payload, reason, e.enqueued_at, now, session, error)
            for e in entries
        ]
        self._record_dead(letters)

    def _record_dead(self, letters: list[DeliveryDeadLetter]) -> None:
        if self._store is not None:
            self._store.dead(letters)
        for letter in letters:
            self.stats.dead_letters[letter.reason.value] += 1
            self.dead_letters.append(letter)
            self.hooks.emit(self.hooks.dead, letter)
        _log.info(
            "resilient_conn.delivery.dead_letter",
            session=self.state.session,
            reason=letters[0].reason.value,
            count=len(letters),
        )
        self.room.notify()
        self._release_room()

    # ------------------------------------------------------------------ sending
    @property
    def ended(self) -> BaseException | None:
        """The error that ended the endpoint, or None while it runs."""
        return self._ended

    def end(self, error: BaseException) -> None:
        """Stop: later ``send()``/``recv()`` raise ``error`` (after queued messages)."""
        if self._ended is None:
            self._ended = error
        for signal in (self.data_ready, self.room, self.pump_work, self.ack_work, self.hello_seen):
            signal.notify()
        blocked, self._blocked = self._blocked, deque()
        for future, _ in blocked:
            if not future.done():
                future.set_result(None)

    def _raise_if_ended(self) -> None:
        if self._ended is not None:
            raise self._ended

    async def send(self, message: str | bytes) -> int:
        """Number ``message``, keep it until acked, and have it written in order.

        Returns:
            Its sequence number (0 when it was dead-lettered at once).
        """
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")
        if self._ended is not None:
            raise self._ended
        window = self.state.window
        size = payload_size(message)
        if self._blocked or not window.fits(size):  # (what fits now can ever fit)
            if not window.can_ever_fit(size):
                self._refuse(message, DeadLetterReason.TOO_LARGE)
                return 0
            policy = self._overflow
            if policy is Overflow.BLOCK:
                await self._wait_for_room(size)
                self._raise_if_ended()
            elif policy is Overflow.DROP_NEWEST:
                self._refuse(message, DeadLetterReason.OVERFLOW)
                return 0
            elif policy is Overflow.RAISE:
                raise BufferFullError(
                    f"session {self.state.session}: window full ({len(window)} unacknowledged)"
                )
            else:
                evicted = []
                while not window.fits(size):
                    evicted.append(window.pop_oldest())
                self.dead_letter(evicted, DeadLetterReason.OVERFLOW)
        store = self._store
        entry = window.push(message, self._now(), ready=store is None, size=size)
        self.stats.sent += 1
        if store is None:
            self.pump_work.notify()
        else:
            await store.append(entry)
        return entry.seq

    async def _wait_for_room(self, size: int) -> None:
        """``overflow="block"``: wait, first come first served, until ``size`` fits.

        Blocked senders queue in order; room freed by acks wakes only as many of them as
        now fit (no herd of wake-ups, no sender starved by later ones).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._send_timeout
        window = self.state.window
        first = True
        while self._ended is None and ((first and self._blocked) or not window.fits(size)):
            first = False
            future: asyncio.Future[None] = loop.create_future()
            entry = (future, size)
            self._blocked.append(entry)
            timer = loop.call_at(deadline, expire, future)
            try:
                await future
            except TimeoutError:
                raise BufferFullError(
                    f"session {self.state.session}: window still full "
                    f"({len(window)} unacknowledged) after {self._send_timeout:g} s"
                ) from None
            finally:
                timer.cancel()
                if not future.done() or future.cancelled() or future.exception() is not None:
                    future.cancel()
                    with contextlib.suppress(ValueError):
                        self._blocked.remove(entry)
                    self._release_room()  # what it would have taken goes to the next one

    def _release_room(self) -> None:
        """Wake the blocked senders, in order, that fit in the window now."""
        blocked = self._blocked
        if not blocked:
            return
        window = self.state.window
        free = window.capacity - len(window)
        free_bytes = window.capacity_bytes - window.nbytes
        while blocked and free > 0:
            future, size = blocked[0]
            if future.done():
                blocked.popleft()
                continue
            if size > free_bytes:
                break
            blocked.popleft()
            future.set_result(None)
            free -= 1
            free_bytes -= size

    def _refuse(self, message: str | bytes, reason: DeadLetterReason) -> None:
        letter = DeliveryDeadLetter(0, message, reason, None, self._now(), self.state.session)
        self._record_dead([letter])

    def store_failed(self, error: BaseException) -> None:
        """The durable store could not commit: the stream cannot keep its promise; end it."""
        _log.error(
            "resilient_conn.delivery.outbox_failed", session=self.state.session, error=str(error)
        )
        self.end(error)

    def committed(self, entries: list[Pending]) -> None:
        """A durable store committed ``entries``: they may be written now."""
        for entry in entries:
            entry.ready = True
        self.pump_work.notify()

    def _next_ready(self) -> Pending | None:
        window = self.state.window
        entry = window.get(max(self._sent_upto + 1, window.first))
        return entry if entry is not None and entry.ready else None

    async def write_ready(self, att: Attachment) -> None:
        """Write every ready message after ``sent_upto`` to ``att`` (caller holds the lock).

        In batches (up to :data:`BATCH` messages or :data:`BATCH_BYTES` of payload), each
        handed to the transport in one call that writes it to the socket at once (one
        system call instead of one per message).
        """
        stats = self.stats
        window = self.state.window
        send_many, down = att.link.fast_send_many()
        while self._current is att and not att.down:
            first = max(self._sent_upto + 1, window.first)
            frames = window.ready_frames(first, BATCH, BATCH_BYTES)
            if not frames:
                return
            try:
                await send_many(frames)
            except down:
                att.down = True
                return
            if self._current is not att:
                return
            last = first + len(frames) - 1
            self._sent_upto = last
            stats.written += len(frames)
            high = self._high_written
            if first <= high:
                stats.resent += min(last, high) - first + 1
            if last > high:
                self._high_written = last

    async def pump(self) -> None:
        """Loop: write ready messages whenever the current transport is ready."""

        def has_work() -> bool:
            att = self._current
            return (
                self._ended is None
                and att is not None
                and att.ready
                and not att.down
                and self._next_ready() is not None
            )

        while True:
            await self.pump_work.wait_until(has_work)
            att = self._current
            assert att is not None
            async with self._write_lock:
                await self.write_ready(att)

    def _forget(self, acked: list[Pending]) -> None:
        self.stats.acked += len(acked)
        if self._store is not None:
            self._store.acked(acked[-1].seq)
        self.room.notify()
        self._release_room()

    def expire(self) -> None:
        """Dead-letter the oldest messages that waited longer than ``message_ttl``."""
        if self._ttl is not None:
            expired = self.state.window.expire(self._now(), self._ttl)
            self.dead_letter(expired, DeadLetterReason.EXPIRED)
