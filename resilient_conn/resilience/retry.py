"""Retry an async operation with backoff: :func:`retry` and the :func:`retrying` decorator.

Rules:

* Only ``Exception`` instances that ``retry_on`` accepts are retried; any other exception
  propagates unchanged at once. Cancellation (and every ``BaseException`` that is not an
  ``Exception``) is never retried, whatever ``retry_on`` says.
* When ``max_attempts`` attempts failed, or the next sleep would cross ``deadline``,
  :class:`~resilient_conn.RetryError` is raised ``from`` the last error.
* The deadline is checked between attempts; it does not interrupt a running attempt.
* Every sleep goes through the clock, so :func:`~resilient_conn.set_testing` (or a fake
  clock) makes retries instant.
* Counters: :func:`retry_metrics` totals every retry in the process; each decorated function
  keeps its own in ``fn.retry_stats``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import ConfigError, RetryError
from .._core.log import get_logger, redact_text
from . import config
from .backoff import Backoff, JitterStrategy

__all__ = [
    "RetryMetrics",
    "RetryPredicate",
    "RetryState",
    "RetryStats",
    "RetryingFunction",
    "reset_retry_metrics",
    "retry",
    "retry_metrics",
    "retrying",
]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

RetryPredicate = Callable[[BaseException], bool]
"""Decides whether an exception is worth another attempt."""

RetryOn = tuple[type[BaseException], ...] | type[BaseException] | RetryPredicate

_log = get_logger()


@dataclass(frozen=True, slots=True)
class RetryState:
    """What ``before_sleep`` is told before each wait.

    Attributes:
        attempt: The attempt that just failed (1-based).
        delay: Seconds about to be slept before the next attempt.
        error: The exception of the failed attempt.
        elapsed: Seconds since the first attempt started (by the clock).
    """

    attempt: int
    delay: float
    error: BaseException
    elapsed: float


@dataclass(frozen=True, slots=True)
class RetryMetrics:
    """A snapshot of retry counters.

    Attributes:
        attempts: Attempts started.
        successes: Calls that eventually returned.
        retries: Sleeps taken before another attempt.
        exhaustions: Calls that gave up (attempts or deadline) with ``RetryError``.
        not_retried: Calls ended by an error ``retry_on`` rejected.
    """

    attempts: int = 0
    successes: int = 0
    retries: int = 0
    exhaustions: int = 0
    not_retried: int = 0

    def to_dict(self) -> dict[str, int]:
        """Return the counters as a dict."""
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "retries": self.retries,
            "exhaustions": self.exhaustions,
            "not_retried": self.not_retried,
        }


class RetryStats:
    """Mutable retry counters (bounded: five integers); :meth:`snapshot` freezes them."""

    __slots__ = ("attempts", "exhaustions", "not_retried", "retries", "successes")

    def __init__(self) -> None:
        self.attempts = self.successes = self.retries = self.exhaustions = self.not_retried = 0

    def snapshot(self) -> RetryMetrics:
        """Return the counters as a frozen :class:`RetryMetrics`."""
        return RetryMetrics(
            self.attempts, self.successes, self.retries, self.exhaustions, self.not_retried
        )

    def reset(self) -> None:
        """Set every counter back to zero."""
        self.attempts = self.successes = self.retries = self.exhaustions = self.not_retried = 0


_TOTALS = RetryStats()


def retry_metrics() -> RetryMetrics:
    """Return the process-wide retry counters (every :func:`retry` and decorated call)."""
    return _TOTALS.snapshot()


def reset_retry_metrics() -> None:
    """Zero the process-wide retry counters."""
    _TOTALS.reset()


def retry_rule(retry_on: object, param: str = "retry_on") -> Callable[[Exception], bool]:
    """Turn exception types (a class or tuple) or a predicate into one predicate.

    Raises:
        ConfigError: ``retry_on`` is neither (the message names ``param``).
    """
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        retry_on = (retry_on,)
    if isinstance(retry_on, tuple):
        for item in retry_on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise ConfigError(f"{param} must hold exception classes, got {item!r}")
        types = retry_on
        return lambda exc: isinstance(exc, types)
    if callable(retry_on):
        return cast(Callable[[Exception], bool], retry_on)
    raise ConfigError(f"{param} must be exception classes or a predicate, got {retry_on!r}")


def _make_backoff(
    backoff: Backoff | None,
    initial_delay: float | None,
    max_delay: float | None,
    jitter: JitterStrategy | str | None,
) -> Backoff:
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigError(f"backoff must be a Backoff, got {backoff!r}")
    if backoff is None:
        return Backoff(initial_delay, max_delay, jitter=jitter)
    changes: dict[str, Any] = {
        k: v
        for k, v in (("initial_delay", initial_delay), ("max_delay", max_delay), ("jitter", jitter))
        if v is not None
    }
    return backoff.with_(**changes) if changes else backoff


class _Retrier:
    """Validated options shared by :func:`retry` and :func:`retrying`."""

    __slots__ = ("backoff", "before_sleep", "clock", "deadline", "max_attempts", "retryable")

    def __init__(
        self,
        max_attempts: int | None,
        initial_delay: float | None,
        max_delay: float | None,
        jitter: JitterStrategy | str | None,
        backoff: Backoff | None,
        retry_on: RetryOn,
        deadline: float | None,
        before_sleep: Callable[[RetryState], Any] | None,
        clock: Clock | None,
    ) -> None:
        self.max_attempts = int(
            config.resolve("retry_max_attempts", max_attempts, param="max_attempts")
        )
        self.backoff = _make_backoff(backoff, initial_delay, max_delay, jitter)
        self.retryable = retry_rule(retry_on)
        self.deadline = None if deadline is None else config.check_positive(deadline, "deadline")
        if before_sleep is not None and not callable(before_sleep):
            raise ConfigError(f"before_sleep must be callable, got {before_sleep!r}")
        self.before_sleep = before_sleep
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"clock must have now() and sleep(), got {clock!r}")
        self.clock: Clock = SYSTEM_CLOCK if clock is None else clock

    async def run(self, fn: Callable[[], Awaitable[T]], stats: RetryStats | None) -> T:
        clock = self.clock
        start = clock.now()
        delays = self.backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            _TOTALS.attempts += 1
            if stats is not None:
                stats.attempts += 1
            try:
                result = await fn()
            except Exception as exc:
                delay = self._wait_or_raise(exc, attempt, next(delays), start, stats)
                if self.before_sleep is not None:
                    state = RetryState(attempt, delay, exc, clock.now() - start)
                    await _call_hook(self.before_sleep, state)
                await clock.sleep(delay)
                continue
            _TOTALS.successes += 1
            if stats is not None:
                stats.successes += 1
            return result

    def _wait_or_raise(
        self, exc: Exception, attempt: int, delay: float, start: float, stats: RetryStats | None
    ) -> float:
        """Return the delay before the next attempt, or raise (re-raise or RetryError)."""
        if not self.retryable(exc):
            _TOTALS.not_retried += 1
            if stats is not None:
                stats.not_retried += 1
            raise exc
        reason = ""
        if attempt >= self.max_attempts:
            reason = f"max_attempts={self.max_attempts} reached"
        elif self.deadline is not None:
            elapsed = self.clock.now() - start
            if elapsed + delay > self.deadline:
                reason = (
                    f"deadline of {self.deadline:g}s would be exceeded "
                    f"(elapsed {elapsed:.3f}s + next delay {delay:.3f}s)"
                )
        if reason:
            _TOTALS.exhaustions += 1
            if stats is not None:
                stats.exhaustions += 1
            raise RetryError(attempt, exc, reason) from exc
        _TOTALS.retries += 1
        if stats is not None:
            stats.retries += 1
        return delay


async def _call_hook(hook: Callable[[RetryState], Any], state: RetryState) -> None:
    """Run ``before_sleep`` (sync or async); an error in it is logged, not raised."""
    try:
        result = hook(state)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        _log.warning(
            "resilient_conn.hook_failed",
            hook="before_sleep",
            callback=getattr(hook, "__qualname__", repr(hook)),
            error=redact_text(repr(exc)),
        )


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    max_attempts: int | None = None,
    initial_delay: float | None = None,
    max_delay: float | None = None,
    jitter: JitterStrategy | str | None = None,
    backoff: Backoff | None = None,
    retry_on: RetryOn = (Exception,),
    deadline: float | None = None,
    before_sleep: Callable[[RetryState], Any] | None = None,
    clock: Clock | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, sleeping a backoff delay between attempts.

    Args:
        fn: A zero-argument async callable (use ``functools.partial`` or a lambda for args).
        max_attempts: Attempts in total, ``>= 1``
            (default :data:`~resilient_conn.config.RETRY_MAX_ATTEMPTS` = 3).
        initial_delay: Overrides the backoff's first delay (default 1.0 s).
        max_delay: Overrides the backoff's cap (default 60.0 s).
        jitter: Overrides the backoff's jitter strategy (default ``"full"``).
        backoff: The delay schedule (default ``Backoff()``); the three options above, when
            given, are applied on top of it.
        retry_on: Exception classes or a predicate selecting retryable errors (default: any
            ``Exception``). Cancellation is never retried.
        deadline: Total seconds; a sleep that would end after it is not started.
        before_sleep: Called (sync or async) with a :class:`RetryState` before each sleep;
            an exception from it is logged and ignored.
        clock: Clock for ``now()`` and ``sleep()`` (default: the system clock).

    Returns:
        What ``fn`` returned.

    Raises:
        RetryError: Attempts or deadline exhausted; ``__cause__`` is the last error.
        ConfigError: A bad option (named in the message).
        Exception: A non-retryable error of ``fn``, unchanged.
    """
    retrier = _Retrier(
        max_attempts, initial_delay, max_delay, jitter, backoff, retry_on, deadline, before_sleep,
        clock,
    )  # fmt: skip
    return await retrier.run(fn, None)


