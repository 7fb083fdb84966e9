"""Where a recovery coordinator keeps its state: the store interface and the in-process store.

A store holds one :class:`~resilient_conn.coordination.UpstreamState` per key and applies
*transitions* to it atomically: a transition is a pure function ``(state, now) ->
(new_state, result)`` (the functions of :mod:`resilient_conn.coordination.decide`), and
``now`` is the store's own clock, so a fleet sharing a store shares one clock too. When a
transition changes what waiters care about (phase, probe lease, ramp), the store wakes the
key's :class:`~resilient_conn.testing.Notifier` in every process that uses it.

:class:`LocalStore` keeps the state in a dict (one process); :class:`RedisStore` keeps it in
Redis for a fleet of processes and falls back to a :class:`LocalStore` when Redis fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.notify import Notifier
from .decide import UpstreamState

__all__ = ["CoordinatorStore", "LocalStore", "StoreHealth", "Transition", "visible_change"]

T = TypeVar("T")

Transition = Callable[[UpstreamState, float], tuple[UpstreamState, T]]
"""A pure state change: ``(state, now) -> (new_state, result)``; must not raise."""


def visible_change(old: UpstreamState, new: UpstreamState) -> bool:
    """Return whether waiters must re-decide (phase, probe lease or ramp changed)."""
    return (
        old.phase is not new.phase
        or old.probe_holder != new.probe_holder
        or old.ramping != new.ramping
    )


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """A snapshot of a store's health (what the health layer shows).

    Attributes:
        backend: ``"local"`` or ``"redis"``.
        reachable: Whether the shared backend answered the last operation (always True for
            a local store).
        fallback_active: Whether decisions are currently taken by the local fallback.
        last_error: The last backend error, redacted, or ``None``.
        errors: Backend errors so far.
        fallbacks: Times the store fell back to local state.
        rejoins: Times it rejoined the shared state.
    """

    backend: str
    reachable: bool = True
    fallback_active: bool = False
    last_error: str | None = None
    errors: int = 0
    fallbacks: int = 0
    rejoins: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "backend": self.backend,
            "reachable": self.reachable,
            "fallback_active": self.fallback_active,
            "last_error": self.last_error,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "rejoins": self.rejoins,
        }


@runtime_checkable
class CoordinatorStore(Protocol):
    """What a recovery coordinator needs of its store."""

    @property
    def poll_interval(self) -> float:
        """Longest a waiter sleeps without re-reading the state (``inf``: never needed)."""
        ...

    async def update(self, key: str, transition: Transition[T]) -> T:
        """Apply ``transition`` to the state of ``key`` atomically and return its result.

        Once this returns, the new state is stored; it never raises for a backend failure
        (a shared store falls back to local state instead).
        """
        ...

    def notifier(self, key: str) -> Notifier:
        """Return the notifier woken whenever the state of ``key`` changes visibly."""
        ...

    def peek(self, key: str) -> UpstreamState | None:
        """Return the last state of ``key`` this process saw, without I/O."""
        ...

    def health(self) -> StoreHealth:
        """Return the store's health snapshot."""
        ...


class LocalStore:
    """In-process store: a dict of states; atomic because transitions never await.

    Args:
        clock: Clock whose ``now()`` stamps transitions (default: the system clock).
    """

    __slots__ = ("_clock", "_notifiers", "_states")

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._states: dict[str, UpstreamState] = {}
        self._notifiers: dict[str, Notifier] = {}

    @property
    def poll_interval(self) -> float:
        """Local notifications never get lost: waiters need no poll."""
        return float("inf")

    async def update(self, key: str, transition: Transition[T]) -> T:
        """Apply ``transition`` to ``key``'s state (no await in between: atomic)."""
        return self.apply(key, transition)

    def apply(self, key: str, transition: Transition[T]) -> T:
        """Synchronous form of :meth:`update` (used by :class:`RedisStore`'s fallback)."""
        old = self._states.get(key) or UpstreamState()
        new, result = transition(old, self._clock.now())
        self._states[key] = new
        if visible_change(old, new):
            self.notifier(key).notify()
        return result

    def notifier(self, key: str) -> Notifier:
        """Return the notifier of ``key`` (created on first use)."""
        notifier = self._notifiers.get(key)
        if notifier is None:
            notifier = self._notifiers[key] = Notifier()
        return notifier

    def peek(self, key: str) -> UpstreamState | None:
        """Return the state of ``key``, or ``None`` if it was never touched."""
        return self._states.get(key)

    def clear(self) -> None:
        """Forget every state (waiters are woken to re-decide)."""
        self._states.clear()
        for notifier in self._notifiers.values():
            notifier.notify()

    def health(self) -> StoreHealth:
        """A local store is always reachable."""
        return StoreHealth(backend="local")

    def __repr__(self) -> str:
        return f"LocalStore(keys={len(self._states)})"
