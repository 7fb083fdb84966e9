"""The client's URLs and arguments, without I/O.

Checking and normalising what the user gave, building each dial's URL, the topic prefix.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._core.errors import ConfigError
from .._core.log import redact_url
from ..adapters.checks import CONNECT_KWARGS
from ..adapters.websocket import check_ws_url
from ..connection.connection import ResilientConnection
from ..resilience.backoff import Backoff

__all__ = [
    "SUPABASE_PREFIX",
    "build_dial_url",
    "check_client_args",
    "full_topic",
    "normalise_url",
    "topic_prefix_for",
]

SUPABASE_PREFIX = "realtime:"
"""What Supabase Realtime puts before every channel name (it routes only ``realtime:*``)."""


def normalise_url(url: object) -> str:
    """Return ``url`` as ``ws(s)://...`` with a path (a bare host gets ``/realtime/v1/websocket``).

    Raises:
        ConfigError: ``url`` is not a ws, wss, http or https URL with a host and a port from 1
            to 65535 (checked as ``ResilientConnection`` checks its URL).
    """
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"url is not a valid URL: {redact_url(url)!r} ({exc})") from None
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"url must be a ws://, wss://, http:// or https:// URL, got {redact_url(url)!r}"
        )
    path = parts.path if parts.path not in ("", "/") else "/realtime/v1/websocket"
    return check_ws_url(urlunsplit((scheme, parts.netloc, path, parts.query, "")))


def build_dial_url(base: str, apikey: str | None, vsn: str) -> str:
    """Return ``base`` with ``apikey`` (when set) and ``vsn`` replacing any in its query."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("vsn", "apikey")]
    if apikey is not None:
        query.append(("apikey", apikey))
    query.append(("vsn", vsn))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def topic_prefix_for(url: str, topic_prefix: object = None) -> str:
    """The prefix channel topics get on ``url``: ``topic_prefix`` if given, else Supabase's.

    Supabase is recognised by its path (``/realtime/v1/...``) or a ``*.supabase.co`` host;
    any other Phoenix endpoint gets topics exactly as given (prefix ``""``).

    Raises:
        ConfigError: ``topic_prefix`` is neither None nor a string.
    """
    if topic_prefix is not None:
        if not isinstance(topic_prefix, str):
            raise ConfigError(f"topic_prefix must be a string or None, got {topic_prefix!r}")
        return topic_prefix
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    supabase = "/realtime/v1" in parts.path or host.endswith((".supabase.co", ".supabase.in"))
    return SUPABASE_PREFIX if supabase else ""


def full_topic(prefix: str, topic: object) -> str:
    """``topic`` with ``prefix`` added unless it already starts with it.

    Raises:
        ConfigError: ``topic`` is not a string, or is empty once the prefix is removed.
    """
    if not isinstance(topic, str) or not topic.removeprefix(prefix):
        raise ConfigError(f"topic must be a non-empty string, got {topic!r}")
    full = topic if topic.startswith(prefix) else prefix + topic
    if full == "phoenix":
        raise ConfigError("topic 'phoenix' is reserved for heartbeats")
    return full


_RESERVED = ("on_open", "probe")


def check_client_args(
    vsn: object,
    push_buffer_size: object,
    rejoin_backoff: object,
    access_token: object,
    conn_options: Mapping[str, Any],
) -> None:
    """Check :class:`RealtimeClient`'s own arguments.

    Raises:
        ConfigError: A bad argument, naming the parameter.
    """
    if vsn not in ("1.0.0", "2.0.0"):
        raise ConfigError(f"vsn must be '1.0.0' or '2.0.0', got {vsn!r}")
    if isinstance(push_buffer_size, bool) or not isinstance(push_buffer_size, int):
        raise ConfigError(f"push_buffer_size must be an int, got {push_buffer_size!r}")
    if push_buffer_size < 1:
        raise ConfigError(f"push_buffer_size must be >= 1, got {push_buffer_size!r}")
    if rejoin_backoff is not None and not isinstance(rejoin_backoff, Backoff):
        raise ConfigError(f"rejoin_backoff must be a Backoff, got {rejoin_backoff!r}")
    if access_token is not None and not (isinstance(access_token, str) or callable(access_token)):
        raise ConfigError("access_token must be a string or a callable returning one")
    for key in _RESERVED:
        if key in conn_options:
            raise ConfigError(f"{key} is set by RealtimeClient; it cannot be passed")
    accepted = _connection_options()
    for key in conn_options:
        if key not in accepted:
            close = difflib.get_close_matches(key, [*_OWN, *accepted], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown option {key!r}{hint}; RealtimeClient accepts {', '.join(_OWN)}, and "
                f"passes these to ResilientConnection: {', '.join(sorted(accepted))}"
            )


_OWN = (
    "apikey",
    "access_token",
    "vsn",
    "heartbeat_interval",
    "push_timeout",
    "rejoin_backoff",
    "push_buffer_size",
    "topic_prefix",
)


def _connection_options() -> frozenset[str]:
    params = inspect.signature(ResilientConnection.__init__).parameters
    named = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - set(_RESERVED)
    return frozenset(named | CONNECT_KWARGS)
