"""The recovery coordinator's decision core: pure functions over one upstream's state.

No I/O, no clock, no task: every function takes the state, the settings, the caller's
holder id and ``now`` (seconds on the *store's* clock: the process's monotonic clock for
:class:`~resilient_conn.coordination.LocalStore`, the Redis server's ``TIME`` for
:class:`~resilient_conn.coordination.RedisStore`) and returns a new state (and a decision).
The stores apply these functions atomically, so the same code decides in one process and
across a fleet.

Phases of one upstream::

    CLOSED --failure_threshold failures in a row--> OPEN (for open_time(reopenings))
    OPEN --open time over, first admit() takes the probe lease--> HALF_OPEN
    HALF_OPEN --probe succeeded--> CLOSED, ramp on (token bucket)
    HALF_OPEN --probe failed--> OPEN, reopenings + 1 (longer, capped at max_open)
    HALF_OPEN --probe lease released or expired--> the next admit() takes the probe
    any --a permit succeeded with stable=True--> CLOSED, reopenings reset to 0

Admission (what :func:`admit` tells a caller):

* ``CLOSED``, no ramp: ``NORMAL`` at once.
* ``CLOSED``, ramp on: ``RAMP`` with a *reserved* slot of the token bucket (tokens may go
  negative: each caller is told when its slot comes, so N waiters cost N decisions, not
  N squared); the caller sleeps ``wait`` and calls :func:`admit` again with
  ``reserved=True``, which admits it without taking another token if the circuit is still
  closed. The ramp ends by itself once the bucket has refilled (demand has passed).
* ``OPEN``: wait until the open time ends (then one caller takes the probe).
* ``HALF_OPEN`` with a live probe lease held by another caller: wait until the probe's
  outcome is published, at most until the lease expires (a crashed prober cannot hold it).
* ``HALF_OPEN`` and no live lease: ``PROBE``; the lease lasts ``probe_ttl``.

Invariants (checked by the hypothesis tests): at most one live probe lease at any time;
the admissions a ramp makes over any interval never exceed ``burst + rate * interval``;
the open time is never longer than ``max_open``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Any

from .._core.errors import ConfigError

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_MAX_DIALING",
    "DEFAULT_MAX_OPEN",
    "DEFAULT_OPEN_MULTIPLIER",
    "DEFAULT_OPEN_TIME",
    "DEFAULT_PROBE_TTL",
    "DEFAULT_RAMP_BURST",
    "DEFAULT_RAMP_HOLD",
    "DEFAULT_RAMP_RATE",
    "REASON_DIALING",
    "REASON_OPEN",
    "REASON_PROBE_HELD",
    "REASON_RAMP",
    "Admission",
    "DialKind",
    "Phase",
    "RecoverySettings",
    "UpstreamState",
    "admit",
    "fail",
    "release",
    "succeed",
]

DEFAULT_FAILURE_THRESHOLD = 3
"""Failures in a row (across every connection of the upstream) that open the circuit."""
DEFAULT_OPEN_TIME = 0.5
"""First open time in seconds: the scale of the reconnect backoff's first delay (0.5-1 s)."""
DEFAULT_OPEN_MULTIPLIER = 2.0
"""Growth of the open time per consecutive re-opening."""
DEFAULT_MAX_OPEN = 1.0
"""Cap on the open time in seconds: the longest a client waits after its server is back
(plus the probe's own dial)."""
DEFAULT_PROBE_TTL = 15.0
"""Seconds a probe lease lives unless its holder reports an outcome or releases it."""
DEFAULT_RAMP_RATE = 600.0
"""Reconnections admitted per second while the ramp is on."""
DEFAULT_RAMP_BURST = 5
"""Token bucket capacity: reconnections admitted at once when the ramp starts."""
DEFAULT_MAX_DIALING = 64
"""Dials of one process's coordinator in flight at once (dial to handshake done)."""
DEFAULT_RAMP_HOLD = 2.0
"""Seconds the ramp stays on at least after a probe succeeds (so waiters in other
processes, woken by a message, still meet the bucket rather than an open door)."""

REASON_OPEN = "circuit open, waiting for the probe time"
"""Wait reason while the shared circuit is OPEN."""
REASON_PROBE_HELD = "circuit open, probe held by another connection"
"""Wait reason while another caller holds the probe lease."""
REASON_DIALING = "waiting for other dials to this upstream"
"""Wait reason for a caller waiting for a slot of the in-flight dial window
(``max_dialing``)."""
REASON_RAMP = "waiting for reconnect ramp"
"""Wait reason for a caller holding a reserved slot of the token bucket."""


