"""The supervisor: the loop that carries out a connection's decisions.

:class:`Supervising` is the part of :class:`~resilient_conn.ResilientConnection` that owns its
life: admit a dial through the breaker, dial, serve the transport (keepalive, stable timer,
``on_open`` and the buffer flush beside the watch on the socket), ask :mod:`.decide` what the
ending means, set the state, pause, and go round again; and, when the user closes, drain and
close. The one place a state changes is :meth:`Supervising._set_state` (the table in
:mod:`.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConcurrencyError, ConnectionClosed

from .._core.clock import Clock
from .._core.errors import BufferFullError, CircuitOpenError, ConnectionFailedError
from .._core.hooks import HookSet
from .._core.log import redact_text
from .._core.notify import Notifier
from ..adapters.websocket import DialOptions, HeadersSource, UrlSource, dial, keepalive
from ..coordination import RecoveryCoordinator
from ..resilience.backoff import Backoff
from ..resilience.breaker import BreakerLease, CircuitBreaker
from ..resilience.classify import Action, Classifier, Verdict
from ._gate import Gate, gate, pause, probe_round_trip
from .buffer import DeadLetterReason
from .decide import Decisions
from .events import TRANSITIONS, ConnectionState, IllegalTransition, StateChange
from .metrics import ConnectionStats
from .options import ConnectionOptions
from .outbox import Outbox

__all__ = ["Message", "Supervising", "describe"]

Message = str | bytes

_S = ConnectionState

# Set inside the supervisor's own tasks: aclose() from there would wait for itself.
SUPERVISOR: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "resilient_conn_supervisor", default=None
)

# Sends made from inside on_open (or a task it spawned while that transport is current) go
# straight to the new transport, ahead of what is buffered: (connection id, generation).
ON_OPEN: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "resilient_conn_on_open", default=None
)


def describe(error: BaseException) -> str:
    """``"TypeName: message"``, redacted: short enough for logs and health reports."""
    text = str(error)
    name = type(error).__name__
    return redact_text(f"{name}: {text}" if text else name)


class Supervising:
    """The supervisor half of ``ResilientConnection`` (its fields are set by ``__init__``)."""

    name: str
    backoff: Backoff
    breaker: CircuitBreaker
    coordinator: RecoveryCoordinator | None
    options: ConnectionOptions
    stats: ConnectionStats
    generation: int
    _url_source: UrlSource
    _headers_source: HeadersSource | None
    _dial_options: DialOptions
    _on_open: Callable[[Any], Awaitable[None]] | None
    _classify: Classifier
    _clock: Clock
    _log: Any
    _outbox: Outbox
    _state_hooks: HookSet[StateChange]
    _state: ConnectionState
    _decisions: Decisions
    _ws: ClientConnection | None
    _live: bool
    _last_error: BaseException | None
    _fatal: ConnectionFailedError | None
    _abort: tuple[str, BaseException | None] | None
    _rtt: float | None
    _connected_at: float | None
    _connected_wall: float | None
    _disconnected_at: float | None
    _lease: BreakerLease | None
    _permit: Gate | None
    _stable: bool
    _changed: Notifier
    _supervisor: asyncio.Task[None] | None
    _scope: anyio.CancelScope | None
    _closing: bool

    def report_alive(self, rtt: float | None = None) -> None:
        """Record a round trip on the current transport (defined by the health half)."""
        raise NotImplementedError

    async def send(self, message: Message, *, buffer: bool = True) -> None:
        """Send a message (defined by the public half)."""
        raise NotImplementedError

    def _raise_if_over(self) -> None:
        raise NotImplementedError

    def _set_state(
        self, new: ConnectionState, reason: str, error: BaseException | None = None
    ) -> None:
        old = self._state
        if new is old:
            return
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{self.name}: {old.name} -> {new.name} ({reason})")
        self._state = new
        attempt = self._decisions.attempt
        change = StateChange(old, new, reason, attempt, error, time.time(), self.name)
        self._log.info(
            "resilient_conn.state_changed",
            old=old.value,
            new=new.value,
            reason=reason,
            attempt=attempt,
            error=None if error is None else describe(error),
        )
        self._wake()
        self._state_hooks.emit(change)

    def _wake(self) -> None:
        self._changed.notify()

    async def _wait_for_room(self, message: Message) -> None:
        """overflow="block": wait for room in the buffer, or for the transport to go live."""
        try:
            async with asyncio.timeout(self.options.send_timeout):
                while True:
                    await self._changed.wait()
                    self._raise_if_over()
                    if self._live and self._ws is not None:
                        await self.send(message)
                        return
                    if self._outbox.try_append(message):
                        return
        except TimeoutError:
            raise BufferFullError(
                f"{self.name}: outbound buffer still full after {self.options.send_timeout}s"
            ) from None

    def fail_current(self, reason: str, error: BaseException | None = None) -> None:
        """Declare the current transport dead (e.g. a heartbeat went unanswered).

        The transport is aborted at once (no closing handshake: a dead peer never answers
        one), the failure counts against the breaker, and the supervisor reconnects with
        backoff. Does nothing when no transport is open.

        Args:
            reason: Failure kind for logs and metrics (``"heartbeat_timeout"``).
            error: The error behind it, if any.
        """
        ws = self._ws
        if ws is None or self._abort is not None:
            return
        self._abort = (reason, error)
        ws.transport.abort()

    async def _supervise(self) -> None:
        SUPERVISOR.set(id(self))  # inherited by on_open, keepalive and flush tasks
        try:
            assert self._scope is not None
            with self._scope:
                await self._dial_loop()
        except Exception as exc:  # a bug in the supervisor must not die silently
            self._log.exception("resilient_conn.supervisor_crashed")
            self._enter_failed(Verdict(Action.FATAL, "internal_error"), exc)

    async def _dial_loop(self) -> None:
        """Admit, dial, serve, decide, pause: until a fatal error or the user closes."""
        while True:
            async with gate(self) as permit:  # the shared coordinator's admission, if any
                self._permit = permit
                try:
                    lease = await self._admit()
                    verdict, error, stable = await self._dial_and_serve(lease)
                    if not stable:
                        lease.failure(error)
                        await permit.failed(error)
                finally:
                    self._permit = None
            self.stats.count_failure(verdict.kind)
            if error is not None:
                self._last_error = error
            breaker = self.breaker
            step = self._decisions.after(
                verdict, stable=stable, breaker_state=breaker.state, retry_after=breaker.retry_after
            )
            if step.state is _S.FAILED:
                self._enter_failed(verdict, error)
                return
            self._log.info(
                "resilient_conn.failure",
                kind=verdict.kind,
                action=verdict.action.value,
                attempt=self._decisions.attempt,
                error=None if error is None else describe(error),
            )
            if step.state is _S.CIRCUIT_OPEN:
                self.stats.circuit_opens += 1
            self._set_state(step.state, step.reason, self._last_error)
            if step.state is _S.BACKOFF or step.sleep:
                await self._clock.sleep(pause(self, step.sleep, verdict))

    async def _admit(self) -> BreakerLease:
        """Wait until the breaker admits a dial (no polling while it is open)."""
        while True:
            try:
                return self.breaker.acquire()
            except CircuitOpenError as exc:
                if self._state is not _S.CIRCUIT_OPEN:
                    self.stats.circuit_opens += 1
                self._set_state(_S.CIRCUIT_OPEN, "circuit open", exc)
                await self.breaker.wait_until_ready()

    async def _dial_and_serve(
        self, lease: BreakerLease
    ) -> tuple[Verdict, BaseException | None, bool]:
        """Dial once and serve the transport until it ends: how it ended, and if it was stable."""
        self._set_state(_S.CONNECTING, "dialing" if self.generation == 0 else "reconnecting")
        self.stats.dials += 1
        try:
            try:
                ws = await dial(self._url_source, self._headers_source, self._dial_options)
            except Exception as exc:
                return self._classify(exc), exc, False
            return await self._run_transport(ws, lease)
        except BaseException:
            lease.release()
            raise

    async def _run_transport(
        self, ws: ClientConnection, lease: BreakerLease
    ) -> tuple[Verdict, BaseException | None, bool]:
        """Serve one transport until it ends; return how it ended and if it was stable."""
        now = self._clock.now()
        if self._disconnected_at is not None and self.stats.connects:
            self.stats.disconnected_seconds += now - self._disconnected_at
            self.stats.reconnects += 1
        self.stats.connects += 1
        self._connected_at, self._connected_wall = now, time.time()
        self._disconnected_at = None
        self._stable = False
        self._abort = None
        self._lease = lease
        self.generation += 1
        self._ws = ws
        self._set_state(_S.CONNECTED, "handshake complete")
        try:
            async with anyio.create_task_group() as tg:
                if self.options.ping_interval > 0:
                    tg.start_soon(self._keepalive, ws)
                tg.start_soon(self._stable_timer, lease)
                tg.start_soon(probe_round_trip, ws, self._permit, self.options.ping_timeout)
                # on_open + flush run beside the watch on the transport: if the transport dies
                # while on_open is stuck, the supervisor still moves on.
                tg.start_soon(self._open_and_flush, ws)
                await ws.wait_closed()
                tg.cancel_scope.cancel()
        finally:
            stable, self._stable = self._stable, False
            self._live = False
            if not self._closing:  # aclose() takes the transport over to drain and close it
                self._ws = None
            self._lease = None
            self._disconnected_at = self._clock.now()
            self._connected_at = self._connected_wall = None
            self._wake()
        abort = self._take_abort()
        if abort is not None:
            kind, error = abort
            return Verdict(Action.RETRY, kind), error or ConnectionError(kind), stable
        exc = ws.protocol.close_exc
        return self._classify(exc), exc, stable

    def _take_abort(self) -> tuple[str, BaseException | None] | None:
        abort, self._abort = self._abort, None
        return abort

    async def _open_and_flush(self, ws: ClientConnection) -> None:
        """Run on_open, flush the buffer, then let sends go straight to the transport."""
        if self._on_open is not None:
            token = ON_OPEN.set((id(self), self.generation))
            try:
                await self._on_open(self)
            except Exception as exc:
                self._log.warning("resilient_conn.on_open_failed", error=describe(exc))
                self.fail_current("on_open_failed", exc)
                return
            finally:
                ON_OPEN.reset(token)
        if await self._outbox.flush(ws):
            self._live = True
            self._wake()

    async def _stable_timer(self, lease: BreakerLease) -> None:
        await self._clock.sleep(self.options.stable_after)
        self._stable = True
        self._decisions.proved_stable()
        lease.success()
        if self._permit is not None:
            await self._permit.succeeded()
        self._log.debug("resilient_conn.stable", after=self.options.stable_after)

    async def _keepalive(self, ws: ClientConnection) -> None:
        opts = self.options
        await keepalive(
            ws,
            opts.ping_interval,
            opts.ping_timeout,
            on_alive=self.report_alive,
            on_dead=self.fail_current,
        )

    def _enter_failed(self, verdict: Verdict, error: BaseException | None) -> None:
        detail = redact_text(str(error)) if error is not None else verdict.kind
        failure = ConnectionFailedError(
            f"{self.name}: {verdict.kind}: {detail}", status=verdict.status
        )
        failure.__cause__ = error
        self._fatal = failure
        self._last_error = error
        self._set_state(_S.FAILED, verdict.kind, error)
        self._outbox.dead_letter_all(DeadLetterReason.FAILED, failure)

    async def _close_transport(self, ws: ClientConnection) -> None:
        """Close with 1000 while discarding unread inbound frames.

        A consumer that stopped reading leaves frames queued; past ``max_queue`` websockets
        stops reading the socket, so the server's close frame would never be seen and the
        close would wait out ``close_timeout``. Reading (and dropping, counted) what is left
        lets the closing handshake finish at once.
        """
        unread = 0

        async def discard() -> None:
            nonlocal unread
            with contextlib.suppress(ConnectionClosed, ConcurrencyError):
                while True:  # ConcurrencyError: a consumer's recv() is reading anyway
                    await ws.recv()
                    unread += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(discard)
            await ws.close(1000, "client closing")
            tg.cancel_scope.cancel()
        if unread:
            self._log.info("resilient_conn.unread_at_close", messages=unread)

    async def _close(self) -> None:
        if self._state is _S.IDLE and self._supervisor is None:
            self._closing = True
            self._outbox.dead_letter_all(DeadLetterReason.CLOSED, None)
            self._set_state(_S.CLOSED, "closed before start")
            await self._state_hooks.aclose(grace=1.0)
            await self._outbox.hooks.aclose(grace=1.0)
            return
        already_failed = self._state is _S.FAILED
        self._closing = True
        if not already_failed and self._state is not _S.CLOSED:
            self._set_state(_S.CLOSING, "closed by user")
        self._wake()  # receivers and blocked senders see the close now
        task, self._supervisor = self._supervisor, None
        if task is not None and self._scope is not None:
            self._scope.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ws = self._ws
        self._ws = None
        if ws is not None:
            with anyio.move_on_after(self.options.drain_timeout):
                await self._outbox.flush(ws)
            with anyio.CancelScope(shield=True):
                await self._close_transport(ws)
        self._outbox.dead_letter_all(DeadLetterReason.CLOSED, None)
        if not already_failed:
            self._set_state(_S.CLOSED, "closed by user")
        self._wake()
        await self._state_hooks.aclose(grace=1.0)
        await self._outbox.hooks.aclose(grace=1.0)
        self._log.info("resilient_conn.closed", dead_letters=sum(self.stats.dead_letters.values()))
