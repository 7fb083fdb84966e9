"""RecoveryCoordinator: one breaker, one probe and one reconnect ramp per upstream.

See :mod:`resilient_conn.coordination` for the interface a supervisor uses.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import ConfigError
from .._core.log import get_logger
from .._core.notify import Notifier
from ._snapshot import CoordinatorSnapshot, upstream_key
from ._window import DialWindow
from .decide import (
    REASON_DIALING,
    Admission,
    DialKind,
    RecoverySettings,
    UpstreamState,
    admit,
    fail,
    release,
    succeed,
)
from .store import CoordinatorStore, LocalStore

__all__ = [
    "CoordinatorSnapshot",
    "Permit",
    "RecoveryCoordinator",
    "WaitCallback",
    "reset_default_coordinators",
]

WaitCallback = Callable[[str, float], None]
"""Called as ``on_wait(reason, seconds)`` each time a permit starts a wait (``seconds`` may
be ``inf``: until the state changes)."""

_log = get_logger()
_PROCESS = f"{os.getpid()}-{secrets.token_hex(3)}"
_DEFAULTS: dict[str, RecoveryCoordinator] = {}
_OUTCOME_TIMEOUT = 5.0
"""Bound on recording an outcome (a shared store answers or falls back well before)."""


class RecoveryCoordinator:
    """Shares one circuit, one probe and one reconnect ramp among connections to an upstream.

    Args:
        name: Names the upstream; it is the store key, so every process of a fleet that
            passes the same name (and store) shares the state. 1-200 printable characters.
        settings: Tuning (default :class:`RecoverySettings()`).
        store: Where the state lives (default: a new :class:`LocalStore` on ``clock``).
        clock: Clock for waits (default: the system clock; honours ``set_testing``).

    Raises:
        ConfigError: Bad name, settings or store.
    """

    __slots__ = (
        "_abandoned",
        "_admitted",
        "_clock",
        "_counter",
        "_dialing",
        "_flushed",
        "_flushing",
        "_pending",
        "_results",
        "_waits",
        "name",
        "settings",
        "store",
    )

    def __init__(
        self,
        name: str = "upstream",
        *,
        settings: RecoverySettings | None = None,
        store: CoordinatorStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or not name.isprintable():
            raise ConfigError(f"name must be 1-200 printable characters, got {name!r}")
        if settings is not None and not isinstance(settings, RecoverySettings):
            raise ConfigError(f"settings must be RecoverySettings, got {type(settings).__name__}")
        if store is not None and not isinstance(store, CoordinatorStore):
            raise ConfigError(f"store must be a CoordinatorStore, got {type(store).__name__}")
        self.name = name
        self.settings = settings if settings is not None else RecoverySettings()
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self.store: CoordinatorStore = store if store is not None else LocalStore(self._clock)
        self._counter = itertools.count(1)
        self._admitted = {kind.value: 0 for kind in DialKind}
        self._waits = 0
        # Admission requests are batched: whoever finds no flush running applies every
        # pending request in one store update (one Redis round trip for N waiters).
        self._pending: dict[str, bool] = {}  # holder -> reserved, in arrival order
        self._results: dict[str, Admission] = {}
        self._abandoned: set[str] = set()  # cancelled while their request was in flight
        self._flushing = False
        self._flushed = Notifier()
        self._dialing = DialWindow(self.settings.max_dialing, self._clock)

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        settings: RecoverySettings | None = None,
        store: CoordinatorStore | None = None,
    ) -> RecoveryCoordinator:
        """Return this process's shared coordinator for the host:port of ``url`` (opt-in).

        The first call for a host:port creates it (named ``"host:port"``); later calls
        return the same object. ``ws``/``http`` default to port 80, ``wss``/``https`` to 443.

        Raises:
            ConfigError: ``url`` has no host, or ``settings``/``store`` differ from those
                of the existing coordinator for that host:port.
        """
        key = upstream_key(url)
        existing = _DEFAULTS.get(key)
        if existing is None:
            existing = _DEFAULTS[key] = cls(key, settings=settings, store=store)
            return existing
        if settings is not None and settings != existing.settings:
            raise ConfigError(f"the coordinator for {key} already exists with other settings")
        if store is not None and store is not existing.store:
            raise ConfigError(f"the coordinator for {key} already exists with another store")
        return existing

    def permit(
        self,
        connection: str = "",
        *,
        on_wait: WaitCallback | None = None,
        windowed: bool = False,
    ) -> Permit:
        """Return a permit to dial, to use as ``async with coordinator.permit(name) as p:``.

        Entering waits (no polling) until the dial is admitted; see :class:`Permit`.

        Args:
            connection: The caller's name (for logs and the probe lease).
            on_wait: Called ``on_wait(reason, seconds)`` when a wait with a new reason starts.
            windowed: The caller reports the end of its dial (:meth:`Permit.dialed`, or an
                outcome, or leaving the block) promptly, so the permit may take a slot of the
                in-flight dial window (``settings.max_dialing``; see
                ``coordination/_window.py``). ``ResilientConnection`` does. A permit held
                for a connection's whole life without reporting must leave it ``False``.
        """
        holder = f"{_PROCESS}:{next(self._counter)}:{connection[:80]}"
        return Permit(self, holder, on_wait, windowed)

    def snapshot(self) -> CoordinatorSnapshot:
        """Return the state as last seen by this process (no I/O)."""
        state = self.store.peek(self.name) or UpstreamState()
        return CoordinatorSnapshot(
            name=self.name,
            phase=state.phase,
            failures=state.failures,
            reopenings=state.reopenings,
            next_open_time=self.settings.open_for(state.reopenings),
            probe_held=bool(state.probe_holder),
            ramping=state.ramping,
            admitted=dict(self._admitted),
            waits=self._waits,
            store=self.store.health(),
        )

    async def _decide(self, holder: str, reserved: bool) -> Admission:
        """Return the admission for ``holder``, decided in a batch with every other waiter."""
        self._pending[holder] = reserved
        try:
            while True:
                result = self._results.pop(holder, None)
                if result is not None:
                    return result
                if self._flushing:
                    await self._flushed.wait()
                else:
                    await self._flush()
        except BaseException:
            if self._pending.pop(holder, None) is None:
                result = self._results.pop(holder, None)
                if result is None:
                    self._abandoned.add(holder)  # in flight: the flush cleans up
                elif result.kind is DialKind.PROBE:
                    await self._release_now([holder])
            raise

    async def _flush(self) -> None:
        """Apply every pending admission request in one store update (shielded, bounded)."""
        self._flushing = True
        batch, self._pending = list(self._pending.items()), {}
        settings, abandoned = self.settings, self._abandoned

        def step(state: UpstreamState, now: float) -> tuple[UpstreamState, list[Admission]]:
            out = []
            for holder, reserved in batch:
                if holder in abandoned:
                    out.append(Admission(None))
                    continue
                state, decision = admit(state, settings, holder, now, reserved=reserved)
                out.append(decision)
            return state, out

        release = []
        # If the store fails (a bug: stores fall back rather than raise), everyone waits a
        # little and asks again: never a spin, never a waiter left without an answer.
        decisions = [Admission(None, 1.0, "coordinator store error")] * len(batch)
        try:
            with anyio.CancelScope(shield=True):
                decisions = await self.store.update(self.name, step)
        except Exception:
            _log.exception("resilient_conn.coordinator_store_failed", upstream=self.name)
        finally:
            self._flushing = False
            for (holder, _), decision in zip(batch, decisions, strict=True):
                if holder in abandoned:
                    abandoned.discard(holder)
                    if decision.kind is DialKind.PROBE:
                        release.append(holder)
                else:
                    self._results[holder] = decision
            self._flushed.notify()
        if release:
            await self._release_now(release)

    async def _release_now(self, holders: list[str]) -> None:
        settings = self.settings

        def step(state: UpstreamState, now: float) -> tuple[UpstreamState, None]:
            for holder in holders:
                state = release(state, settings, holder, now)
            return state, None

        with anyio.CancelScope(shield=True), anyio.move_on_after(_OUTCOME_TIMEOUT):
            await self.store.update(self.name, step)

    async def _sleep_or_change(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock, or less if the state changes meanwhile.

        Returns:
            True if woken by a change, False if the time ran out.
        """
        notifier = self.store.notifier(self.name)
        if math.isinf(seconds):
            await notifier.wait()
            return True
        changed = False
        async with anyio.create_task_group() as tg:

            async def sleeper() -> None:
                await self._clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(sleeper)
            await notifier.wait()
            changed = True
            tg.cancel_scope.cancel()
        return changed

    def __repr__(self) -> str:
        state = self.store.peek(self.name) or UpstreamState()
        return (
            f"RecoveryCoordinator({self.name!r}, phase={state.phase.value}, "
            f"store={self.store.health().backend})"
        )


