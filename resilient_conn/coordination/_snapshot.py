"""A coordinator seen from outside: its snapshot for health and metrics, and its key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .._core.errors import ConfigError
from .._core.log import redact_text
from .decide import Phase
from .store import StoreHealth

__all__ = ["CoordinatorSnapshot", "upstream_key"]

_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


@dataclass(frozen=True, slots=True)
class CoordinatorSnapshot:
    """A cheap, JSON-safe view of a coordinator (for health reports and metrics).

    Attributes:
        name: The upstream's name (the store key).
        phase: The shared circuit's phase as last seen by this process.
        failures: Failures in a row while closed.
        reopenings: Consecutive re-openings (the open time grows with it).
        next_open_time: The open time the next opening would last.
        probe_held: Whether a probe lease is held (by any process).
        ramping: Whether reconnections go through the token bucket.
        admitted: Permits granted by this process, by kind.
        waits: Times a permit of this process had to wait.
        store: The store's health.
    """

    name: str
    phase: Phase
    failures: int
    reopenings: int
    next_open_time: float
    probe_held: bool
    ramping: bool
    admitted: dict[str, int]
    waits: int
    store: StoreHealth

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "name": self.name,
            "phase": self.phase.value,
            "failures": self.failures,
            "reopenings": self.reopenings,
            "next_open_time": self.next_open_time,
            "probe_held": self.probe_held,
            "ramping": self.ramping,
            "admitted": dict(self.admitted),
            "waits": self.waits,
            "store": self.store.to_dict(),
        }


def upstream_key(url: str) -> str:
    """Return ``"host:port"`` of ``url`` (the default port of its scheme if none).

    Raises:
        ConfigError: ``url`` is not a URL, has no host, or no port and an unknown scheme.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"not a URL: {redact_text(str(url))!r}") from exc
    if not host:
        raise ConfigError(f"URL has no host: {redact_text(url)!r}")
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.lower())
    if port is None:
        raise ConfigError(f"URL has no port and an unknown scheme: {redact_text(url)!r}")
    return f"{host.lower()}:{port}"
