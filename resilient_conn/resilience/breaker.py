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
import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import CircuitOpenError, ConfigError
from .._core.hooks import HookSet, Unsubscribe
from .._core.log import get_logger, redact_text
from . import config

__all__ = [
    "BreakerLease",
    "BreakerMetrics",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "FailurePredicate",
]

P = ParamSpec("P")
T = TypeVar("T")

FailurePredicate = Callable[[BaseException], bool]
"""Decides whether an exception counts as a failure of the guarded service."""

_log = get_logger()


class BreakerState(enum.Enum):
    """Where a :class:`CircuitBreaker` is."""

    CLOSED = "closed"
    """Calls pass; consecutive failures are counted."""
    OPEN = "open"
    """Calls are refused until the recovery timeout elapses."""
    HALF_OPEN = "half_open"
    """A limited number of probe calls are admitted to test the service."""
    FORCED_OPEN = "forced_open"
    """Refuses every call until :meth:`CircuitBreaker.reset`."""
    DISABLED = "disabled"
    """Admits every call and records nothing until :meth:`CircuitBreaker.reset`."""


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED

TRANSITIONS: dict[BreakerState, frozenset[BreakerState]] = {
    _CLOSED: frozenset({_OPEN, _FORCED_OPEN, _DISABLED}),
    _OPEN: frozenset({_HALF_OPEN, _CLOSED, _FORCED_OPEN, _DISABLED}),
    _HALF_OPEN: frozenset({_CLOSED, _OPEN, _FORCED_OPEN, _DISABLED}),
    _FORCED_OPEN: frozenset({_CLOSED, _DISABLED}),
    _DISABLED: frozenset({_CLOSED, _FORCED_OPEN}),
}
"""Legal moves: ``TRANSITIONS[old]`` is the set of states ``old`` may move to."""


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One state change of a breaker, as listeners see it.

    Attributes:
        old: The state left.
        new: The state entered.
        at: The breaker clock's reading (monotonic seconds) at the change.
        reason: Why, in a few words (``"5 consecutive failures"``, ``"reset"``).
        name: The breaker's name, if it has one.
    """

    old: BreakerState
    new: BreakerState
    at: float
    reason: str
    name: str | None


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker's state and counters (totals since construction).

    Attributes:
        name: The breaker's name, if any.
        state: The state (an elapsed OPEN reads HALF_OPEN).
        calls: Calls admitted (DISABLED admits without counting).
        successes: Successes that counted.
        failures: Failures that counted.
        rejections: Calls refused with :class:`~resilient_conn.CircuitOpenError`.
        ignored: Outcomes reported when they could not count (see the module docs).
        consecutive_failures: Failures in a row in the current episode.
        half_open_successes: Successes counted in the current HALF_OPEN episode.
        half_open_in_flight: Probe leases outstanding.
        opened_at: Clock reading when the circuit last opened (``None`` when CLOSED).
        retry_after: Seconds until a probe is admitted (``inf`` when FORCED_OPEN).
        recovery_timeout: The open time in force (grows with ``recovery_multiplier``).
        times_opened: How often the circuit opened (including re-opens from HALF_OPEN).
        transitions: How many state changes happened.
        last_failure: ``repr`` of the last counted failure's exception (redacted), if any.
    """

    name: str | None
    state: BreakerState
    calls: int
    successes: int
    failures: int
    rejections: int
    ignored: int
    consecutive_failures: int
    half_open_successes: int
    half_open_in_flight: int
    opened_at: float | None
    retry_after: float
    recovery_timeout: float
    times_opened: int
    transitions: int
    last_failure: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (state as its value, an infinite ``retry_after`` as None)."""
        return {
            "name": self.name,
            "state": self.state.value,
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "rejections": self.rejections,
            "ignored": self.ignored,
            "consecutive_failures": self.consecutive_failures,
            "half_open_successes": self.half_open_successes,
            "half_open_in_flight": self.half_open_in_flight,
            "opened_at": self.opened_at,
            "retry_after": None if math.isinf(self.retry_after) else self.retry_after,
            "recovery_timeout": self.recovery_timeout,
            "times_opened": self.times_opened,
            "transitions": self.transitions,
            "last_failure": self.last_failure,
        }


class BreakerLease:
    """Permission for one call, returned by :meth:`CircuitBreaker.acquire`.

    Report the outcome with exactly one of :meth:`success`, :meth:`failure` or
    :meth:`release`; only the first call of any of them counts, later ones do nothing. A
    probe lease (admitted in HALF_OPEN) holds one of the ``half_open_max_calls`` slots until
    then. Also a sync context manager: ``with breaker.acquire():`` reports like ``async with
    breaker:`` does.
    """

    __slots__ = ("_breaker", "_done", "_generation", "_probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool) -> None:
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


class CircuitBreaker:
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
        "_calls",
        "_changed",
        "_clock",
        "_consecutive_failures",
        "_current_timeout",
        "_failure_predicate",
        "_failure_threshold",
        "_failure_types",
        "_failures",
        "_generation",
        "_half_open_max_calls",
        "_half_open_successes",
        "_hooks",
        "_ignored",
        "_in_flight",
        "_last_failure",
        "_max_recovery_timeout",
        "_name",
        "_open_until",
        "_opened_at",
        "_recovery_multiplier",
        "_recovery_timeout",
        "_rejections",
        "_state",
        "_success_threshold",
        "_successes",
        "_task_probes",
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
        self._failure_threshold = int(
            resolve("breaker_failure_threshold", failure_threshold, param="failure_threshold")
        )
        self._recovery_timeout = float(
            resolve("breaker_recovery_timeout", recovery_timeout, param="recovery_timeout")
        )
        self._success_threshold = int(
            resolve("breaker_success_threshold", success_threshold, param="success_threshold")
        )
        self._half_open_max_calls = int(
            resolve("breaker_half_open_max_calls", half_open_max_calls, param="half_open_max_calls")
        )
        multiplier = config.check_positive(recovery_multiplier, "recovery_multiplier")
        if multiplier < 1.0:
            raise ConfigError(f"recovery_multiplier must be >= 1, got {recovery_multiplier!r}")
        if max_recovery_timeout is None:
            max_recovery_timeout = self._recovery_timeout * 10.0
        config.check_non_negative(max_recovery_timeout, "max_recovery_timeout")
        if max_recovery_timeout < self._recovery_timeout:
            raise ConfigError(
                f"max_recovery_timeout must be >= recovery_timeout ({self._recovery_timeout!r}), "
                f"got {max_recovery_timeout!r}"
            )
        self._recovery_multiplier = float(multiplier)
        self._max_recovery_timeout = float(max_recovery_timeout)
        self._failure_types, self._failure_predicate = _failure_rule(failure_on)
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"clock must have now() and sleep(), got {clock!r}")
        self._clock: Clock = SYSTEM_CLOCK if clock is None else clock
        self._name = name
        self._hooks: HookSet[BreakerTransition] = HookSet("breaker_listener")
        self._changed: asyncio.Event | None = None
        self._task_probes: dict[object, list[BreakerLease]] = {}
        self._state = _CLOSED
        self._generation = 0
        self._in_flight = 0
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._current_timeout = self._recovery_timeout
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
        return self._failure_threshold

    @property
    def recovery_timeout(self) -> float:
        """Base seconds the circuit stays open before a probe."""
        return self._recovery_timeout

    @property
    def success_threshold(self) -> int:
        """HALF_OPEN successes that close the circuit."""
        return self._success_threshold

    @property
    def half_open_max_calls(self) -> int:
        """Probe leases admitted at once in HALF_OPEN."""
        return self._half_open_max_calls

    @property
    def clock(self) -> Clock:
        """The clock the breaker reads."""
        return self._clock

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN circuit whose timeout elapsed moves to HALF_OPEN now."""
        state = self._state
        if state is _OPEN and self._clock.now() >= self._open_until:
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
            return max(0.0, self._open_until - self._clock.now())
        if state is _FORCED_OPEN:
            return math.inf
        return 0.0

    def _effective_state(self) -> BreakerState:
        """The state as :attr:`state` would report it, without moving it."""
        if self._state is _OPEN and self._clock.now() >= self._open_until:
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
            if self._in_flight < self._half_open_max_calls:
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

    async def __aenter__(self) -> None:
        if self._state is _CLOSED:
            self._calls += 1
            return
        lease = self._acquire_slow()
        if lease._probe:
            self._task_probes.setdefault(asyncio.current_task(), []).append(lease)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task_probes:
            leases = self._task_probes.get(asyncio.current_task())
            if leases:
                lease = leases.pop()
                if not leases:
                    del self._task_probes[asyncio.current_task()]
                lease.report(exc)
                return
        if exc is None:
            if self._state is _CLOSED:
                self._successes += 1
                self._consecutive_failures = 0
            else:
                self._outcome(True, None)
            return
        verdict = self._classify(exc)
        if verdict is not None:
            self._outcome(verdict, exc)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``await fn(*args, **kwargs)`` through the breaker.

        Returns:
            What ``fn`` returned.

        Raises:
            CircuitOpenError: The call was refused (``fn`` was not called).
        """
        if self._state is not _CLOSED:
            lease = self._acquire_slow()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                lease.report(exc)
                raise
            lease.success()
            return result
        self._calls += 1
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            verdict = self._classify(exc)
            if verdict is not None:
                self._outcome(verdict, exc)
            raise
        if self._state is _CLOSED:
            self._successes += 1
            self._consecutive_failures = 0
        else:
            self._outcome(True, None)
        return result

    async def wait_until_ready(self) -> None:
        """Return once a call would be admitted (never polls).

        OPEN: sleeps ``retry_after`` through the clock, then checks again. HALF_OPEN with every
        slot taken, and FORCED_OPEN: waits until a slot is released or the state changes
        (``reset()``). Returns at once when CLOSED, DISABLED or HALF_OPEN with a free slot.
        Being ready does not reserve the slot: another caller may take it first, so
        ``acquire()`` may still raise :class:`~resilient_conn.CircuitOpenError`.
        """
        clock = self._clock
        while True:
            state = self.state
            if state is _CLOSED or state is _DISABLED:
                return
            if state is _HALF_OPEN and self._in_flight < self._half_open_max_calls:
                return
            if state is _OPEN:
                await clock.sleep(self._open_until - clock.now())
                continue
            event = self._changed
            if event is None:
                event = self._changed = asyncio.Event()
            await event.wait()

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
        self._current_timeout = self._recovery_timeout

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
        return self._hooks.add(callback)

    async def aclose(self) -> None:
        """Cancel and await async listener tasks that are still running."""
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
        types = self._failure_types
        if types is not None:
            return not isinstance(exc, types)
        try:
            return not self._failure_predicate(exc)  # type: ignore[misc]
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
            if self._half_open_successes >= self._success_threshold:
                self._transition(_CLOSED, f"{self._half_open_successes} successful probe(s)")
        else:
            self._consecutive_failures = 0

    def _count_failure(self, exc: BaseException | None) -> None:
        self._failures += 1
        self._consecutive_failures += 1
        if exc is not None:
            self._last_failure = redact_text(repr(exc))[:200]
        if self._state is _HALF_OPEN:
            self._current_timeout = min(
                self._max_recovery_timeout, self._current_timeout * self._recovery_multiplier
            )
            self._transition(_OPEN, "probe failed")
        elif self._consecutive_failures >= self._failure_threshold:
            self._current_timeout = self._recovery_timeout
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
        now = self._clock.now()
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
            self._current_timeout = self._recovery_timeout
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
        if len(self._hooks):
            self._hooks.emit(BreakerTransition(old, new, now, reason, self._name))


def _failure_rule(
    failure_on: object,
) -> tuple[tuple[type[BaseException], ...] | None, FailurePredicate | None]:
    """Split ``failure_on`` into (types, None) or (None, predicate), validating it."""
    if isinstance(failure_on, type) and issubclass(failure_on, BaseException):
        return (failure_on,), None
    if isinstance(failure_on, tuple):
        for item in failure_on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise ConfigError(
                    f"failure_on must hold exception classes or be a predicate, got {item!r}"
                )
        return failure_on, None
    if callable(failure_on):
        return None, cast(FailurePredicate, failure_on)
    raise ConfigError(
        f"failure_on must be a tuple of exception classes or a predicate, got {failure_on!r}"
    )
