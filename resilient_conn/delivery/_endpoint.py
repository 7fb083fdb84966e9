"""The I/O engine shared by both ends of an acknowledged stream (internal).

An :class:`Endpoint` drives one :class:`~resilient_conn.delivery.state.StreamState` over a
sequence of transports. It owns three small loops, run in its owner's task group:

* the *pump* writes numbered messages in order, once the current transport is ready (after
  the hello exchange and the re-send of what the peer had not acknowledged);
* the *acker* sends cumulative acks, batched by count (``ack_every``) or delay
  (``ack_delay``), for what the application has taken;
* the owner's *reader* feeds every received frame to :meth:`Endpoint.dispatch`.

The sending half (the window, the pump, dead letters, gap notices) is
:class:`~resilient_conn.delivery._outbound.Outbound`; this module adds the receiving half
(the inbound queue, frame dispatch, the acker) and the transport lifecycle (hello, resume).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskGroup

from .._core.errors import ConnectionClosedError
from ..connection.buffer import Overflow
from ._outbound import Outbound, Store
from ._signal import Signal
from ._transport import Attachment, Link, LinkDown
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
from .state import DataVerdict, StreamState

# Signal, Attachment, Link, LinkDown, Store: re-exported (their modules are below this one).
__all__ = ["Attachment", "Endpoint", "Link", "LinkDown", "Signal", "Store", "closed_error"]

_log = structlog.get_logger("resilient_conn.delivery")


class Endpoint(Outbound):
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
        super().__init__(
            state,
            overflow=overflow,
            send_timeout=send_timeout,
            message_ttl=message_ttl,
            dead_letter_capacity=dead_letter_capacity,
            store=store,
            clock=clock,
        )
        self._max_queue = max_queue
        self._ack_every = ack_every
        self._ack_delay = ack_delay
        self._queue: deque[tuple[int, str, str | bytes]] = deque()  # (seq, epoch, payload)
        self._taken: tuple[int, str, str | bytes] | None = None  # recv() returned, not done
        self._last: tuple[int, str] | None = None
        self._acked_sent = 0  # ack position the peer has been told on this transport
        self._ack_wake_at = 1 << 64  # delivered position at which the acker wants waking
        self._ack_due = False  # ack_every reached: recv() lets the acker run before going on

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
            if self._ack_due:  # the ack goes out now, not after the whole backlog: the
                self._ack_due = False  # peer refills its window while we work
                await asyncio.sleep(0)
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
        taken = self._taken = queue.popleft()
        self._last = (taken[0], taken[1])
        self.room.notify()  # (free when nobody waits)
        self.stats.delivered += 1
        return taken[2]

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
                if seq - self._acked_sent >= self._ack_every:
                    att = self._current
                    self._ack_due = att is not None and att.ready and not att.down

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
        self._queue.appendleft(taken)

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
            self._queue.append((seq, epoch, data[1]))
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
            queue.append((frame.seq, epoch, frame.payload))
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

    def violation(self, att: Attachment, what: str) -> None:
        """The peer broke the protocol on ``att``: count it and drop that transport."""
        self.stats.protocol_errors += 1
        att.down = True
        _log.warning(
            "resilient_conn.delivery.protocol_error", session=self.state.session, error=what
        )
        att.link.fail(f"acknowledged stream: {what}")

    # ------------------------------------------------------------------ transports
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
        self.hooks.task_group = tg
        tg.start_soon(self.pump)
        tg.start_soon(self.ack_loop)

    def stop(self) -> None:
        """Forget the task group (its tasks are being cancelled)."""
        self.hooks.task_group = None


def closed_error(session: str) -> ConnectionClosedError:
    """The error ``send()``/``recv()`` raise once a stream is closed."""
    return ConnectionClosedError(f"acknowledged stream {session!r} is closed")