class Permit:
    """One dial's passage through a :class:`RecoveryCoordinator`.

    ``async with`` waits until the dial is admitted and then exposes :attr:`kind`,
    :attr:`reason` and :attr:`waited`. Report the outcome with :meth:`succeeded` /
    :meth:`failed`. Leaving the block without an outcome releases the probe lease (if this
    was the probe) and records nothing, except that an ``Exception`` escaping the block
    counts as a failure (as ``async with breaker:`` does); cancellation never counts.
    """

    __slots__ = (
        "_coordinator",
        "_dialing",
        "_holder",
        "_on_wait",
        "_outcome",
        "_windowed",
        "kind",
        "reason",
        "waited",
    )

    def __init__(
        self,
        coordinator: RecoveryCoordinator,
        holder: str,
        on_wait: WaitCallback | None,
        windowed: bool = False,
    ) -> None:
        self._coordinator = coordinator
        self._holder = holder
        self._on_wait = on_wait
        self._windowed = windowed
        self._dialing = False  # holds one of the coordinator's in-flight dial slots
        self._outcome: str | None = None
        self.kind: DialKind | None = None
        """The admitted dial kind (``None`` until entered)."""
        self.reason = ""
        """Why the permit waited (the last wait's reason), ``""`` if it did not."""
        self.waited = 0.0
        """Seconds spent waiting (on the coordinator's clock)."""

    async def __aenter__(self) -> Permit:
        if self.kind is not None or self._outcome is not None:
            raise RuntimeError("a Permit is used once: call coordinator.permit() per dial")
        coordinator = self._coordinator
        store, clock = coordinator.store, coordinator._clock
        holder, reserved, last_reason = self._holder, False, ""
        started = clock.now()
        slots = coordinator._dialing if self._windowed else None
        while True:  # self._dialing: this permit holds a slot of the in-flight dial window
            try:
                decision = await coordinator._decide(holder, reserved)
            except BaseException:
                self.dialed(None)
                raise
            if decision.kind is not None:
                if slots is None or self._dialing:
                    break
                if decision.kind is DialKind.RAMP:
                    slots.widen(coordinator.settings.max_dialing // 4)
                if decision.kind is DialKind.PROBE:
                    slots.take()  # the one probe never waits for the window
                elif not slots.try_acquire():
                    # No slot free (the upstream's handshakes slowed down): wait for one,
                    # then ask again, for a new ramp slot too, so that the waiters held up
                    # here do not all go out at once when the upstream catches up.
                    reserved = False
                    last_reason = self._waiting(REASON_DIALING, math.inf, last_reason)
                    await slots.acquire()
                    self._dialing = True
                    continue
                self._dialing = True
                break
            self.dialed(None)
            reserved = decision.reserved
            last_reason = self._waiting(decision.reason, decision.wait, last_reason)
            wait = min(max(decision.wait, 0.0), store.poll_interval)
            changed = await coordinator._sleep_or_change(wait)
            if reserved and not changed and wait >= decision.wait:
                # Our booked slot came and nothing changed meanwhile (the circuit did not
                # re-open): dial without another round trip to the store.
                if slots is not None:
                    if not slots.try_acquire():
                        continue
                    self._dialing = True
                decision = Admission(DialKind.RAMP)
                break
        kind = decision.kind
        assert kind is not None
        self.kind = kind
        self.reason = last_reason
        self.waited = max(0.0, clock.now() - started)
        coordinator._admitted[kind.value] += 1
        return self

    def _waiting(self, reason: str, seconds: float, last: str) -> str:
        """Count a wait with a new reason and tell ``on_wait``; return the reason."""
        if reason != last:
            self._coordinator._waits += 1
            if self._on_wait is not None:
                try:
                    self._on_wait(reason, seconds)
                except Exception:
                    _log.exception("resilient_conn.coordinator_on_wait_failed")
        return reason

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._outcome is None and isinstance(exc, Exception):
            await self.failed(exc)
        elif self._outcome is None and self.kind is DialKind.PROBE:
            self._outcome = "released"
            holder, settings = self._holder, self._coordinator.settings
            await self._record(lambda st, now: (release(st, settings, holder, now), None))
        self.dialed(None)

    def dialed(self, ok: bool | None = True) -> None:
        """The dial is over: free its in-flight slot (see ``settings.max_dialing``).

        Args:
            ok: ``True`` (default) the handshake completed: the window grows; ``False`` the
                dial failed: it shrinks; ``None`` no outcome. :meth:`succeeded`,
                :meth:`failed` and leaving the block free the slot too; a second call does
                nothing.
        """
        if self._dialing:
            self._dialing = False
            self._coordinator._dialing.release(ok)

    async def succeeded(self, *, stable: bool = True) -> None:
        """Report that the dial worked.

        Args:
            stable: True when the connection stayed up ``stable_after`` (resets the open-time
                growth); False for a round trip on a fresh connection (enough for a probe to
                close the circuit). May be called with False, then again with True.
        """
        self.dialed()
        if self._outcome == "stable" or self.kind is None:
            return
        self._outcome = "stable" if stable else "alive"
        holder, settings = self._holder, self._coordinator.settings
        await self._record(
            lambda st, now: (succeed(st, settings, holder, now, stable=stable), None)
        )

    async def failed(self, error: BaseException | None = None) -> None:
        """Report that the dial failed or the connection died before proving stable.

        Ignored after ``succeeded(stable=True)`` and after an earlier ``failed``.
        """
        self.dialed(False)
        if self._outcome in ("stable", "failed", "released") or self.kind is None:
            return
        self._outcome = "failed"
        holder, settings = self._holder, self._coordinator.settings
        await self._record(lambda st, now: (fail(st, settings, holder, now), None))

    async def _record(self, transition: Callable[[UpstreamState, float], tuple[Any, None]]) -> None:
        # Shielded and bounded: an outcome must reach the store even while the caller is
        # being cancelled (a probe lease left behind would stall every waiter until its TTL).
        with anyio.CancelScope(shield=True), anyio.move_on_after(_OUTCOME_TIMEOUT):
            await self._coordinator.store.update(self._coordinator.name, transition)

    def __repr__(self) -> str:
        kind = None if self.kind is None else self.kind.value
        return f"Permit(kind={kind}, outcome={self._outcome}, reason={self.reason!r})"


def reset_default_coordinators() -> None:
    """Forget every coordinator made by :meth:`RecoveryCoordinator.for_url` (for tests)."""
    _DEFAULTS.clear()
