"""The dial gate: a connection's optional :class:`~resilient_conn.RecoveryCoordinator`.

Without a coordinator the gate is a no-op permit. With one, every dial of the supervisor goes
through ``coordinator.permit(name)``:

* the wait for admission shows as a state change: ``CIRCUIT_OPEN`` with the reason
  ``"circuit open, waiting for the probe time"`` or ``"circuit open, probe held by another
  connection"``, ``BACKOFF`` with ``"waiting for reconnect ramp"`` or ``"waiting for other
  dials to this upstream"`` (the coordinator's in-flight dial window, ``max_dialing``);
* the handshake done is ``permit.dialed()`` (frees the dial's slot of that window);
* a failed dial, or a transport that ends before ``stable_after``, is ``permit.failed()``; a
  transport that stays up ``stable_after`` is ``permit.succeeded()``;
* a probe dial sends one ping right after the handshake and its pong is
  ``permit.succeeded(stable=False)``, which closes the shared circuit and starts the ramp;
* the connection's own backoff no longer paces redials (the shared circuit does): a pause
  after a failure is at most the schedule's first step, or a server's ``Retry-After`` hint.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

import anyio
from websockets.exceptions import ConcurrencyError, ConnectionClosed

from ..adapters.base import Transport
from ..coordination import REASON_DIALING, REASON_RAMP, DialKind, Permit, RecoveryCoordinator
from ..resilience.backoff import Backoff
from ..resilience.classify import Action, Verdict

__all__ = [
    "NO_SCOPE", "Gate", "Gated", "NoPermit", "gate", "needs_probe", "pause", "probe_round_trip"
]


class Gated(Protocol):
    """What the gate uses of the supervisor (a protocol, so the two do not import each other)."""

    name: str
    backoff: Backoff
    coordinator: RecoveryCoordinator | None

    def _waiting(self, reason: str, *, ramp: bool) -> None:
        """Show the wait for admission as a state (the decision object picks it)."""
        ...


class Gate(Protocol):
    """What the supervisor uses of a permit (a coordinator's, or the no-op one)."""

    kind: DialKind | None

    def dialed(self) -> None:
        """The handshake is done: the dial no longer counts as in flight."""
        ...

    async def succeeded(self, *, stable: bool = True) -> None:
        """Report a round trip (``stable=False``) or a connection that proved stable."""
        ...

    async def failed(self, error: BaseException | None = None) -> None:
        """Report a failed dial or a connection lost before ``stable_after``."""
        ...


class NoPermit:
    """The gate of a connection without a coordinator: admits at once, records nothing."""

    kind: DialKind | None = None

    async def __aenter__(self) -> NoPermit:
        return self

    @staticmethod  # looked up without a bound method: nothing held while the block runs
    async def __aexit__(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def dialed(self) -> None:
        """Nothing in flight to free."""

    async def succeeded(self, *, stable: bool = True) -> None:
        """Nothing to record."""

    async def failed(self, error: BaseException | None = None) -> None:
        """Nothing to record."""


_NO_PERMIT = NoPermit()


class _NoScope:
    """The cancel scope of a connection without a coordinator: none.

    ``contextlib.nullcontext`` without the bound ``__exit__`` that a ``with`` block holds for
    as long as it runs (a static method is looked up as the function itself).
    """

    def __enter__(self) -> None:
        return None

    @staticmethod
    def __exit__(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


NO_SCOPE = _NoScope()
"""What the supervisor's ``with`` enters when it holds no cancel scope."""


def gate(conn: Gated) -> Permit | NoPermit:
    """Return the permit (an async context manager) for ``conn``'s next dial."""
    coordinator = conn.coordinator
    if coordinator is None:
        return _NO_PERMIT

    def on_wait(reason: str, seconds: float) -> None:
        # through the decision object: nothing once closing (the wait is about to be
        # cancelled), CONNECTING first on a first dial, then CIRCUIT_OPEN or BACKOFF (ramp)
        conn._waiting(reason, ramp=reason in (REASON_RAMP, REASON_DIALING))

    return coordinator.permit(conn.name, on_wait=on_wait, windowed=True)


def pause(conn: Gated, sleep: float, verdict: Verdict) -> float:
    """The pause after a failure: with a coordinator, only a short jitter or a server's hint."""
    if conn.coordinator is None:
        return sleep
    hint = verdict.delay if verdict.action is Action.RETRY_AFTER else 0.0
    return min(sleep, max(conn.backoff.delay(0), hint))


def needs_probe(permit: Gate | None) -> bool:
    """True if this dial is a shared circuit's probe (its first round trip is reported)."""
    return permit is not None and permit.kind is DialKind.PROBE


async def probe_round_trip(ws: Transport, permit: Gate | None, timeout: float) -> None:
    """On a probe dial, one ping right after the handshake; its pong closes the circuit."""
    if not needs_probe(permit):
        return
    assert permit is not None
    answered = False
    try:
        with anyio.move_on_after(timeout):
            pong = await ws.ping()
            await pong
            answered = True
    except (ConnectionClosed, ConcurrencyError):
        return  # the transport died first: the supervisor reports that as the outcome
    if answered:
        await permit.succeeded(stable=False)
