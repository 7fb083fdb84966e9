"""A breaker's permission for one call: report its outcome exactly once."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

__all__ = ["BreakerLease", "Settler"]


class Settler(Protocol):
    """What a lease needs of its breaker (``CircuitBreaker`` satisfies it)."""

    def _settle(
        self, generation: int, probe: bool, ok: bool | None, exc: BaseException | None
    ) -> None: ...

    def _classify(self, exc: BaseException) -> bool | None: ...


class BreakerLease:
    """Permission for one call, returned by :meth:`CircuitBreaker.acquire`.

    Report the outcome with exactly one of :meth:`success`, :meth:`failure` or
    :meth:`release`; only the first call of any of them counts, later ones do nothing. A
    probe lease (admitted in HALF_OPEN) holds one of the ``half_open_max_calls`` slots until
    then. Also a sync context manager: ``with breaker.acquire():`` reports like ``async with
    breaker:`` does.
    """

    __slots__ = ("_breaker", "_done", "_generation", "_probe")

    def __init__(self, breaker: Settler, generation: int, probe: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self._probe = probe
        self._done = False

    @property
    def probe(self) -> bool:
        """True if this lease was admitted as a HALF_OPEN probe."""
        return self._probe

    @property
    def done(self) -> bool:
        """True once an outcome was reported or the lease released."""
        return self._done

    def success(self) -> None:
        """Record a success and free the probe slot (no-op after the first report)."""
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self._probe, True, None)

    def failure(self, exc: BaseException | None = None) -> None:
        """Record a failure (``exc`` is kept for metrics) and free the probe slot."""
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self._probe, False, exc)

    def release(self) -> None:
        """Free the probe slot without recording anything (e.g. on cancellation)."""
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self._probe, None, None)

    def report(self, exc: BaseException | None) -> None:
        """Report as ``async with`` does: success, failure or release, judged from ``exc``."""
        if exc is None:
            self.success()
            return
        verdict = self._breaker._classify(exc)
        if verdict is None:
            self.release()
        elif verdict:
            self.success()
        else:
            self.failure(exc)

    def __enter__(self) -> BreakerLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.report(exc)

    def __repr__(self) -> str:
        return f"BreakerLease(probe={self._probe}, done={self._done})"
