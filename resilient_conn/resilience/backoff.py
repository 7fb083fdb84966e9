"""Delay schedules for reconnects and retries: exponential growth, a cap, and jitter.

A :class:`Backoff` is a small immutable value: pass it around, compare it, copy it with
:meth:`Backoff.with_`, and iterate :meth:`Backoff.delays` for a fresh schedule. It never
sleeps and never reads a clock; the caller sleeps (through its :class:`~resilient_conn.Clock`).

With ``exp(n) = min(max_delay, initial_delay * multiplier ** n)`` for the 0-based attempt
``n``, the strategies draw:

=================  ==========================================================================
``"none"``         ``exp(n)`` (no randomness)
``"full"``         ``U(0, exp(n))`` (AWS "full jitter"; the default)
``"equal"``        ``exp(n) / 2 + U(0, exp(n) / 2)``
``"decorrelated"`` ``U(initial_delay, min(max_delay, 3 * previous))`` (AWS "decorrelated")
``"proportional"`` ``U(exp(n) * (1 - r), min(max_delay, exp(n) * (1 + r)))``, ``r`` =
                   ``jitter_ratio`` (the original "±10 %" design)
``"banded"``       one draw ``u = U(0, 1)`` per schedule; windows of width ``exp(n)`` are laid
                   end to end from the start and attempt ``n`` falls ``u`` of the way through
                   its window: delay 0 is ``u * exp(0)``, delay n is
                   ``exp(n-1) + u * (exp(n) - exp(n-1))`` (so within ``[0, exp(n)]``, like
                   ``"full"``). Many schedules started together (clients that lost one server
                   at once) fill every window evenly instead of bunching early, as full
                   jitter's sums do: the flattest reconnect wave (docs/recovery.md).
=================  ==========================================================================

Jitter survives the cap: the cap bounds the *range* a delay is drawn from, it never clamps
the drawn value onto ``max_delay``. So at the cap ``"full"`` draws from ``[0, max]``,
``"equal"`` from ``[max/2, max]``, ``"proportional"`` from ``[max * (1 - r), max]`` and
``"decorrelated"`` from ``[initial, max]``, and a ``"banded"`` schedule keeps its own phase
``u * max`` inside windows of width ``max`` (the delays are all ``max`` there, but the dials of
many schedules stay spread over the window) (AWS writes ``min(cap, U(base, 3 * prev))``,
which piles about two draws in three exactly onto the cap; capping the range first keeps
the same shape below the cap and stays spread at it). Every delay is within
``[0, max_delay]``; the exponent is capped, so attempt 100 000 is as cheap as attempt 10.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .._core.errors import ConfigError
from . import config

__all__ = ["JITTER_STRATEGIES", "Backoff", "JitterStrategy"]

JitterStrategy = Literal["full", "equal", "decorrelated", "proportional", "none", "banded"]
"""Name of a jitter strategy."""

JITTER_STRATEGIES: tuple[JitterStrategy, ...] = (
    "full",
    "equal",
    "decorrelated",
    "proportional",
    "none",
    "banded",
)
"""Every accepted value of ``jitter``."""

_RNG = random.Random()
"""Shared default source of randomness (separate from the global ``random`` state)."""


@dataclass(frozen=True, slots=True, init=False)
class Backoff:
    """An exponential backoff schedule with a cap and a jitter strategy.

    Every argument left at ``None`` comes from configuration (``RESILIENT_CONN_BACKOFF_*``
    environment variables, else the defaults in :mod:`resilient_conn.config`).

    Args:
        initial_delay: Base delay of attempt 0 in seconds, ``>= 0``
            (default :data:`~resilient_conn.config.BACKOFF_INITIAL_DELAY` = 1.0).
        max_delay: Cap on any single delay in seconds, ``> 0`` and ``>= initial_delay``
            (default :data:`~resilient_conn.config.BACKOFF_MAX_DELAY` = 60.0).
        multiplier: Growth factor per attempt, ``>= 1``
            (default :data:`~resilient_conn.config.BACKOFF_MULTIPLIER` = 2.0).
        jitter: One of :data:`JITTER_STRATEGIES`
            (default :data:`~resilient_conn.config.BACKOFF_JITTER` = ``"full"``).
        jitter_ratio: Spread of ``"proportional"`` jitter, in ``[0, 1]``
            (default :data:`~resilient_conn.config.BACKOFF_JITTER_RATIO` = 0.10).
        rng: Source of randomness; pass a seeded ``random.Random`` for reproducible
            schedules. Defaults to one module-level ``random.Random()`` (not the global
            ``random`` state).

    Raises:
        ConfigError: A value is out of range (the message names the parameter).

    Example::

        backoff = Backoff(initial_delay=0.5, max_delay=30, jitter="equal")
        for attempt, delay in enumerate(backoff.delays()):
            ...
    """

    initial_delay: float
    max_delay: float
    multiplier: float
    jitter: JitterStrategy
    jitter_ratio: float
    rng: random.Random = field(repr=False, compare=False)

    def __init__(
        self,
        initial_delay: float | None = None,
        max_delay: float | None = None,
        multiplier: float | None = None,
        jitter: JitterStrategy | str | None = None,
        *,
        jitter_ratio: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        initial = float(
            config.resolve("backoff_initial_delay", initial_delay, param="initial_delay")
        )
        cap = float(config.resolve("backoff_max_delay", max_delay, param="max_delay"))
        mult = float(config.resolve("backoff_multiplier", multiplier, param="multiplier"))
        ratio = float(config.resolve("backoff_jitter_ratio", jitter_ratio, param="jitter_ratio"))
        if jitter is not None and not isinstance(jitter, str):
            raise ConfigError(
                f"jitter must be one of {', '.join(JITTER_STRATEGIES)}; got {jitter!r}"
            )
        strategy = config.resolve_choice("backoff_jitter", jitter, param="jitter")
        if initial > cap:
            raise ConfigError(
                f"initial_delay must be <= max_delay, got initial_delay={initial!r} "
                f"and max_delay={cap!r}"
            )
        if ratio > 1.0:
            raise ConfigError(
                f"jitter_ratio (or {config.ENV_PREFIX}BACKOFF_JITTER_RATIO) must be between "
                f"0 and 1, got {ratio!r}"
            )
        if rng is not None and not isinstance(rng, random.Random):
            raise ConfigError(f"rng must be a random.Random, got {rng!r}")
        setattr_ = object.__setattr__
        setattr_(self, "initial_delay", initial)
        setattr_(self, "max_delay", cap)
        setattr_(self, "multiplier", mult)
        setattr_(self, "jitter", cast(JitterStrategy, strategy))
        setattr_(self, "jitter_ratio", ratio)
        setattr_(self, "rng", _RNG if rng is None else rng)

    def with_(self, **changes: Any) -> Backoff:
        """Return a copy with some fields changed (same rules as the constructor).

        Example: ``Backoff().with_(jitter="none", max_delay=5)``.
        """
        return dataclasses.replace(self, **changes)

    @property
    def phased(self) -> bool:
        """True if the schedule's delays belong together (``"banded"``).

        Each delay is the step from one window's phase to the next, so a caller takes them in
        turn from :meth:`delays` (a :meth:`delay` drawn out of turn, or steps skipped while a
        breaker is open, would lose the phase that keeps many clients' dials spread).
        """
        return self.jitter == "banded"

    def exponential(self, attempt: int) -> float:
        """Return the un-jittered delay of ``attempt``: ``min(max, initial * multiplier**n)``.

        Args:
            attempt: 0-based attempt number.
        """
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt!r}")
        initial, cap, mult = self.initial_delay, self.max_delay, self.multiplier
        if initial == 0.0 or mult == 1.0 or attempt == 0:
            return min(initial, cap)
        # Compare in log space so a huge attempt never computes an overflowing power.
        if attempt * math.log(mult) >= math.log(cap) - math.log(initial):
            return cap
        try:
            return min(cap, initial * mult**attempt)
        except OverflowError:  # only for absurd ranges such as initial=1e-320, max=1e300
            return cap

    def delay(self, attempt: int, previous: float | None = None) -> float:
        """Draw the delay before retry number ``attempt`` (0-based).

        Args:
            attempt: 0-based attempt number.
            previous: The delay drawn for the previous attempt; only ``"decorrelated"``
                uses it (``None`` means ``initial_delay``).

        Returns:
            Seconds to wait, always within ``[0, max_delay]``.
        """
        cap = self.max_delay
        strategy = self.jitter
        if strategy == "decorrelated":
            if attempt < 0:
                raise ValueError(f"attempt must be >= 0, got {attempt!r}")
            low = self.initial_delay
            prev = low if previous is None else max(previous, low)
            value = self.rng.uniform(low, min(cap, prev * 3.0))
        else:
            base = self.exponential(attempt)
            if strategy == "full" or strategy == "banded":  # one draw of banded: full's
                value = self.rng.uniform(0.0, base)
            elif strategy == "equal":
                half = base / 2.0
                value = half + self.rng.uniform(0.0, half)
            elif strategy == "proportional":
                ratio = self.jitter_ratio
                value = self.rng.uniform(base * (1.0 - ratio), min(cap, base * (1.0 + ratio)))
            else:
                value = base
        # uniform() may round one ulp past its bounds; keep the documented guarantee.
        return min(cap, max(0.0, value))

    def delays(self) -> Iterator[float]:
        """Return a fresh, infinite iterator of delays, starting at attempt 0.

        Each call starts over, which is how a caller resets the schedule (e.g. after a
        connection stayed up long enough).
        """
        return self._iterate()

    def _iterate(self) -> Iterator[float]:
        if self.jitter == "banded":
            yield from self._banded()
            return
        attempt = 0
        previous: float | None = None
        while True:
            previous = self.delay(attempt, previous)
            yield previous
            attempt += 1

    def _banded(self) -> Iterator[float]:
        """Windows of width ``exp(n)`` end to end; attempt ``n`` at ``u`` through its window."""
        u = self.rng.random()
        cap = self.max_delay
        attempt = 0
        previous = 0.0  # the width of the window before (none before attempt 0)
        while True:
            width = self.exponential(attempt)
            yield min(cap, max(0.0, previous + u * (width - previous)))
            previous = width
            if width < cap:  # past the cap every window is max_delay wide
                attempt += 1
