"""Configuration: defaults in code, ``RESILIENT_CONN_*`` environment variables, arguments.

Precedence, lowest to highest: the module constants below < an environment variable
``RESILIENT_CONN_<NAME>`` < an explicit argument. Variables are read when an object is
constructed (not at import), so a process can set them late and tests can patch them.

A bad value in the environment is a :class:`~resilient_conn.errors.ConfigError` naming the
variable, never a silent fallback to the default. ``docs/configuration.md`` lists every
variable; a test keeps that table in step with :data:`SETTINGS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .._core.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "Setting",
    "check_positive",
    "check_non_negative",
    "resolve",
    "resolve_choice",
]

ENV_PREFIX = "RESILIENT_CONN_"

# --- backoff ------------------------------------------------------------------------------
BACKOFF_INITIAL_DELAY = 1.0
BACKOFF_MAX_DELAY = 60.0
BACKOFF_MULTIPLIER = 2.0
BACKOFF_JITTER = "full"
BACKOFF_JITTER_RATIO = 0.10
# --- circuit breaker ----------------------------------------------------------------------
BREAKER_FAILURE_THRESHOLD = 5
BREAKER_RECOVERY_TIMEOUT = 60.0
BREAKER_SUCCESS_THRESHOLD = 2
BREAKER_HALF_OPEN_MAX_CALLS = 1
# --- retry --------------------------------------------------------------------------------
RETRY_MAX_ATTEMPTS = 3
# --- connection ---------------------------------------------------------------------------
CONNECTION_OPEN_TIMEOUT = 10.0
CONNECTION_PING_INTERVAL = 20.0
CONNECTION_PING_TIMEOUT = 20.0
CONNECTION_CLOSE_TIMEOUT = 10.0
CONNECTION_STABLE_AFTER = 10.0
CONNECTION_BUFFER_SIZE = 1000
CONNECTION_BUFFER_BYTES = 1_048_576
CONNECTION_SEND_TIMEOUT = 10.0
CONNECTION_DRAIN_TIMEOUT = 5.0
CONNECTION_MAX_SIZE = 1_048_576
CONNECTION_MAX_QUEUE = 16
CONNECTION_OVERFLOW = "block"
# --- realtime -----------------------------------------------------------------------------
REALTIME_HEARTBEAT_INTERVAL = 25.0
REALTIME_PUSH_TIMEOUT = 10.0
# --- health -------------------------------------------------------------------------------
HEALTH_UNHEALTHY_AFTER = 30.0
HEALTH_CHECK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Setting:
    """One configurable value: its default, its variable, what it accepts and means.

    Attributes:
        name: Lower-case dotted-free key, e.g. ``"backoff_max_delay"``.
        default: The default in code.
        kind: ``float``, ``int`` or ``str``.
        help: One line for the docs table.
        minimum: Smallest accepted number (inclusive unless ``positive``).
        positive: Numbers must be strictly greater than ``minimum``.
        choices: For ``str`` settings, the accepted values.
    """

    name: str
    default: float | int | str
    kind: type
    help: str
    minimum: float = 0.0
    positive: bool = False
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        """The environment variable that overrides the default."""
        return ENV_PREFIX + self.name.upper()


def _s(
    name: str,
    default: float | int | str,
    help: str,
    *,
    minimum: float = 0.0,
    positive: bool = False,
    choices: tuple[str, ...] = (),
) -> Setting:
    return Setting(name, default, type(default), help, minimum, positive, choices)


_JITTERS = ("full", "equal", "decorrelated", "proportional", "none", "banded")

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        _s("backoff_initial_delay", BACKOFF_INITIAL_DELAY, "first reconnect/retry delay (s)"),
        _s("backoff_max_delay", BACKOFF_MAX_DELAY, "cap on any single delay (s)", positive=True),
        _s("backoff_multiplier", BACKOFF_MULTIPLIER, "growth factor per attempt", minimum=1.0),
        _s("backoff_jitter", BACKOFF_JITTER, "jitter strategy", choices=_JITTERS),
        _s("backoff_jitter_ratio", BACKOFF_JITTER_RATIO, "spread of proportional jitter (0-1)"),
        _s(
            "breaker_failure_threshold",
            BREAKER_FAILURE_THRESHOLD,
            "consecutive failures that open the circuit",
            minimum=1,
        ),
        _s(
            "breaker_recovery_timeout",
            BREAKER_RECOVERY_TIMEOUT,
            "seconds open before a probe is admitted",
        ),
        _s(
            "breaker_success_threshold",
            BREAKER_SUCCESS_THRESHOLD,
            "successes in half-open that close the circuit",
            minimum=1,
        ),
        _s(
            "breaker_half_open_max_calls",
            BREAKER_HALF_OPEN_MAX_CALLS,
            "probes admitted at once in half-open",
            minimum=1,
        ),
        _s("retry_max_attempts", RETRY_MAX_ATTEMPTS, "attempts before giving up", minimum=1),
        _s("open_timeout", CONNECTION_OPEN_TIMEOUT, "dial + handshake timeout (s)", positive=True),
        _s("ping_interval", CONNECTION_PING_INTERVAL, "seconds between keepalive pings"),
        _s("ping_timeout", CONNECTION_PING_TIMEOUT, "seconds to wait for a pong", positive=True),
        _s("close_timeout", CONNECTION_CLOSE_TIMEOUT, "closing handshake timeout (s)"),
        _s("stable_after", CONNECTION_STABLE_AFTER, "uptime that counts as a success (s)"),
        _s("buffer_size", CONNECTION_BUFFER_SIZE, "outbound buffer capacity (messages)", minimum=1),
        _s("buffer_bytes", CONNECTION_BUFFER_BYTES, "outbound buffer capacity (bytes)", minimum=1),
        _s("send_timeout", CONNECTION_SEND_TIMEOUT, "how long a blocked send waits (s)"),
        _s("drain_timeout", CONNECTION_DRAIN_TIMEOUT, "time to flush the buffer on close (s)"),
        _s("max_size", CONNECTION_MAX_SIZE, "largest inbound message (bytes)", minimum=1),
        _s(
            "max_queue",
            CONNECTION_MAX_QUEUE,
            "inbound frames queued before backpressure",
            minimum=1,
        ),
        _s(
            "overflow",
            CONNECTION_OVERFLOW,
            "full-buffer policy",
            choices=("block", "drop_oldest", "drop_newest", "raise"),
        ),
        _s(
            "heartbeat_interval",
            REALTIME_HEARTBEAT_INTERVAL,
            "Phoenix heartbeat period (s)",
            positive=True,
        ),
        _s(
            "push_timeout",
            REALTIME_PUSH_TIMEOUT,
            "Phoenix push/join reply timeout (s)",
            positive=True,
        ),
        _s(
            "unhealthy_after",
            HEALTH_UNHEALTHY_AFTER,
            "disconnected this long -> UNHEALTHY (s)",
        ),
        _s("check_timeout", HEALTH_CHECK_TIMEOUT, "default timeout of check() (s)", positive=True),
    )
}


def _validate(setting: Setting, value: float | int, source: str) -> float | int:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{source} must be a finite number, got {value!r}")
    if setting.positive and value <= setting.minimum:
        raise ConfigError(f"{source} must be > {setting.minimum:g}, got {value!r}")
    if value < setting.minimum:
        raise ConfigError(f"{source} must be >= {setting.minimum:g}, got {value!r}")
    return value


def _from_env(setting: Setting) -> str | None:
    raw = os.environ.get(setting.env)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


def resolve(name: str, explicit: float | None = None, *, param: str | None = None) -> float:
    """Return the effective numeric value of setting ``name``.

    Args:
        name: A key of :data:`SETTINGS`.
        explicit: The caller's argument; ``None`` means "not given".
        param: The parameter name for error messages (defaults to ``name``).

    Returns:
        The argument if given, else the environment variable if set, else the default. Integer
        settings come back as ``int``.

    Raises:
        ConfigError: The argument or the variable is not an acceptable number.
    """
    setting = SETTINGS[name]
    if setting.kind is str:
        raise TypeError(f"{name} is a choice setting; use resolve_choice()")
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, (int, float)):
            raise ConfigError(f"{param or name} must be a number, got {explicit!r}")
        if setting.kind is int and float(explicit) != int(explicit):
            raise ConfigError(f"{param or name} must be a whole number, got {explicit!r}")
        return _validate(setting, explicit, param or name)
    raw = _from_env(setting)
    if raw is None:
        return setting.default  # type: ignore[return-value]
    try:
        value: float | int = int(raw) if setting.kind is int else float(raw)
    except ValueError:
        kind = "a whole number" if setting.kind is int else "a number"
        raise ConfigError(
            f"environment variable {setting.env} must be {kind}, got {raw!r}"
        ) from None
    return _validate(setting, value, f"environment variable {setting.env}")


def resolve_choice(name: str, explicit: str | None = None, *, param: str | None = None) -> str:
    """Return the effective value of a choice setting (e.g. ``backoff_jitter``).

    Raises:
        ConfigError: The value is not one of the setting's choices.
    """
    setting = SETTINGS[name]
    if explicit is not None:
        if explicit not in setting.choices:
            raise ConfigError(
                f"{param or name} must be one of {', '.join(setting.choices)}; got {explicit!r}"
            )
        return explicit
    raw = _from_env(setting)
    if raw is None:
        return str(setting.default)
    if raw not in setting.choices:
        raise ConfigError(
            f"environment variable {setting.env} must be one of "
            f"{', '.join(setting.choices)}; got {raw!r}"
        )
    return raw


def check_int(value: object, param: str, minimum: int = 0, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) in ``[minimum, maximum]``.

    Raises:
        ConfigError: Naming ``param``: "must be an int >= 1", "must be an int in [0, 65535]".
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{param} must be an int {bound}, got {value!r}")
    return value


def check_positive(value: float, param: str) -> float:
    """Return ``value`` if it is a finite number > 0, else raise ConfigError naming ``param``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{param} must be a finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{param} must be > 0, got {value!r}")
    return value


def check_non_negative(value: float, param: str) -> float:
    """Return ``value`` if it is a finite number >= 0, else raise ConfigError naming ``param``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{param} must be a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{param} must be >= 0, got {value!r}")
    return value
