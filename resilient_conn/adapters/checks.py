"""What the WebSocket adapter accepts, checked before anything is dialed.

A value that cannot work must fail at once with a :class:`~resilient_conn.errors.ConfigError`
naming the parameter and what is accepted, not be retried forever by the supervisor:

* :func:`check_connect_kwargs`: the extra keyword arguments of ``ResilientConnection`` are
  handed to ``websockets.asyncio.client.connect``; a misspelled option (``pingg_interval``),
  one the connection manages itself (``additional_headers``: use ``headers=``) or a bad value
  of a known one is refused, listing the accepted names;
* :func:`check_ws_url`: a ``ws://`` / ``wss://`` URL with a host and a valid port;
* :func:`check_headers`: handshake headers must be ``str: str`` with HTTP-token names, values
  without CR, LF or NUL (header injection), and not a header the handshake sets itself.

Evaluated headers from a callable are checked again before every dial (a ConfigError there is
fatal: the connection FAILS instead of retrying).
"""

from __future__ import annotations

import difflib
import inspect
import ssl
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from .._core.errors import ConfigError
from .._core.log import is_secret_name, redact_text, redact_url
from ..resilience.config import check_int

__all__ = [
    "CONNECT_KWARGS",
    "MANAGED",
    "OWN_OPTIONS",
    "check_callables",
    "check_connect_kwargs",
    "check_handler",
    "check_headers",
    "check_ws_url",
    "is_token",
]

T = TypeVar("T")

CONNECT_KWARGS: frozenset[str] = frozenset(
    {
        # websockets.asyncio.client.connect
        "origin",
        "extensions",
        "subprotocols",
        "user_agent_header",
        "proxy",
        "write_limit",
        "logger",
        # passed on by websockets to loop.create_connection
        "ssl",
        "server_hostname",
        "family",
        "local_addr",
        "happy_eyeballs_delay",
        "interleave",
        "ssl_handshake_timeout",
        "ssl_shutdown_timeout",
        "proxy_ssl",
        "proxy_server_hostname",
    }
)
"""Extra keyword arguments ``ResilientConnection`` passes to websockets' ``connect``."""

MANAGED: Mapping[str, str] = {
    "additional_headers": "use headers= (a mapping, or a callable evaluated before every dial)",
    "extra_headers": "use headers= (a mapping, or a callable evaluated before every dial)",
    "uri": "pass the URL as the first argument",
    "process_exception": "use classify= to decide what is retried",
    "reconnect_delays": "use backoff=",
    "create_connection": "not supported: the connection owns its transport",
    "sock": "not supported: every reconnect needs a new socket",
    "host": "put the host in the URL",
    "port": "put the port in the URL",
}
"""websockets arguments the connection sets itself, and what to use instead."""

OWN_OPTIONS = (
    "backoff",
    "breaker",
    "open_timeout",
    "ping_interval",
    "ping_timeout",
    "close_timeout",
    "stable_after",
    "buffer_size",
    "buffer_bytes",
    "overflow",
    "send_timeout",
    "drain_timeout",
    "message_ttl",
    "max_size",
    "max_queue",
    "on_dead_letter",
    "dead_letter_capacity",
    "on_open",
    "on_message",
    "headers",
    "name",
    "classify",
    "probe",
    "clock",
    "hook_timeout",
    "unhealthy_after",
    "rtt_limit",
    "buffer_high_water",
    "coordinator",
    "transport",
    "compression",
)
"""``ResilientConnection``'s own keyword options (named in the error for an unknown one)."""

_HANDSHAKE_HEADERS = {
    "host": "put the host in the URL",
    "upgrade": "set by the handshake",
    "connection": "set by the handshake",
    "sec-websocket-key": "set by the handshake",
    "sec-websocket-version": "set by the handshake",
    "sec-websocket-extensions": "use compression= or extensions=",
    "sec-websocket-protocol": "use subprotocols=",
}

_SEPARATORS = frozenset('()<>@,;:\\"/[]?={} \t')


def is_token(text: str) -> bool:
    """Whether ``text`` is an HTTP token (RFC 9110): header names, subprotocols."""
    return bool(text) and all(32 < ord(c) < 127 and c not in _SEPARATORS for c in text)


def check_callables(**named: object) -> None:
    """Check that every ``named`` value is None or callable.

    Raises:
        ConfigError: One is not, naming it.
    """
    for param, value in named.items():
        if value is not None and not callable(value):
            raise ConfigError(f"{param} must be a callable, got {type(value).__name__}")