class Phase(enum.Enum):
    """Where the shared circuit of one upstream is."""

    CLOSED = "closed"
    """Dials are admitted (through the ramp while it is on); failures are counted."""
    OPEN = "open"
    """No dial until the open time ends."""
    HALF_OPEN = "half_open"
    """One probe dial at a time (a lease with a TTL); everyone else waits for its outcome."""


class DialKind(enum.Enum):
    """What kind of dial a permit allows."""

    PROBE = "probe"
    """The single dial that tests a recovering upstream; its outcome closes or re-opens."""
    RAMP = "ramp"
    """A reconnection admitted through the token bucket after a successful probe."""
    NORMAL = "normal"
    """The circuit is closed and no ramp is on: dial at once."""


@dataclass(frozen=True, slots=True)
class RecoverySettings:
    """Tuning of a recovery coordinator (every value validated at construction).

    Args:
        failure_threshold: Failures in a row that open the circuit, ``>= 1``
            (default :data:`DEFAULT_FAILURE_THRESHOLD` = 3).
        open_time: First open time in seconds, ``> 0`` (default :data:`DEFAULT_OPEN_TIME` = 0.5).
        open_multiplier: Growth per consecutive re-opening, ``>= 1``
            (default :data:`DEFAULT_OPEN_MULTIPLIER` = 2).
        max_open: Cap on the open time in seconds, ``>= open_time``
            (default :data:`DEFAULT_MAX_OPEN` = 1).
        probe_ttl: Lifetime of the probe lease in seconds, ``> 0``
            (default :data:`DEFAULT_PROBE_TTL` = 15).
        ramp_rate: Reconnections per second after a successful probe, ``> 0``
            (default :data:`DEFAULT_RAMP_RATE` = 600).
        ramp_burst: Token bucket capacity, ``>= 1`` (default :data:`DEFAULT_RAMP_BURST` = 5).
        ramp_hold: Least seconds the ramp stays on; it ends once past that and the bucket
            is full again, ``>= 0`` (default :data:`DEFAULT_RAMP_HOLD` = 2).
        max_dialing: Dials admitted by one coordinator object (one process) that may be in
            flight at once, from admission until the handshake is done or the dial failed,
            ``>= 1`` (default :data:`DEFAULT_MAX_DIALING` = 64). The token bucket caps the
            rate; this makes the ramp follow the server's own handshake rate when that is
            slower, and bounds the redials that go out before the first failures open the
            circuit. Local to the process, never stored.

    Raises:
        ConfigError: A value is out of range or not a number.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    open_time: float = DEFAULT_OPEN_TIME
    open_multiplier: float = DEFAULT_OPEN_MULTIPLIER
    max_open: float = DEFAULT_MAX_OPEN
    probe_ttl: float = DEFAULT_PROBE_TTL
    ramp_rate: float = DEFAULT_RAMP_RATE
    ramp_burst: int = DEFAULT_RAMP_BURST
    ramp_hold: float = DEFAULT_RAMP_HOLD
    max_dialing: int = DEFAULT_MAX_DIALING

    def __post_init__(self) -> None:
        _check_int("failure_threshold", self.failure_threshold, 1)
        _check_int("max_dialing", self.max_dialing, 1)
        _check_int("ramp_burst", self.ramp_burst, 1)
        for name in (
            "open_time",
            "open_multiplier",
            "max_open",
            "probe_ttl",
            "ramp_rate",
            "ramp_hold",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, got {value!r}")
        if self.open_time <= 0:
            raise ConfigError(f"open_time must be > 0, got {self.open_time!r}")
        if self.open_multiplier < 1:
            raise ConfigError(f"open_multiplier must be >= 1, got {self.open_multiplier!r}")
        if self.max_open < self.open_time:
            raise ConfigError(
                f"max_open must be >= open_time ({self.open_time!r}), got {self.max_open!r}"
            )
        if self.probe_ttl <= 0:
            raise ConfigError(f"probe_ttl must be > 0, got {self.probe_ttl!r}")
        if self.ramp_hold < 0:
            raise ConfigError(f"ramp_hold must be >= 0, got {self.ramp_hold!r}")
        if self.ramp_rate <= 0:
            raise ConfigError(f"ramp_rate must be > 0, got {self.ramp_rate!r}")

    def open_for(self, reopenings: int) -> float:
        """Return the open time after ``reopenings`` consecutive re-openings (capped)."""
        exponent = min(max(reopenings, 0), 64)  # 2**64 * anything >= every sane cap
        return min(self.max_open, self.open_time * self.open_multiplier**exponent)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """The shared state of one upstream (what a store keeps; JSON-safe via :meth:`to_dict`).

    Attributes:
        phase: The circuit's phase.
        failures: Failures in a row while closed (reset by a success).
        reopenings: Consecutive openings without a stable connection in between.
        open_until: While OPEN, when the open time ends (store clock).
        probe_holder: Holder id of the live probe lease, or ``""``.
        probe_expires: When that lease expires (store clock).
        ramping: Whether reconnections go through the token bucket.
        tokens: Tokens in the bucket at ``tokens_at`` (negative: slots reserved ahead).
        tokens_at: When ``tokens`` was computed (store clock).
        ramp_since: When the ramp began (store clock).
        last_probe: Holder of the probe that closed the circuit, until a connection proves
            stable (its early death re-opens at once: the upstream accepts and drops).
    """

    phase: Phase = Phase.CLOSED
    failures: int = 0
    reopenings: int = 0
    open_until: float = 0.0
    probe_holder: str = ""
    probe_expires: float = 0.0
    ramping: bool = False
    tokens: float = 0.0
    tokens_at: float = 0.0
    ramp_since: float = 0.0
    last_probe: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (what :class:`RedisStore` writes)."""
        return {
            "phase": self.phase.value,
            "failures": self.failures,
            "reopenings": self.reopenings,
            "open_until": self.open_until,
            "probe_holder": self.probe_holder,
            "probe_expires": self.probe_expires,
            "ramping": self.ramping,
            "tokens": self.tokens,
            "tokens_at": self.tokens_at,
            "ramp_since": self.ramp_since,
            "last_probe": self.last_probe,
        }

    @classmethod
    def from_dict(cls, data: Any) -> UpstreamState:
        """Rebuild a state from :meth:`to_dict` output; anything malformed gives a fresh state.

        A store may hold garbage (another program wrote the key, a version skew): the
        coordinator must keep working, so this never raises.
        """
        if not isinstance(data, dict):
            return cls()
        try:
            state = cls(
                phase=Phase(data["phase"]),
                failures=_nonneg_int(data["failures"]),
                reopenings=_nonneg_int(data["reopenings"]),
                open_until=_finite(data["open_until"]),
                probe_holder=str(data["probe_holder"])[:512],
                probe_expires=_finite(data["probe_expires"]),
                ramping=bool(data["ramping"]),
                tokens=_finite(data["tokens"]),
                tokens_at=_finite(data["tokens_at"]),
                ramp_since=_finite(data["ramp_since"]),
                last_probe=str(data.get("last_probe", ""))[:512],
            )
        except (KeyError, TypeError, ValueError):
            return cls()
        return state

    def probe_live(self, now: float) -> bool:
        """Return whether a probe lease is held and not expired at ``now``."""
        return bool(self.probe_holder) and self.probe_expires > now


