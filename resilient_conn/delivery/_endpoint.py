"""The I/O engine shared by both ends of an acknowledged stream (internal).

An :class:`Endpoint` drives one :class:`~resilient_conn.delivery.state.StreamState` over a
sequence of transports. It owns three small loops, run in its owner's task group:

* the *pump* writes numbered messages in order, once the current transport is ready (after
  the hello exchange and the re-send of what the peer had not acknowledged);
* the *acker* sends cumulative acks, batched by count (``ack_every``) or delay
  (``ack_delay``), for what the application has taken;
* the owner's *reader* feeds every received frame to :meth:`Endpoint.dispatch`.

All writes of data frames go through one lock, so frames leave in sequence order: the
re-send after a reconnect and the pump never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup

from .._core.errors import BufferFullError, ConnectionClosedError
from ..connection.buffer import DeadLetterReason, Overflow
from ._signal import Signal, expire
from .envelope import (
    Ack,
    Data,
    EnvelopeError,
    Hello,
    decode,
    encode_ack,
    encode_hello,
    split_data,
)
from .records import DeliveryDeadLetter, DeliveryStats
from .state import DataVerdict, GapNotice, Pending, StreamState, payload_size

__all__ = ["Endpoint", "Link", "LinkDown", "Signal", "Store"]  # Signal: re-exported

_log = structlog.get_logger("resilient_conn.delivery")


class LinkDown(Exception):
    """The transport cannot take a frame now (closed, or not ready)."""


class Link(Protocol):
    """One way of writing frames to the peer."""

    async def send(self, frame: str | bytes) -> None:
        """Write one frame; raise :class:`LinkDown` when the transport cannot take it."""

    def fail(self, reason: str) -> None:
        """Drop the transport because the peer broke the protocol."""

    def fast_send(
        self,
    ) -> tuple[Callable[[str | bytes], Awaitable[None]], tuple[type[Exception], ...]]:
        """A writer for the hot path (no wrapper per frame) and the errors meaning LinkDown."""


class Store(Protocol):
    """What an endpoint needs from a durable outbox."""

    def append(self, entry: Pending) -> Awaitable[None]:
        """Persist ``entry``; the awaitable completes once it is committed."""

    def acked(self, upto: int) -> None:
        """Forget every entry up to ``upto`` (committed lazily)."""

    def dead(self, letters: list[DeliveryDeadLetter]) -> None:
        """Move entries to the dead letters (committed lazily)."""


@dataclass(eq=False, slots=True)
class Attachment:
    """One transport of an endpoint.

    Attributes:
        link: How to write to it.
        ready: True once the hello exchange and the re-send are done (the pump may write).
        down: True once a write failed (the transport is gone).
        peer_hello: The peer's hello on this transport, once received.
    """

    link: Link
    ready: bool = False
    down: bool = False
    peer_hello: Hello | None = None


class Endpoint:
    """Both directions of one side of a session, over successive transports (internal)."""

    def __init__(
        self,
        state: StreamState,
        *,
        overflow: Overflow,
        send_timeout: float,
        message_ttl: float | None,
        max_queue: int,
        ack_every: int,
        ack_delay: float,
        dead_letter_capacity: int,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.stats = DeliveryStats()
        self.dead_letters: deque[DeliveryDeadLetter] = deque(maxlen=dead_letter_capacity)
        self.gaps: deque[GapNotice] = deque(maxlen=100)
        self._overflow = overflow
        self._send_timeout = send_timeout
        self._ttl = message_ttl
        self._max_queue = max_queue
        self._ack_every = ack_every
        self._ack_delay = ack_delay
        self._store = store
        self._now = clock
        self._queue: deque[tuple[str | bytes, int, str]] = deque()
        # returned by recv(), not yet done with: (seq, epoch, payload)
        self._taken: tuple[int, str, str | bytes] | None = None
        self._last: tuple[int, str] | None = None
        self._current: Attachment | None = None
        self._sent_upto = 0  # highest seq written to the current transport
        self._high_written = 0  # highest seq ever written (re-sends are below it)
        self._acked_sent = 0  # ack position the peer has been told on this transport
        self._ack_wake_at = 1 << 64  # delivered position at which the acker wants waking
        self._write_lock = anyio.Lock()
        self._ended: BaseException | None = None
        self._blocked: deque[tuple[asyncio.Future[None], int]] = deque()  # senders, in order
        self._tg: TaskGroup | None = None
        self._gap_hooks: list[Callable[[GapNotice], Any]] = []
        self._dead_hooks: list[Callable[[DeliveryDeadLetter], Any]] = []
        self.data_ready = Signal()  # recv() waiters
        self.room = Signal()  # window / inbound queue room, acks (wait_acked)
        self.pump_work = Signal()
        self.ack_work = Signal()
        self.hello_seen = Signal()

    # ------------------------------------------------------------------ hooks
    def add_gap_hook(self, callback: Callable[[GapNotice], Any]) -> Callable[[], None]:
        """Call ``callback(notice)`` for every gap notice; returns an unsubscribe handle."""
        return _add(self._gap_hooks, callback)

    def add_dead_letter_hook(
        self, callback: Callable[[DeliveryDeadLetter], Any]
    ) -> Callable[[], None]:
        """Call ``callback(letter)`` for every dead letter; returns an unsubscribe handle."""
        return _add(self._dead_hooks, callback)

    def _emit(self, hooks: list[Callable[[Any], Any]], event: object) -> None:
        for callback in list(hooks):
            try:
                result = callback(event)
            except Exception as exc:
                _log.warning("resilient_conn.delivery.hook_failed", error=repr(exc))
                continue
            if inspect.isawaitable(result):
                if self._tg is not None:
                    self._tg.start_soon(_run_hook, result)
                elif inspect.iscoroutine(result):
                    result.close()
                    _log.warning("resilient_conn.delivery.hook_dropped", why="stream not open")

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
        self._emit(self._gap_hooks, notice)

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
            self._emit(self._dead_hooks, letter)
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
        self._raise_if_ended()
        window = self.state.window
        size = payload_size(message)
        if not window.can_ever_fit(size):
            self._refuse(message, DeadLetterReason.TOO_LARGE)
            return 0
        if self._blocked or not window.fits(size):
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
        """Write every ready message after ``sent_upto`` to ``att`` (caller holds the lock)."""
        stats = self.stats
        send, down = att.link.fast_send()
        while self._current is att and not att.down:
            entry = self._next_ready()
            if entry is None:
                return
            try:
                await send(entry.frame)
            except down:
                att.down = True
                return
            if self._current is not att:
                return
            seq = entry.seq
            self._sent_upto = seq
            stats.written += 1
            if seq <= self._high_written:
                stats.resent += 1
            else:
                self._high_written = seq

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

    # ------------------------------------------------------------------ acks
    async def ack_loop(self) -> None:
        """Loop: send a cumulative ack for what the application took (batched)."""
        inbound = self.state.inbound

        def owed() -> bool:
            att = self._current
            return (
                att is not None
                and att.ready
                and not att.down
                and inbound.delivered > self._acked_sent
            )

        while True:
            self._ack_wake_at = self._acked_sent + 1
            await self.ack_work.wait_until(owed)
            if inbound.delivered - self._acked_sent < self._ack_every:
                self._ack_wake_at = self._acked_sent + self._ack_every
                with anyio.move_on_after(self._ack_delay):
                    await self.ack_work.wait_until(
                        lambda: inbound.delivered - self._acked_sent >= self._ack_every
                    )
            self._ack_wake_at = 1 << 64
            att = self._current
            upto = inbound.delivered
            # A reconnect may have happened during the delay: never write to a transport
            # before its hello exchange is done (its hello carries the position anyway).
            if att is None or not att.ready or att.down or upto <= self._acked_sent:
                continue
            try:
                await att.link.send(encode_ack(upto))
            except LinkDown:
                att.down = True
                continue
            if self._current is att:
                self._acked_sent = max(self._acked_sent, upto)
            self.stats.acks_sent += 1

    async def flush_ack(self) -> None:
        """Send the ack still owed, if any (best effort: closing)."""
        att = self._current
        upto = self.state.inbound.delivered
        if att is None or not att.ready or att.down or upto <= self._acked_sent:
            return
        try:
            await att.link.send(encode_ack(upto))
        except LinkDown:
            return
        self._acked_sent = upto
        self.stats.acks_sent += 1

    # ------------------------------------------------------------------ receiving
    async def recv(self, stop: Callable[[], BaseException | None] | None = None) -> str | bytes:
        """The next message of the peer's stream (each once, in order).

        Args:
            stop: Checked while waiting: a non-None result is raised (a detached view).
        """
        if self._taken is not None:
            self.done_with_taken()
        queue = self._queue
        while not queue:
            self._raise_if_ended()
            if stop is not None and (error := stop()) is not None:
                raise error
            await self.data_ready.wait_until(
                lambda: (
                    bool(queue)
                    or self._ended is not None
                    or (stop is not None and stop() is not None)
                )
            )
        payload, seq, epoch = queue.popleft()
        self._taken = (seq, epoch, payload)
        self._last = (seq, epoch)
        if self.room.waiters:
            self.room.notify()
        self.stats.delivered += 1
        return payload

    def done_with_taken(self) -> None:
        """The application is done with the message ``recv()`` returned last: ack it.

        Called by the next ``recv()`` (asking for more means done with the last one) and by
        a clean close; never on an error, so a message being handled when a process dies
        is re-sent, not lost.
        """
        taken = self._taken
        if taken is None:
            return
        self._taken = None
        inbound = self.state.inbound
        seq = taken[0]
        if seq > inbound.delivered and taken[1] == inbound.peer_epoch:
            inbound.delivered = seq
            if seq >= self._ack_wake_at:
                self.ack_work.notify()

    def give_back_taken(self) -> None:
        """Put the message ``recv()`` returned last back at the front of the queue.

        The application failed while handling it: it stays unacknowledged, and whoever
        reads next (a server session's next connection) gets it again.
        """
        taken = self._taken
        if taken is None:
            return
        self._taken = None
        self.stats.delivered -= 1
        self._queue.appendleft((taken[2], taken[0], taken[1]))

    @property
    def position(self) -> tuple[str, int] | None:
        """``(peer epoch, seq)`` of the message ``recv()`` returned last (None before any)."""
        last = self._last
        return None if last is None else (last[1], last[0])

    def dispatch_fast(self, raw: str | bytes, att: Attachment) -> bool:
        """The hot path (no coroutine): queue the next in-order text data frame.

        Returns:
            False if ``raw`` is anything else: hand it to :meth:`dispatch`.
        """
        data = split_data(raw)
        if data is None:
            return False
        inbound = self.state.inbound
        seq = data[0]
        if (
            seq == inbound.received + 1
            and att.peer_hello is not None
            and len(self._queue) < self._max_queue
            and (epoch := inbound.peer_epoch) is not None
        ):
            inbound.received = seq
            self._queue.append((data[1], seq, epoch))
            self.data_ready.notify()
            return True
        return False

    async def dispatch(self, raw: str | bytes, att: Attachment) -> None:
        """Handle one frame received on ``att``."""
        if self.dispatch_fast(raw, att):
            return
        try:
            frame = decode(raw)
        except EnvelopeError as exc:
            self.stats.invalid_frames += 1
            count = self.stats.invalid_frames
            level = "warning" if count & (count - 1) == 0 else "debug"  # 1, 2, 4, 8...: no flood
            getattr(_log, level)(
                "resilient_conn.delivery.invalid_frame",
                session=self.state.session,
                error=str(exc),
                count=count,
            )
            return
        if isinstance(frame, Data):
            await self._on_data(frame, att)
        elif isinstance(frame, Ack):
            self._on_ack(frame.seq, att)
        elif att.peer_hello is None:
            self.apply_hello(frame, att)
        else:
            self.violation(att, "a second hello on one transport")

    def apply_hello(self, hello: Hello, att: Attachment) -> bool:
        """Apply the peer's hello on ``att`` at once (later frames depend on it).

        Returns:
            False if the hello broke the protocol (the transport is being dropped).
        """
        try:
            acked, notices = self.state.on_hello(hello)
        except EnvelopeError as exc:
            self.violation(att, str(exc))
            return False
        att.peer_hello = hello
        self.stats.hellos += 1
        if acked:
            self._forget(acked)
        for notice in notices:
            self.gap(notice)
        self.hello_seen.notify()
        return True

    async def _on_data(self, frame: Data, att: Attachment) -> None:
        if att.peer_hello is None:
            self.violation(att, "data before the hello")
            return
        verdict = self.state.inbound.on_data(frame.seq)
        if verdict is DataVerdict.DELIVER:
            queue = self._queue
            if len(queue) >= self._max_queue:
                await self.room.wait_until(
                    lambda: len(queue) < self._max_queue or self._ended is not None
                )
            epoch = self.state.inbound.peer_epoch
            assert epoch is not None
            queue.append((frame.payload, frame.seq, epoch))
            self.data_ready.notify()
        elif verdict is DataVerdict.DUPLICATE:
            self.stats.duplicates += 1
        else:
            expected = self.state.inbound.received + 1
            self.violation(att, f"data #{frame.seq} while #{expected} was expected")

    def _on_ack(self, upto: int, att: Attachment) -> None:
        if att.peer_hello is None:
            self.violation(att, "ack before the hello")
            return
        acked = self.state.on_ack(upto)
        if acked is None:
            self.violation(att, f"ack of #{upto}, never sent")
            return
        if acked:
            self._forget(acked)

    def _forget(self, acked: list[Pending]) -> None:
        self.stats.acked += len(acked)
        if self._store is not None:
            self._store.acked(acked[-1].seq)
        self.room.notify()
        self._release_room()

    def violation(self, att: Attachment, what: str) -> None:
        """The peer broke the protocol on ``att``: count it and drop that transport."""
        self.stats.protocol_errors += 1
        att.down = True
        _log.warning(
            "resilient_conn.delivery.protocol_error", session=self.state.session, error=what
        )
        att.link.fail(f"acknowledged stream: {what}")

    # ------------------------------------------------------------------ transports
    def expire(self) -> None:
        """Dead-letter the oldest messages that waited longer than ``message_ttl``."""
        if self._ttl is not None:
            expired = self.state.window.expire(self._now(), self._ttl)
            self.dead_letter(expired, DeadLetterReason.EXPIRED)

    def begin(self, att: Attachment) -> None:
        """Make ``att`` the current transport (not ready yet: no data is written to it)."""
        old = self._current
        if old is not None:
            old.down = True
        self._current = att
        self.pump_work.notify()

    def hello_frame(self) -> tuple[str, Hello]:
        """The hello to send now, and its content."""
        hello = self.state.hello()
        return encode_hello(hello), hello

    async def resume(self, att: Attachment, ours: Hello) -> None:
        """Re-send on ``att``, in order, what the peer's hello says it has not delivered.

        The caller holds the write lock, and calls :meth:`mark_ready` once the transport may
        take writes from the pump and the acker (on a client: only when ``on_open`` is over,
        since the connection refuses other writes until then).
        """
        assert att.peer_hello is not None
        inbound = self.state.inbound
        same = ours.peer_epoch is not None and ours.peer_epoch == inbound.peer_epoch
        self._acked_sent = ours.delivered if same else inbound.delivered
        self._sent_upto = self.state.window.first - 1
        await self.write_ready(att)

    def mark_ready(self, att: Attachment) -> None:
        """Let the pump and the acker write to ``att`` (if it is still current and up)."""
        if self._current is att and not att.down and self._ended is None:
            att.ready = True
            self.pump_work.notify()
            self.ack_work.notify()

    @property
    def current(self) -> Attachment | None:
        """The current transport, if any."""
        return self._current

    @property
    def write_lock(self) -> anyio.Lock:
        """Held while data frames are written (the pump, or a re-send)."""
        return self._write_lock

    def detach(self, att: Attachment) -> None:
        """``att`` is gone: stop writing to it."""
        att.down = True
        if self._current is att:
            self._current = None
        self.pump_work.notify()

    async def wait_acked(self, timeout: float | None) -> None:
        """Wait until every message sent so far is acknowledged (or the endpoint ends)."""
        window = self.state.window
        await self.room.wait_until(lambda: not window or self._ended is not None, timeout)
        if window:
            self._raise_if_ended()

    def start(self, tg: TaskGroup) -> None:
        """Start the pump and the acker in ``tg`` (hooks run there too)."""
        self._tg = tg
        tg.start_soon(self.pump)
        tg.start_soon(self.ack_loop)

    def stop(self) -> None:
        """Forget the task group (its tasks are being cancelled)."""
        self._tg = None


def _add(hooks: list[Any], callback: Any) -> Callable[[], None]:
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    hooks.append(callback)

    def unsubscribe() -> None:
        if callback in hooks:
            hooks.remove(callback)

    return unsubscribe


async def _run_hook(awaitable: Awaitable[Any]) -> None:
    try:
        with anyio.move_on_after(5.0):
            await awaitable
    except Exception as exc:
        _log.warning("resilient_conn.delivery.hook_failed", error=repr(exc))


def closed_error(session: str) -> ConnectionClosedError:
    """The error ``send()``/``recv()`` raise once a stream is closed."""
    return ConnectionClosedError(f"acknowledged stream {session!r} is closed")