def check_handler(handler: T) -> T:
    """Return ``handler`` (``on_message``) if it is None or a plain (not async) callable.

    Raises:
        ConfigError: Not callable, or an ``async def`` function (its coroutines would never
            be awaited: use ``async for`` to await per message).
    """
    if handler is None:
        return handler
    check_callables(on_message=handler)
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        raise ConfigError(
            "on_message must be a plain function: it is called with each message as it "
            "arrives and is not awaited (to await per message, use async for)"
        )
    return handler


def check_connect_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``kwargs`` if every key is a websockets option the connection passes on.

    Raises:
        ConfigError: An unknown or managed name (the message lists the accepted ones and
            suggests the closest), or a bad value of a known one.
    """
    for key, value in kwargs.items():
        if key in MANAGED:
            raise ConfigError(f"{key} is managed by ResilientConnection: {MANAGED[key]}")
        if key not in CONNECT_KWARGS:
            known = sorted(CONNECT_KWARGS | set(OWN_OPTIONS))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown option {key!r}{hint}; ResilientConnection accepts its own options "
                f"({', '.join(OWN_OPTIONS)}) and these websockets options: "
                f"{', '.join(sorted(CONNECT_KWARGS))}"
            )
        _check_value(key, value)
    return dict(kwargs)


def _check_value(key: str, value: Any) -> None:
    if key == "subprotocols":
        if isinstance(value, str) or not all(isinstance(p, str) and is_token(p) for p in value):
            raise ConfigError(
                f"subprotocols must be a list of HTTP tokens such as ['chat.v2'], got {value!r}"
            )
    elif key == "ssl":
        if not isinstance(value, (bool, ssl.SSLContext)) and value is not None:
            raise ConfigError(f"ssl must be an ssl.SSLContext, True or None, got {value!r}")
    elif key in ("origin", "user_agent_header", "server_hostname"):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key} must be a string or None, got {type(value).__name__}")
        if isinstance(value, str) and _bad_chars(value):
            raise ConfigError(f"{key} must not contain CR, LF or NUL")
    elif key == "write_limit":
        check_int(value, "write_limit", 1)


def _bad_chars(text: str) -> bool:
    return any(c in text for c in "\r\n\0")


def check_headers(headers: object, param: str = "headers") -> dict[str, str]:
    """Return ``headers`` as a dict after checking every name and value.

    Raises:
        ConfigError: Not a mapping of ``str`` to ``str``, a name that is not an HTTP token or
            that the handshake sets itself, or a value with CR, LF or NUL. A credential-looking
            value is never shown in the message.
    """
    if not isinstance(headers, Mapping):
        raise ConfigError(f"{param} must be a mapping of str to str, got {type(headers).__name__}")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not is_token(name):
            raise ConfigError(f"{param}: header name {name!r} is not an HTTP token")
        if name.lower() in _HANDSHAKE_HEADERS:
            raise ConfigError(f"{param}: {name} cannot be set: {_HANDSHAKE_HEADERS[name.lower()]}")
        if not isinstance(value, str):
            raise ConfigError(
                f"{param}: the value of {name} must be a str, got {type(value).__name__}"
            )
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
            shown = "***" if is_secret_name(name) else redact_text(repr(value))
            raise ConfigError(
                f"{param}: the value of {name} contains CR, LF, NUL or another control "
                f"character (header injection): {shown}"
            )
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigError(
                f"{param}: the value of {name} has characters HTTP headers cannot carry "
                "(only Latin-1 is allowed; percent-encode or base64 it)"
            ) from None
        out[name] = value
    return out


def check_ws_url(url: object, param: str = "url") -> str:
    """Return ``url`` if it is a ``ws://`` / ``wss://`` URL with a host.

    Raises:
        ConfigError: Anything else; the message names ``param`` and shows the URL redacted.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{param} must be a ws:// or wss:// URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise ConfigError(
            f"{param} is not a valid URL: {redact_url(url)!r} ({exc}; a port is a number "
            "from 1 to 65535)"
        ) from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise ConfigError(f"{param} must be a ws:// or wss:// URL, got {redact_url(url)!r}")
    if parts.port == 0 or any(c.isspace() or ord(c) < 32 for c in url):
        raise ConfigError(
            f"{param} must have a port from 1 to 65535 and no spaces or control characters, "
            f"got {redact_url(url)!r}"
        )
    try:
        parse_uri(url)
    except (InvalidURI, ValueError) as exc:  # UnicodeError: a host IDNA cannot encode
        raise ConfigError(f"{param} is not a valid URL: {redact_url(url)!r} ({exc})") from exc
    return url