def _nonneg_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


@dataclass(frozen=True, slots=True)
class Admission:
    """What :func:`admit` decided for one caller.

    Attributes:
        kind: The dial this caller may make now, or ``None`` to wait.
        wait: Seconds to wait before calling :func:`admit` again (``inf``: until the state
            changes). With ``reserved`` the caller holds a ramp slot at the end of the wait.
        reason: Why it waits (``""`` when admitted without waiting), for a state change.
        reserved: Whether the caller holds a reserved ramp slot (pass ``reserved=True`` to
            the next :func:`admit`).
    """

    kind: DialKind | None
    wait: float = 0.0
    reason: str = ""
    reserved: bool = False


def _refill(state: UpstreamState, s: RecoverySettings, now: float) -> UpstreamState:
    """Bring the bucket to ``now``; end the ramp once it is full and ``ramp_hold`` is over."""
    if not state.ramping:
        return state
    elapsed = max(0.0, now - state.tokens_at)
    tokens = min(float(s.ramp_burst), state.tokens + elapsed * s.ramp_rate)
    if tokens >= s.ramp_burst and now - state.ramp_since >= s.ramp_hold:
        return replace(state, ramping=False, tokens=0.0, tokens_at=now, ramp_since=0.0)
    return replace(state, tokens=tokens, tokens_at=max(now, state.tokens_at))


def _open(state: UpstreamState, s: RecoverySettings, now: float, *, grow: bool) -> UpstreamState:
    reopenings = state.reopenings + 1 if grow else state.reopenings
    return UpstreamState(
        phase=Phase.OPEN,
        failures=0,
        reopenings=reopenings,
        open_until=now + s.open_for(reopenings),
    )


