"""ConnectionOptions: every tunable of a ResilientConnection, resolved and validated once.

Each value comes from the argument if given, else the ``RESILIENT_CONN_<NAME>`` environment
variable, else the code default in :mod:`resilient_conn.config`. Bad values are a
:class:`~resilient_conn.errors.ConfigError` (a ``ValueError``) naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._core.errors import ConfigError
from ..adapters.base import DialOptions, get_adapter
from ..resilience import config
from .buffer import Overflow

__all__ = ["ConnectionOptions", "dial_options"]

T = TypeVar("T")

# Equal immutable settings are one object, whatever number of connections use them: a process
# with thousands of connections to one upstream keeps one ConnectionOptions, one DialOptions
# and one adapter. Bounded (cleared when full): distinct settings only cost the sharing.
_SHARED: dict[Any, Any] = {}
_SHARED_MAX = 256


def _share(key: object, make: Callable[[], T]) -> T:
    found: T | None = _SHARED.get(key)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = _SHARED[key] = make()
    return found


def dial_options(options: ConnectionOptions, transport: str, extra: dict[str, Any]) -> DialOptions:
    """What every dial of a connection uses (its adapter included), shared where possible.

    Connections with the same settings that pass nothing but ``compression`` through to the
    adapter share one: ``DialOptions`` is frozen and an adapter keeps nothing per connection.
    With other pass-through arguments (an ``ssl`` context, say) each connection gets its own.

    Raises:
        ConfigError: The adapter refused ``extra`` or ``transport`` is unknown.
    """

    def make() -> DialOptions:
        adapter = get_adapter(transport, extra)
        return DialOptions(
            options.open_timeout, options.close_timeout, options.max_size, options.max_queue,
            extra, adapter,
        )

    if extra.keys() - {"compression"}:
        return make()
    limits = (options.open_timeout, options.close_timeout, options.max_size, options.max_queue)
    return _share(("dial", transport, extra.get("compression"), *limits), make)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """The effective settings of one connection (see ``ResilientConnection`` for meanings).

    Build it with :meth:`resolve`; ``conn.options`` shows what a connection runs with.
    ``ping_interval == 0`` means keepalive is off; ``message_ttl`` and ``rtt_limit`` are None
    when unset.
    """

    open_timeout: float
    ping_interval: float
    ping_timeout: float
    close_timeout: float
    stable_after: float
    send_timeout: float
    drain_timeout: float
    unhealthy_after: float
    buffer_size: int
    buffer_bytes: int
    overflow: Overflow
    max_size: int
    max_queue: int
    message_ttl: float | None
    rtt_limit: float | None
    buffer_high_water: float
    hook_timeout: float
    dead_letter_capacity: int

    @classmethod
    def resolve(
        cls,
        *,
        open_timeout: float | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        close_timeout: float | None = None,
        stable_after: float | None = None,
        send_timeout: float | None = None,
        drain_timeout: float | None = None,
        unhealthy_after: float | None = None,
        buffer_size: int | None = None,
        buffer_bytes: int | None = None,
        overflow: str | None = None,
        max_size: int | None = None,
        max_queue: int | None = None,
        message_ttl: float | None = None,
        rtt_limit: float | None = None,
        buffer_high_water: float = 0.8,
        hook_timeout: float = 5.0,
        dead_letter_capacity: int = 1000,
    ) -> ConnectionOptions:
        """Resolve arguments against the environment and the defaults, and validate them.

        Raises:
            ConfigError: A value is out of range; the message names the parameter (or the
                environment variable it came from).
        """
        r = config.resolve
        if isinstance(buffer_high_water, bool) or not 0 < buffer_high_water <= 1:
            raise ConfigError(f"buffer_high_water must be in (0, 1], got {buffer_high_water!r}")
        config.check_int(dead_letter_capacity, "dead_letter_capacity")
        resolved = cls(
            open_timeout=r("open_timeout", open_timeout),
            ping_interval=r("ping_interval", ping_interval),
            ping_timeout=r("ping_timeout", ping_timeout),
            close_timeout=r("close_timeout", close_timeout),
            stable_after=r("stable_after", stable_after),
            send_timeout=r("send_timeout", send_timeout),
            drain_timeout=r("drain_timeout", drain_timeout),
            unhealthy_after=r("unhealthy_after", unhealthy_after),
            buffer_size=int(r("buffer_size", buffer_size)),
            buffer_bytes=int(r("buffer_bytes", buffer_bytes)),
            overflow=Overflow(config.resolve_choice("overflow", overflow)),
            max_size=int(r("max_size", max_size)),
            max_queue=int(r("max_queue", max_queue)),
            message_ttl=None
            if message_ttl is None
            else config.check_positive(message_ttl, "message_ttl"),
            rtt_limit=None if rtt_limit is None else config.check_positive(rtt_limit, "rtt_limit"),
            buffer_high_water=buffer_high_water,
            hook_timeout=config.check_positive(hook_timeout, "hook_timeout"),
            dead_letter_capacity=dead_letter_capacity,
        )
        return _share(resolved, lambda: resolved)  # equal settings: one shared object