class RetryingFunction(Protocol, Generic[P, T_co]):
    """An async function wrapped by :func:`retrying`; ``retry_stats`` holds its counters."""

    retry_stats: RetryStats

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T_co]:
        """Call the wrapped function with retries."""
        ...


def retrying(
    *,
    max_attempts: int | None = None,
    initial_delay: float | None = None,
    max_delay: float | None = None,
    jitter: JitterStrategy | str | None = None,
    backoff: Backoff | None = None,
    retry_on: RetryOn = (Exception,),
    deadline: float | None = None,
    before_sleep: Callable[[RetryState], Any] | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], RetryingFunction[P, T]]:
    """Decorate an async function so every call retries like :func:`retry`.

    Options are validated once, when decorating. The wrapped function gets a
    ``retry_stats`` attribute (:class:`RetryStats`) counting its own attempts.

    Example::

        @retrying(max_attempts=5, retry_on=(ConnectionError,))
        async def fetch(url: str) -> bytes: ...
    """
    retrier = _Retrier(
        max_attempts, initial_delay, max_delay, jitter, backoff, retry_on, deadline, before_sleep,
        clock,
    )  # fmt: skip

    def decorate(fn: Callable[P, Awaitable[T]]) -> RetryingFunction[P, T]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@retrying needs an async function, got {fn!r}")
        stats = RetryStats()

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await retrier.run(functools.partial(fn, *args, **kwargs), stats)

        wrapper.retry_stats = stats  # type: ignore[attr-defined]
        return cast(RetryingFunction[P, T], wrapper)

    return decorate