def _close(
    state: UpstreamState, s: RecoverySettings, now: float, *, stable: bool, prober: str = ""
) -> UpstreamState:
    recovering = state.phase is not Phase.CLOSED
    return UpstreamState(
        last_probe="" if stable else prober,
        phase=Phase.CLOSED,
        failures=0,
        reopenings=0 if stable else state.reopenings,
        ramping=True if recovering else state.ramping,
        tokens=float(s.ramp_burst) if recovering else state.tokens,
        tokens_at=now if recovering else state.tokens_at,
        ramp_since=now if recovering else state.ramp_since,
    )


def admit(
    state: UpstreamState,
    s: RecoverySettings,
    holder: str,
    now: float,
    *,
    reserved: bool = False,
) -> tuple[UpstreamState, Admission]:
    """Decide whether ``holder`` may dial now; return the new state and the decision.

    Args:
        state: The upstream's current state.
        s: The coordinator's settings.
        holder: A unique id of this permit (the probe lease is held under it).
        now: The store's clock.
        reserved: The caller waited for a ramp slot reserved by a previous call.

    Returns:
        ``(new_state, admission)``.
    """
    # A shared store may hold times from a skewed clock or from garbage: never wait longer
    # than the documented caps from now.
    if state.open_until > now + s.max_open:
        state = replace(state, open_until=now + s.max_open)
    if state.probe_expires > now + s.probe_ttl:
        state = replace(state, probe_expires=now + s.probe_ttl)
    if state.phase is Phase.OPEN:
        if now < state.open_until:
            return state, Admission(None, state.open_until - now, REASON_OPEN)
        state = replace(state, phase=Phase.HALF_OPEN, open_until=0.0)
    if state.phase is Phase.HALF_OPEN:
        if state.probe_live(now) and state.probe_holder != holder:
            return state, Admission(None, state.probe_expires - now, REASON_PROBE_HELD)
        state = replace(state, probe_holder=holder, probe_expires=now + s.probe_ttl)
        return state, Admission(DialKind.PROBE)
    state = _refill(state, s, now)
    if not state.ramping:
        return state, Admission(DialKind.RAMP if reserved else DialKind.NORMAL)
    if reserved:
        return state, Admission(DialKind.RAMP)
    if state.tokens >= 1.0:
        return replace(state, tokens=state.tokens - 1.0), Admission(DialKind.RAMP)
    wait = (1.0 - state.tokens) / s.ramp_rate
    state = replace(state, tokens=state.tokens - 1.0)
    return state, Admission(None, wait, REASON_RAMP, reserved=True)


def succeed(
    state: UpstreamState, s: RecoverySettings, holder: str, now: float, *, stable: bool
) -> UpstreamState:
    """Record that ``holder``'s dial worked.

    ``stable=False``: a round trip on a fresh connection (enough to close the circuit after
    a probe). ``stable=True``: the connection stayed up ``stable_after``; this also resets
    the open-time growth.
    """
    if state.phase is Phase.CLOSED:
        state = _refill(state, s, now)
        if state.failures == 0 and (not stable or not (state.reopenings or state.last_probe)):
            return state
        return replace(
            state,
            failures=0,
            reopenings=0 if stable else state.reopenings,
            last_probe="" if stable else state.last_probe,
        )
    if state.phase is Phase.HALF_OPEN and state.probe_holder == holder:
        return _close(state, s, now, stable=stable, prober=holder)
    if stable:  # a connection admitted earlier proved the upstream works
        return _close(state, s, now, stable=True)
    return state


def fail(state: UpstreamState, s: RecoverySettings, holder: str, now: float) -> UpstreamState:
    """Record that ``holder``'s dial failed (refused, or the connection died before stable)."""
    if state.phase is Phase.HALF_OPEN:
        if state.probe_holder == holder:
            return _open(state, s, now, grow=True)
        return state
    if state.phase is Phase.OPEN:
        return state
    state = _refill(state, s, now)
    if state.last_probe and state.last_probe == holder:
        # The probe's own connection died before proving stable: the upstream accepts and
        # drops (or fell over again); re-open at once, for longer.
        return _open(state, s, now, grow=True)
    failures = state.failures + 1
    if failures >= s.failure_threshold:
        # A first opening uses the current scale; a re-opening without a stable connection
        # in between (the upstream flaps, or ramped dials fail) grows the open time.
        return _open(state, s, now, grow=state.reopenings > 0 or state.ramping)
    return replace(state, failures=failures)


def release(state: UpstreamState, s: RecoverySettings, holder: str, now: float) -> UpstreamState:
    """Free ``holder``'s probe lease without an outcome (cancelled, closed by the user)."""
    if state.phase is Phase.HALF_OPEN and state.probe_holder == holder:
        return replace(state, probe_holder="", probe_expires=0.0)
    return state
