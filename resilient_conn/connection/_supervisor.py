"""The supervisor: the loop that carries out a connection's decisions.

:class:`Supervising` is the part of :class:`~resilient_conn.ResilientConnection` that owns its
life: admit a dial through the breaker (and a shared coordinator's gate, if any), dial, serve
the transport, ask :mod:`.decide` what the ending means, set the state, pause, and go round
again; the closer (:mod:`._closing`) drains and closes. The one place a state changes is
:meth:`Supervising._set_state` (the table in :mod:`.events`).

It speaks the Transport protocol only and holds no task per idle connection: keepalive and
the flap guard's stable timer are loop timers, ``on_open`` plus the buffer flush (or a probe's
round trip) are tasks only while they run, and the supervisor parks (:mod:`._parking`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._core.clock import Clock
from .._core.errors import (
    CircuitOpenError,
    ConnectionClosedError,
    ConnectionFailedError,
)
from .._core.hooks import HookSet
from .._core.log import redact_text
from .._core.notify import Notifier
from ..adapters._dial import dial
from ..adapters.base import Transport
from ..adapters.keepalive import Keepalive
from ..adapters.websocket import DialOptions, HeadersSource, UrlSource
from ..coordination import RecoveryCoordinator
from ..resilience.backoff import Backoff
from ..resilience.breaker import BreakerLease, CircuitBreaker
from ..resilience.classify import Action, Classifier, Verdict
from ._gate import NO_SCOPE, Gate, gate, needs_probe, pause, probe_round_trip
from ._marks import ON_OPEN, SUPERVISOR, describe
from ._parking import Parking
from .buffer import DeadLetterReason
from .decide import Decisions, Step
from .events import TRANSITIONS, ConnectionState, IllegalTransition, StateChange
from .metrics import ConnectionStats
from .options import ConnectionOptions
from .outbox import Outbox

__all__ = ["ON_OPEN", "SUPERVISOR", "Message", "Supervising", "describe"]

Message = str | bytes
_S = ConnectionState
_NO_PAUSE = -1.0  # _decide(): dial again without a pause (not even a zero sleep)
Task = asyncio.Task[None]


class Supervising(Parking):
    """The supervisor half of ``ResilientConnection`` (its fields are set by ``__init__``)."""

    # ResilientConnection's fields as slots (~40: past what a key-sharing dict keeps compact);
    # "__dict__" stays for attributes of a subclass or a test's own, made only on first use.
    __slots__ = (
        "__dict__", "__weakref__", "_abort", "_box", "_changed", "_classify", "_clock",
        "_closed_event", "_closer", "_closing", "_connected_at", "_connected_wall", "_decisions",
        "_dial_options", "_disconnected_at", "_fatal", "_headers_source", "_holding",
        "_last_error", "_live", "_log", "_on_message", "_on_open", "_opened", "_opener",
        "_opener_scope", "_permit", "_probe", "_rtt", "_scope", "_state", "_state_hooks",
        "_url_source", "_ws", "backoff", "breaker", "coordinator", "generation", "name", "options",
        "stats", "transport", "url",
    )

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
    _on_open: Callable[[Any], Awaitable[None] | None] | None
    _on_message: Callable[[Message], object] | None
    _classify: Classifier
    _clock: Clock
    _log: Any
    _box: Outbox | None  # made on first use: _outbox
    _state_hooks: HookSet[StateChange] | None
    _state: ConnectionState
    _decisions: Decisions
    _ws: Transport | None
    _opened: bool
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
    _changed: Notifier
    _supervisor: asyncio.Task[None] | None
    _scope: anyio.CancelScope | None
    _holding: bool
    # on_open + flush after a dial, and its scope: set by _serve(), None again once it is done
    # (a finished task, its context and scope are not held for the life of the transport)
    _opener: asyncio.Task[None] | None
    _opener_scope: anyio.CancelScope | None
    _closing: bool

    def report_alive(self, rtt: float | None = None) -> None:
        """Record a round trip on the current transport (defined by the health half)."""
        raise NotImplementedError

    async def send(self, message: Message, *, buffer: bool = True) -> None:
        """Send a message (defined by the public half)."""
        raise NotImplementedError

    _deliver: Callable[[Message], None]  # on_message's way in (defined by the receiving half)

    def _raise_if_over(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing or self._state is _S.CLOSED:
            raise ConnectionClosedError(f"{self.name} is closed")

    async def _wait_for_transport(self, old: Transport | None) -> None:
        while True:
            self._raise_if_over()
            ws = self._ws
            if ws is not None and ws is not old:
                return
            await self._changed.wait()

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
        if self._state_hooks is not None:
            self._state_hooks.emit(change)

    def _wake(self) -> None:
        self._changed.notify()

    @property
    def _outbox(self) -> Outbox:
        """The outbound buffer and dead letters, made by the first use that needs them."""
        box = self._box
        if box is None:
            box = self._box = self._new_outbox()
        return box

    def _new_outbox(self) -> Outbox:
        raise NotImplementedError  # defined by ResilientConnection (it has the settings)

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
        if ws is None or self._abort is not None or not self._decisions.peer_dead():
            return
        self._abort = (reason, error)
        ws.abort()

    async def _supervise(self, resumed: bool = False) -> None:
        """Admit, dial, serve, decide, pause: until a fatal error or the user closes.

        Every move comes from :class:`.decide.Decisions` (once the user closed, ``stop``).
        One flat loop. An idle connection parks (no task: :mod:`._parking`) or, with something
        running beside the watch, suspends this one frame on the transport's serve().
        ``resumed``: a new task after a parked transport ended (its context has the mark).
        """
        if not resumed:
            SUPERVISOR.set(self._changed)  # inherited by on_open, keepalive and flush tasks
        error: BaseException | None
        try:
            with self._scope or NO_SCOPE:  # no scope: aclose() uses Task.cancel() (_closing)
                sleep = await self._resume() if resumed else _NO_PAUSE
                while sleep is not None:
                    if sleep >= 0:  # not _NO_PAUSE
                        await self._clock.sleep(sleep)
                    async with gate(self) as permit:  # the shared coordinator's admission
                        self._permit = permit
                        try:
                            lease = await self._admit()
                            if lease is None:
                                return
                            try:
                                try:
                                    ws = await dial(
                                        self._url_source, self._headers_source, self._dial_options
                                    )
                                except Exception as exc:
                                    verdict, error, stable = self._classify(exc), exc, False
                                else:
                                    if self._permit is not None:
                                        self._permit.dialed()  # frees its in-flight slot
                                    step = self._decisions.dialed()
                                    if step.stop:  # the closer closes it, without draining
                                        self._ws, self._opened = ws, False
                                        lease.release()
                                        return
                                    alive, helpers = self._serve(ws, lease, step)
                                    del step  # not held while the transport serves
                                    if self._park(ws, alive, helpers):
                                        return  # a new task carries on when it ends
                                    served = ws.serve()
                                    try:
                                        await served  # this frame on one future
                                    finally:
                                        stable = await self._served(alive, helpers)
                                    verdict, error = self._ended(ws)
                            except BaseException:
                                lease.release()
                                raise
                            if not stable:
                                lease.failure(error)
                                await permit.failed(error)
                        finally:
                            self._permit = None
                    sleep = self._decide(verdict, error, stable)
        except Exception as exc:  # a bug in the supervisor must not die silently
            self._log.exception("resilient_conn.supervisor_crashed")
            step = self._decisions.crashed()
            if step.state is _S.FAILED:
                self._enter_failed(step, Verdict(Action.FATAL, "internal_error"), exc)

    def _apply(self, step: Step, error: BaseException | None = None) -> None:
        """Carry out the state change of a decision (the decision checked it is legal)."""
        if step.state is not None:
            self._set_state(step.state, step.reason, error)

    def _waiting(self, reason: str, *, ramp: bool) -> None:
        """A shared coordinator holds the next dial: show it as the decisions say."""
        for step in self._decisions.waiting(reason, ramp=ramp):
            if step.state is _S.CIRCUIT_OPEN and self._state is not _S.CIRCUIT_OPEN:
                self.stats.circuit_opens += 1
            self._apply(step)

    def _decide(
        self, verdict: Verdict, error: BaseException | None, stable: bool
    ) -> float | None:
        """Count how a dial or transport ended, move the state; the pause, or None to stop."""
        self.stats.count_failure(verdict.kind)
        if error is not None:
            self._last_error = error
        breaker = self.breaker
        step = self._decisions.after(
            verdict, stable=stable, breaker_state=breaker.state, retry_after=breaker.retry_after
        )
        if step.state is _S.FAILED:
            self._enter_failed(step, verdict, error)
            return None
        if step.stop:
            return None
        self._log.info(
            "resilient_conn.failure",
            kind=verdict.kind,
            action=verdict.action.value,
            attempt=self._decisions.attempt,
            error=None if error is None else describe(error),
        )
        if step.state is _S.CIRCUIT_OPEN:
            self.stats.circuit_opens += 1
        self._apply(step, self._last_error)
        if step.state is _S.BACKOFF or step.sleep:
            return pause(self, step.sleep, verdict)
        return _NO_PAUSE

    async def _admit(self) -> BreakerLease | None:
        """Wait until the breaker admits a dial (no polling while it is open).

        The one place a dial is gated (inside a shared coordinator's permit, if any). Returns
        None when the user closed meanwhile.
        """
        while True:
            try:
                lease = self.breaker.acquire()
            except CircuitOpenError as exc:
                was_open = self._state is _S.CIRCUIT_OPEN
                step = self._decisions.refused()
                if step.stop:
                    return None
                if not was_open:
                    self.stats.circuit_opens += 1
                self._apply(step, exc)
                await self.breaker.wait_until_ready()
                continue
            step = self._decisions.admitted()
            if step.stop:
                lease.release()
                return None
            self._apply(step)
            self.stats.dials += 1
            return lease

    def _serve(
        self, ws: Transport, lease: BreakerLease, step: Step
    ) -> tuple[Keepalive | None, list[Task] | None]:
        """Make ``ws`` current and start what runs beside the watch on it (no await).

        Returns the keepalive and the helper tasks (on_open + flush is ``_opener``).
        """
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
        self._ws, self._opened = ws, True
        if self._on_message is not None:
            ws.set_handler(self._deliver)
        self._apply(step)
        # No task group per transport: keepalive and (on the system clock) the stable timer
        # are loop timers; on_open + flush, and a probe's round trip, are tasks only while they
        # run, beside the watch (if the transport dies while on_open is stuck, we move on).
        opts = self.options
        loop = asyncio.get_running_loop()
        alive = None
        if opts.ping_interval > 0:
            alive = Keepalive(ws, opts.ping_interval, opts.ping_timeout, owner=self)
            alive.start()
        # Tasks beside the watch while they run; idle, not even an empty list is held.
        helpers: list[asyncio.Task[None]] | None = None
        timer = self._start_stable_timer(lease)
        if timer is not None:
            helpers = [timer]
        self._opener = self._opener_scope = None
        if self._on_open is not None or ((box := self._box) is not None and box.buffer):
            self._flush_behind(ws, opening=True)
        else:
            self._live = True
            self._wake()
        permit = self._permit
        if needs_probe(permit):
            probe = loop.create_task(probe_round_trip(ws, permit, opts.ping_timeout))
            helpers = [*(helpers or ()), probe]
        return alive, helpers

    async def _served(self, alive: Keepalive | None, helpers: list[Task] | None) -> bool:
        """The transport ended (or the watch was cancelled): stop and await what ran beside.

        Returns whether it was stable.
        """
        handle, self._stable_handle = self._stable_handle, None
        if handle is not None:
            handle.cancel()
        opener, scope = self._opener, self._opener_scope
        if scope is not None:
            scope.cancel()
        for task in helpers or ():
            task.cancel()
        self._holding = True  # aclose() does not Task.cancel() this section (_closing)
        try:
            with anyio.CancelScope(shield=True):  # a shielded flush write ends first
                if alive is not None:
                    await alive.aclose()
                if helpers or opener is not None:
                    await asyncio.gather(*(helpers or ()), *(opener,) * (opener is not None),
                                         return_exceptions=True)
        finally:
            self._holding = False
        stable, self._stable = self._stable, False
        self._live = False
        if not self._closing:  # aclose() takes the transport over to drain and close it
            self._ws = None
        self._lease = None
        self._disconnected_at = self._clock.now()
        self._connected_at = self._connected_wall = None
        self._wake()
        return stable

    def _ended(self, ws: Transport) -> tuple[Verdict, BaseException | None]:
        """How the transport ended: the verdict and the error behind it."""
        opener, self._opener, self._opener_scope = self._opener, None, None
        abort = self._take_abort()
        if abort is not None:
            kind, error = abort
            return Verdict(Action.RETRY, kind), error or ConnectionError(kind)
        if opener is not None and not opener.cancelled() and opener.exception() is not None:
            raise opener.exception()  # type: ignore[misc]  # a bug must not pass silently
        exc = ws.close_exc
        return self._classify(exc), exc

    def _take_abort(self) -> tuple[str, BaseException | None] | None:
        abort, self._abort = self._abort, None
        return abort

    def _flush_behind(self, ws: Transport, *, opening: bool = False) -> None:
        """Flush the buffer in a task (after on_open when opening), then let sends go direct.

        Stopped through its cancel scope, never Task.cancel(): a buffered write in flight is
        shielded (bounded) and must finish, or the message would be sent twice. Whoever ends
        the watch (the supervisor, or the closer while it is parked) stops and awaits it.
        """
        scope = self._opener_scope = anyio.CancelScope()
        self._opener = asyncio.get_running_loop().create_task(
            self._open_and_flush(ws, scope, opening)
        )

    async def _open_and_flush(self, ws: Transport, scope: anyio.CancelScope, opening: bool) -> None:
        with scope:
            await self._open_and_flush_now(ws, opening)
        if self._opener is asyncio.current_task():  # done: the supervisor holds it no longer
            self._opener = self._opener_scope = None

    async def _open_and_flush_now(self, ws: Transport, opening: bool) -> None:
        if opening and self._on_open is not None:
            token = ON_OPEN.set((id(self), self.generation))
            try:
                result = self._on_open(self)  # sync or async
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self._log.warning("resilient_conn.on_open_failed", error=describe(exc))
                self.fail_current("on_open_failed", exc)
                return
            finally:
                ON_OPEN.reset(token)
        if (box := self._box) is None or await box.flush(ws):
            self._live = True
            self._wake()

    def _enter_failed(
        self, step: Step, verdict: Verdict, error: BaseException | None
    ) -> None:
        detail = redact_text(str(error)) if error is not None else verdict.kind
        failure = ConnectionFailedError(
            f"{self.name}: {verdict.kind}: {detail}", status=verdict.status
        )
        failure.__cause__ = error
        self._fatal = failure
        self._last_error = error
        self._apply(step, error)
        if self._box is not None:
            self._box.dead_letter_all(DeadLetterReason.FAILED, failure)
