"""Breaker + retry in one object (:class:`ResiliencePolicy`) and a registry of named policies.

Every attempt of :meth:`ResiliencePolicy.call` goes through the policy's breaker:

* The call returns: success, recorded on the breaker.
* The call raises a retryable error (``retry_on``): the breaker records it (per its own
  ``failure_on``); the policy sleeps the next backoff delay and tries again, or gives up with
  :class:`~resilient_conn.RetryError` (``from`` that error) when attempts or the deadline run
  out. A non-retryable error propagates unchanged; cancellation is never retried.
* The breaker refuses (:class:`~resilient_conn.CircuitOpenError`): the policy **fails fast**,
  raising that CircuitOpenError at once (``retry_after`` tells the caller when to come back),
  chained ``from`` the last real error of the call, if there was one. It waits only when the
  caller asked to wait: with ``wait_for_breaker=True``, or with a ``deadline`` that the wait
  fits. Then the refusal uses up an attempt, and if another attempt remains and
  ``max(retry_after, next backoff delay)`` fits the deadline (if any), the policy sleeps that
  long and tries again; otherwise it fails fast as above. A forced-open breaker
  (``retry_after`` = ``inf``) always fails fast.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import CircuitOpenError, ConfigError, RetryError
from . import config
from .backoff import Backoff
from .breaker import BreakerMetrics, CircuitBreaker
from .retry import RetryMetrics, RetryOn, RetryStats, retry_rule

__all__ = ["PolicyMetrics", "PolicyRegistry", "ResiliencePolicy"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PolicyMetrics:
    """A snapshot of a policy: its breaker's metrics and its retry counters.

    Attributes:
        name: The policy's name, if any.
        breaker: The breaker's :class:`~resilient_conn.BreakerMetrics`.
        retry: The policy's :class:`~resilient_conn.retry.RetryMetrics`.
        fail_fast: Calls that ended with CircuitOpenError (not asked to wait, or the wait
            did not fit).
    """

    name: str | None
    breaker: BreakerMetrics
    retry: RetryMetrics
    fail_fast: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "name": self.name,
            "breaker": self.breaker.to_dict(),
            "retry": self.retry.to_dict(),
            "fail_fast": self.fail_fast,
        }


class ResiliencePolicy:
    """Retries gated by a circuit breaker, usable as ``await policy.call(fn, ...)`` or ``@policy``.

    Args:
        name: Names the policy (and its default breaker) in errors, metrics and logs.
        breaker: The breaker (default ``CircuitBreaker(name=name, clock=clock)``: opens after
            5 failures, probes after 60 s).
        backoff: Delays between attempts (default ``Backoff()``: full jitter, 1 s to 60 s).
        max_attempts: Attempts per call, ``>= 1`` (default
            :data:`~resilient_conn.config.RETRY_MAX_ATTEMPTS` = 3).
        retry_on: Exception classes or a predicate selecting retryable errors (default any
            ``Exception``; a CircuitOpenError from the policy's own breaker is handled as
            described in the module docs).
        deadline: Total seconds per call; a sleep that would cross it is not started. A
            deadline also lets a call wait for an open breaker when the wait fits it.
        wait_for_breaker: Wait out an open breaker (within ``max_attempts`` and the deadline)
            instead of failing fast with ``CircuitOpenError`` (default False).
        clock: Clock for ``now()`` and ``sleep()`` (default: the breaker's clock, else the
            system clock).

    Raises:
        ConfigError: A bad option (named in the message).
    """

    __slots__ = (
        "_backoff",
        "_breaker",
        "_clock",
        "_deadline",
        "_fail_fast",
        "_max_attempts",
        "_name",
        "_retryable",
        "_stats",
        "_wait_for_breaker",
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        retry_on: RetryOn = (Exception,),
        deadline: float | None = None,
        clock: Clock | None = None,
        wait_for_breaker: bool = False,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ConfigError(f"breaker must be a CircuitBreaker, got {breaker!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ConfigError(f"backoff must be a Backoff, got {backoff!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"clock must have now() and sleep(), got {clock!r}")
        self._name = name
        self._clock: Clock = clock or (breaker.clock if breaker is not None else SYSTEM_CLOCK)
        self._breaker = breaker or CircuitBreaker(name=name, clock=self._clock)
        self._backoff = backoff or Backoff()
        self._max_attempts = int(
            config.resolve("retry_max_attempts", max_attempts, param="max_attempts")
        )
        self._retryable = retry_rule(retry_on)
        self._deadline = None if deadline is None else config.check_positive(deadline, "deadline")
        if not isinstance(wait_for_breaker, bool):
            raise ConfigError(f"wait_for_breaker must be a bool, got {wait_for_breaker!r}")
        self._wait_for_breaker = wait_for_breaker
        self._stats = RetryStats()
        self._fail_fast = 0

    @property
    def name(self) -> str | None:
        """The policy's name, if any."""
        return self._name

    @property
    def breaker(self) -> CircuitBreaker:
        """The policy's circuit breaker."""
        return self._breaker

    @property
    def wait_for_breaker(self) -> bool:
        """True if calls wait out an open breaker instead of failing fast."""
        return self._wait_for_breaker

    @property
    def backoff(self) -> Backoff:
        """The delay schedule between attempts."""
        return self._backoff

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` with retries, each attempt through the breaker.

        Returns:
            What ``fn`` returned.

        Raises:
            CircuitOpenError: The breaker refused, and the caller did not ask to wait
                (``wait_for_breaker``, a ``deadline``) or the wait did not fit.
            RetryError: Attempts or deadline exhausted; ``__cause__`` is the last error.
            Exception: A non-retryable error of ``fn``, unchanged.
        """
        clock, breaker, stats = self._clock, self._breaker, self._stats
        start = 0.0 if self._deadline is None else clock.now()
        delays: Iterator[float] | None = None  # created on the first failure only
        last_error: Exception | None = None
        attempt = 0
        waits = self._wait_for_breaker or self._deadline is not None
        while True:
            attempt += 1
            stats.attempts += 1
            try:
                lease = breaker.acquire()
            except CircuitOpenError as refused:
                if not waits:
                    self._fail_fast += 1
                    raise refused from last_error
                if delays is None:
                    delays = self._backoff.delays()
                wait = max(refused.retry_after, next(delays))
                if attempt >= self._max_attempts or not self._fits(start, wait):
                    self._fail_fast += 1
                    raise refused from last_error
                stats.retries += 1
                await clock.sleep(wait)
                continue
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                lease.report(exc)
                if not isinstance(exc, Exception):
                    raise
                if not self._retryable(exc):
                    stats.not_retried += 1
                    raise
                last_error = exc
                if delays is None:
                    delays = self._backoff.delays()
                delay = next(delays)
                reason = ""
                if attempt >= self._max_attempts:
                    reason = f"max_attempts={self._max_attempts} reached"
                elif not self._fits(start, delay):
                    reason = f"deadline of {self._deadline:g}s would be exceeded"
                if reason:
                    stats.exhaustions += 1
                    raise RetryError(attempt, exc, reason) from exc
                if not waits and breaker.retry_after > 0:
                    continue  # this failure opened the circuit: no sleep, the refusal is next
                stats.retries += 1
                await clock.sleep(delay)
                continue
            lease.success()
            stats.successes += 1
            return result

    def _fits(self, start: float, wait: float) -> bool:
        """True if sleeping ``wait`` more seconds stays within the deadline."""
        if math.isinf(wait):
            return False
        return self._deadline is None or self._clock.now() - start + wait <= self._deadline

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function so every call goes through :meth:`call`."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"a ResiliencePolicy decorates async functions, got {fn!r}")

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper

    def metrics(self) -> PolicyMetrics:
        """Return a snapshot of the breaker's metrics and the retry counters."""
        return PolicyMetrics(
            self._name, self._breaker.metrics(), self._stats.snapshot(), self._fail_fast
        )

    def reset(self) -> None:
        """Reset the breaker (CLOSED) and zero the retry counters."""
        self._breaker.reset()
        self._stats.reset()
        self._fail_fast = 0

    def __repr__(self) -> str:
        return f"ResiliencePolicy(name={self._name!r}, breaker={self._breaker!r})"


class PolicyRegistry:
    """Named :class:`ResiliencePolicy` objects, created once and shared.

    Example::

        policies = PolicyRegistry()
        db = policies.create("db", max_attempts=5)
        ...
        policies.get("db") is db
    """

    __slots__ = ("_policies",)

    def __init__(self) -> None:
        self._policies: dict[str, ResiliencePolicy] = {}

    def create(self, name: str, **kwargs: Any) -> ResiliencePolicy:
        """Create and register a policy named ``name`` (kwargs as for ResiliencePolicy).

        Raises:
            ConfigError: A policy with that name exists already, or an option is bad.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        if name in self._policies:
            raise ConfigError(f"a policy named {name!r} exists already")
        policy = ResiliencePolicy(name, **kwargs)
        self._policies[name] = policy
        return policy

    def get(self, name: str) -> ResiliencePolicy:
        """Return the policy named ``name``.

        Raises:
            KeyError: No such policy (the message lists the known names).
        """
        try:
            return self._policies[name]
        except KeyError:
            known = ", ".join(sorted(self._policies)) or "none"
            raise KeyError(f"no policy named {name!r} (known: {known})") from None

    def get_or_create(self, name: str, **kwargs: Any) -> ResiliencePolicy:
        """Return the policy named ``name``, creating it with ``kwargs`` if missing."""
        existing = self._policies.get(name)
        return existing if existing is not None else self.create(name, **kwargs)

    def all_metrics(self) -> dict[str, PolicyMetrics]:
        """Return every policy's metrics, by name."""
        return {name: policy.metrics() for name, policy in self._policies.items()}

    def reset_all(self) -> None:
        """Reset every policy (breakers closed, counters zeroed)."""
        for policy in self._policies.values():
            policy.reset()

    def clear(self) -> None:
        """Forget every policy."""
        self._policies.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._policies

    def __len__(self) -> int:
        return len(self._policies)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._policies))

    def __repr__(self) -> str:
        return f"PolicyRegistry({sorted(self._policies)!r})"
