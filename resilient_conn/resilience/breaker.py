"""An asyncio circuit breaker with probe leases, listeners and metrics.

The decision core is Sans-I/O: every decision reads the injected clock's ``now()``; the only
awaiting is :meth:`CircuitBreaker.wait_until_ready` (through ``clock.sleep``) and the guarded
call itself. States and legal moves::

    CLOSED --failure_threshold consecutive failures--> OPEN
    OPEN --recovery timeout elapsed (seen lazily on read/acquire)--> HALF_OPEN
    HALF_OPEN --success_threshold successes--> CLOSED
    HALF_OPEN --one failure--> OPEN (open time grows by recovery_multiplier, if set)
    any --force_open()--> FORCED_OPEN     any --disable()--> DISABLED     any --reset()--> CLOSED

Which outcomes count (the rules every entry point follows):

* CLOSED: every reported success resets the consecutive-failure count, every failure adds
  one, whether it came from a lease, ``async with``, :meth:`CircuitBreaker.call` or
  :meth:`CircuitBreaker.record_success` / :meth:`CircuitBreaker.record_failure`.
* HALF_OPEN: only outcomes of probes admitted in *this* half-open episode count, plus
  lease-less ``record_*`` calls (a supervisor reporting heartbeats of its probe connection).
  Outcomes of calls admitted earlier are ignored (counted in ``metrics().ignored``).
* OPEN, FORCED_OPEN: outcomes are ignored (counted in ``ignored``). DISABLED records nothing.
* An exception counts as a failure when ``failure_on`` says so. Any other ``Exception``
  counts as a **success** (the guarded service answered; the error is the caller's), as in
  pybreaker and Resilience4j. A ``BaseException`` that is not an ``Exception``
  (cancellation, ``KeyboardInterrupt``, ``SystemExit``) is **neutral**: it frees the probe
  slot and records nothing. Cancellation never counts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import CircuitOpenError, ConfigError
from .._core.hooks import HookSet, Unsubscribe
from .._core.log import get_logger, redact_text
from . import config
from ._breaker_guard import AsyncGuard
from ._breaker_lease import BreakerLease
from ._breaker_model import (
    TRANSITIONS,
    BreakerMetrics,
    BreakerState,
    BreakerTransition,
    FailurePredicate,
    failure_rule,
)
from ._breaker_settings import breaker_settings

__all__ = [
    "TRANSITIONS",
    "BreakerLease",
    "BreakerMetrics",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "FailurePredicate",
]

P = ParamSpec("P")
T = TypeVar("T")

_log = get_logger()

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED


class CircuitBreaker(AsyncGuard):
    """Stops calling a failing service for a while, then probes it before trusting it again.

    Every argument left at ``None`` comes from configuration (``RESILIENT_CONN_BREAKER_*``
    environment variables, else the defaults in :mod:`resilient_conn.config`).

    Args:
        failure_threshold: Consecutive failures that open the circuit
            (default :data:`~resilient_conn.config.BREAKER_FAILURE_THRESHOLD` = 5).
        recovery_timeout: Seconds the circuit stays open before a probe is admitted
            (default :data:`~resilient_conn.config.BREAKER_RECOVERY_TIMEOUT` = 60.0).
        success_threshold: Successes in HALF_OPEN that close the circuit
            (default :data:`~resilient_conn.config.BREAKER_SUCCESS_THRESHOLD` = 2).
        half_open_max_calls: Probe leases outstanding at once in HALF_OPEN
            (default :data:`~resilient_conn.config.BREAKER_HALF_OPEN_MAX_CALLS` = 1).
        name: Shown in errors, transitions, metrics and logs.
        failure_on: Exception types, or a predicate, deciding which exceptions count as
            failures (default: every ``Exception``).
        clock: Source of ``now()`` and ``sleep()`` (default: the system clock).
        max_recovery_timeout: Upper bound of the growing open time (default: 10 times
            ``recovery_timeout``; only used when ``recovery_multiplier > 1``).
        recovery_multiplier: Each re-open straight from HALF_OPEN multiplies the open time
            by this, up to ``max_recovery_timeout``; closing resets it (default 1.0: fixed).

    Raises:
        ConfigError: A value is out of range (the message names the parameter).
    """

    __slots__ = (
        "_current_timeout",
        "_failures",
        "_generation",
        "_half_open_successes",
        "_hooks",
        "_ignored",
        "_last_failure",
        "_name",
        "_opened_at",
        "_rejections",
        "_times_opened",
        "_transitions",
    )

    def __init__(
        self,
        failure_threshold: int | None = None,
        recovery_timeout: float | None = None,
        success_threshold: int | None = None,
        half_open_max_calls: int | None = None,
        *,
        name: str | None = None,
        failure_on: tuple[type[BaseException], ...] | type[BaseException] | FailurePredicate = (
            Exception,
        ),
        clock: Clock | None = None,
        max_recovery_timeout: float | None = None,
        recovery_multiplier: float = 1.0,
    ) -> None:
        resolve = config.resolve
        failures = int(
            resolve("breaker_failure_threshold", failure_threshold, param="failure_threshold")
        )
        recovery = float(
            resolve("breaker_recovery_timeout", recovery_timeout, param="recovery_timeout")
        )
        successes = int(
            resolve("breaker_success_threshold", success_threshold, param="success_threshold")
        )
        probes = int(
            resolve("breaker_half_open_max_calls", half_open_max_calls, param="half_open_max_calls")
        )
        multiplier = config.check_positive(recovery_multiplier, "recovery_multiplier")
        if multiplier < 1.0:
            raise ConfigError(f"recovery_multiplier must be >= 1, got {recovery_multiplier!r}")
        if max_recovery_timeout is None:
            max_recovery_timeout = recovery * 10.0
        config.check_non_negative(max_recovery_timeout, "max_recovery_timeout")
        if max_recovery_timeout < recovery:
            raise ConfigError(
                f"max_recovery_timeout must be >= recovery_timeout ({recovery!r}), "
                f"got {max_recovery_timeout!r}"
            )
        types, predicate = failure_rule(failure_on)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"clock must have now() and sleep(), got {clock!r}")
        # shared by breakers configured alike (one slot here, not nine)
        self._cfg = breaker_settings(
            failures, recovery, successes, probes, float(multiplier),
            float(max_recovery_timeout), types, predicate, SYSTEM_CLOCK if clock is None else clock
        )
        self._name = name
        # made on first use: most breakers (one per connection) never get a listener or a
        # probe through ``async with``
        self._hooks: HookSet[BreakerTransition] | None = None
        self._changed: asyncio.Event | None = None
        self._task_probes: dict[object, list[BreakerLease]] | None = None
        self._state = _CLOSED
        self._generation = 0
        self._in_flight = 0
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._current_timeout = recovery
        self._opened_at: float | None = None
        self._open_until = 0.0
        self._last_failure: str | None = None
        self._calls = self._successes = self._failures = self._rejections = 0
        self._ignored = self._times_opened = self._transitions = 0

    # -- read-only configuration ---------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The breaker's name, if any."""
        return self._name

    @property
    def failure_threshold(self) -> int:
        """Consecutive failures that open the circuit."""
        return self._cfg.failure_threshold

    @property
    def recovery_timeout(self) -> float:
        """Base seconds the circuit stays open before a probe."""
        return self._cfg.recovery_timeout

    @property
    def success_threshold(self) -> int:
        """HALF_OPEN successes that close the circuit."""
        return self._cfg.success_threshold

    @property
    def half_open_max_calls(self) -> int:
        """Probe leases admitted at once in HALF_OPEN."""
        return self._cfg.half_open_max_calls

    @property
    def clock(self) -> Clock:
        """The clock the breaker reads."""
        return self._cfg.clock

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN circuit whose timeout elapsed moves to HALF_OPEN now."""
        state = self._state
        if state is _OPEN and self._cfg.clock.now() >= self._open_until:
            self._transition(_HALF_OPEN, "recovery timeout elapsed")
            return _HALF_OPEN
        return state

    @property
    def retry_after(self) -> float:
        """Seconds until a probe would be admitted.

        0.0 when a call would be admitted now (CLOSED, DISABLED, HALF_OPEN with a free slot)
        and also when HALF_OPEN's slots are all taken (the wait is for a release, not for
        time: use :meth:`wait_until_ready`); ``inf`` when FORCED_OPEN.
        """
        state = self.state
        if state is _OPEN:
            return max(0.0, self._open_until - self._cfg.clock.now())
        if state is _FORCED_OPEN:
            return math.inf
        return 0.0

    def _effective_state(self) -> BreakerState:
        """The state as :attr:`state` would report it, without moving it."""
        if self._state is _OPEN and self._cfg.clock.now() >= self._open_until:
            return _HALF_OPEN
        return self._state

    # -- admission -----------------------------------------------------------------------
    def acquire(self) -> BreakerLease:
        """Admit one call or refuse it.

        Returns:
            A lease; report its outcome with ``success()``, ``failure()`` or ``release()``.

        Raises:
            CircuitOpenError: The circuit is open (``retry_after`` > 0, or ``inf`` when
                forced open), or HALF_OPEN with every probe slot taken (``retry_after`` 0.0).
        """
        if self._state is _CLOSED:
            self._calls += 1
            return BreakerLease(self, self._generation, False)
        return self._acquire_slow()

    def _acquire_slow(self) -> BreakerLease:
        state = self.state
        if state is _HALF_OPEN:
            if self._in_flight < self._cfg.half_open_max_calls:
                self._in_flight += 1
                self._calls += 1
                return BreakerLease(self, self._generation, True)
            self._rejections += 1
            raise CircuitOpenError(0.0, self._name)
        if state is _DISABLED:
            return BreakerLease(self, self._generation, False)
        if state is _CLOSED:
            self._calls += 1
            return BreakerLease(self, self._generation, False)
        self._rejections += 1
        raise CircuitOpenError(self.retry_after, self._name)

    # -- outcomes without a lease --------------------------------------------------------
    def record_success(self) -> None:
        """Record a success without a lease (e.g. a heartbeat on a HALF_OPEN probe link)."""
        state = self.state
        if state is _CLOSED or state is _HALF_OPEN:
            self._count_success()
        elif state is not _DISABLED:
            self._ignored += 1

    def record_failure(self, exc: BaseException | None = None) -> None:
        """Record a failure without a lease (``exc`` is kept for metrics)."""
        state = self.state
        if state is _CLOSED or state is _HALF_OPEN:
            self._count_failure(exc)
        elif state is not _DISABLED:
            self._ignored += 1

    # -- control -------------------------------------------------------------------------
    def reset(self) -> None:
        """Close the circuit and clear the current episode (totals in metrics are kept)."""
        if self._state is not _CLOSED:
            self._transition(_CLOSED, "reset")
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._current_timeout = self._cfg.recovery_timeout

    def force_open(self) -> None:
        """Refuse every call (``retry_after`` = ``inf``) until :meth:`reset`."""
        if self._state is not _FORCED_OPEN:
            self._transition(_FORCED_OPEN, "forced open")

    def disable(self) -> None:
        """Admit every call and record nothing until :meth:`reset`."""
        if self._state is not _DISABLED:
            self._transition(_DISABLED, "disabled")

    def add_listener(self, callback: Callable[[BreakerTransition], Any]) -> Unsubscribe:
        """Call ``callback(transition)`` on every state change; returns an unsubscribe handle.

        Sync callbacks run inline, async ones as tasks; one that raises or hangs is logged and
        isolated. Call :meth:`aclose` when done to await async listeners still running.
        """
        hooks = self._hooks
        if hooks is None:
            hooks = self._hooks = HookSet("breaker_listener")
        return hooks.add(callback)

    async def aclose(self) -> None:
        """Cancel and await async listener tasks that are still running."""
        if self._hooks is not None:
            await self._hooks.aclose()

    def metrics(self) -> BreakerMetrics:
        """Return a snapshot of the state and counters."""
        state = self.state
        return BreakerMetrics(
            name=self._name,
            state=state,
            calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            rejections=self._rejections,
            ignored=self._ignored,
            consecutive_failures=self._consecutive_failures,
            half_open_successes=self._half_open_successes,
            half_open_in_flight=self._in_flight,
            opened_at=self._opened_at,
            retry_after=self.retry_after,
            recovery_timeout=self._current_timeout,
            times_opened=self._times_opened,
            transitions=self._transitions,
            last_failure=self._last_failure,
        )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self._name!r}, state={self._effective_state().value}, "
            f"consecutive_failures={self._consecutive_failures})"
        )

    # -- internals -----------------------------------------------------------------------
    def _classify(self, exc: BaseException) -> bool | None:
        """True: counts as success; False: counts as failure; None: neutral."""
        if not isinstance(exc, Exception):
            return None
        types = self._cfg.failure_types
        if types is not None:
            return not isinstance(exc, types)
        try:
            return not self._cfg.failure_predicate(exc)  # type: ignore[misc]
        except Exception as predicate_error:
            _log.warning(
                "resilient_conn.breaker_predicate_failed",
                breaker=self._name,
                error=redact_text(repr(predicate_error)),
            )
            return False

    def _outcome(self, ok: bool, exc: BaseException | None) -> None:
        """Record the outcome of a call that was not a probe of the current episode."""
        state = self._state
        if state is _CLOSED:
            if ok:
                self._successes += 1
                self._consecutive_failures = 0
            else:
                self._count_failure(exc)
        elif state is not _DISABLED:
            self._ignored += 1

    def _settle(
        self, generation: int, probe: bool, ok: bool | None, exc: BaseException | None
    ) -> None:
        if probe and generation == self._generation:  # a probe of the current episode
            self._in_flight -= 1
            self._pulse()
            if ok is True:
                self._count_success()
            elif ok is False:
                self._count_failure(exc)
        elif ok is not None:
            self._outcome(ok, exc)

    def _count_success(self) -> None:
        self._successes += 1
        if self._state is _HALF_OPEN:
            self._half_open_successes += 1
            if self._half_open_successes >= self._cfg.success_threshold:
                self._transition(_CLOSED, f"{self._half_open_successes} successful probe(s)")
        else:
            self._consecutive_failures = 0

    def _count_failure(self, exc: BaseException | None) -> None:
        self._failures += 1
        self._consecutive_failures += 1
        if exc is not None:
            self._last_failure = redact_text(repr(exc))[:200]
        if self._state is _HALF_OPEN:
            cfg = self._cfg
            self._current_timeout = min(
                cfg.max_recovery_timeout, self._current_timeout * cfg.recovery_multiplier
            )
            self._transition(_OPEN, "probe failed")
        elif self._consecutive_failures >= self._cfg.failure_threshold:
            self._current_timeout = self._cfg.recovery_timeout
            self._transition(_OPEN, f"{self._consecutive_failures} consecutive failures")

    def _pulse(self) -> None:
        event = self._changed
        if event is not None:
            self._changed = None
            event.set()

    def _transition(self, new: BreakerState, reason: str) -> None:
        """The one place where the state changes."""
        old = self._state
        if new not in TRANSITIONS[old]:
            raise RuntimeError(f"illegal breaker transition {old.name} -> {new.name} (a bug)")
        now = self._cfg.clock.now()
        self._state = new
        self._generation += 1
        self._transitions += 1
        self._in_flight = 0
        self._half_open_successes = 0
        if new is _OPEN:
            self._times_opened += 1
            self._opened_at = now
            self._open_until = now + self._current_timeout
        elif new is _CLOSED:
            self._consecutive_failures = 0
            self._current_timeout = self._cfg.recovery_timeout
            self._opened_at = None
        elif new is _FORCED_OPEN:
            self._opened_at = now
        self._pulse()
        log = _log.warning if new is _OPEN or new is _FORCED_OPEN else _log.info
        log(
            "resilient_conn.breaker_transition",
            breaker=self._name,
            old=old.value,
            new=new.value,
            reason=reason,
        )
        hooks = self._hooks
        if hooks is not None and len(hooks):
            hooks.emit(BreakerTransition(old, new, now, reason, self._name))
