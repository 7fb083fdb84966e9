"""The plain WebSocket adapter: dial one transport, keep it alive, notice when it dies.

Dialing evaluates the URL and header sources afresh (so a token provider is asked before
every dial), checks what they returned (:mod:`.checks`: a bad value is a fatal ConfigError,
not a retry) and hands the rest to ``websockets.asyncio.client.connect``. Redirects are
followed as websockets does (at most 10; more is a redirect loop, fatal), except that every
credential-looking header (``Authorization``, ``apikey``, ``X-Api-Key``, cookies...) is dropped
on a redirect to another origin. Keepalive is ours,
not websockets': when a ping goes unanswered for ``ping_timeout`` the transport is declared
dead at once, instead of waiting ``close_timeout`` for a closing handshake that a dead peer
never sends.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidURI
from websockets.uri import parse_uri

from .._core.errors import ConfigError
from .._core.log import is_secret_name, redact_url
from .checks import check_headers

__all__ = [
    "DialOptions",
    "HeadersSource",
    "UrlSource",
    "check_ws_url",
    "dial",
    "evaluate",
    "keepalive",
]

T = TypeVar("T")
UrlSource = str | Callable[[], str | Awaitable[str]]
"""A URL, or a sync/async callable returning one (evaluated before every dial)."""
HeadersSource = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]
"""Handshake headers, or a sync/async callable returning them (evaluated before every dial)."""


async def evaluate(source: T | Callable[[], T | Awaitable[T]]) -> T:
    """Return ``source``, or the result of calling it (awaited if it is awaitable)."""
    if callable(source):
        result = source()
        if inspect.isawaitable(result):
            return await result
        return result
    return source


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


@dataclass(frozen=True, slots=True)
class DialOptions:
    """What ``websockets`` needs to open one transport.

    Attributes:
        open_timeout: Dial + handshake timeout (seconds).
        close_timeout: Closing handshake timeout (seconds).
        max_size: Largest inbound message (bytes).
        max_queue: Inbound frames queued before websockets stops reading.
        extra: Other keyword arguments for ``websockets.asyncio.client.connect``.
    """

    open_timeout: float
    close_timeout: float
    max_size: int
    max_queue: int
    extra: Mapping[str, Any] = field(default_factory=dict)


async def dial(
    url: UrlSource, headers: HeadersSource | None, options: DialOptions
) -> ClientConnection:
    """Open one WebSocket transport (websockets' own keepalive off: :func:`keepalive` is ours).

    Raises:
        ConfigError: The URL source returned something that is not a ws(s) URL.
        Exception: Whatever ``websockets`` raised (classified by the supervisor).
    """
    target = check_ws_url(await evaluate(url))
    extra_headers = None if headers is None else check_headers(await evaluate(headers))
    return await _Connect(
        target,
        additional_headers=extra_headers,
        open_timeout=options.open_timeout,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=options.close_timeout,
        max_size=options.max_size,
        max_queue=options.max_queue,
        **options.extra,
    )


class _Connect(connect):
    """websockets' ``connect`` that drops EVERY credential header on a cross-origin redirect.

    websockets itself strips only Authorization, Cookie and Proxy-Authorization, so an
    ``apikey`` header would follow a redirect to another origin.
    """

    def process_redirect(self, exc: Exception) -> Exception | str:
        old = self.ws_uri
        result = super().process_redirect(exc)
        if isinstance(result, str) and self.additional_headers is not None:
            new = parse_uri(result)
            if (old.secure, old.host, old.port) != (new.secure, new.host, new.port):
                self.additional_headers = Headers(
                    (name, value)
                    for name, value in Headers(self.additional_headers).raw_items()
                    if not is_secret_name(name)
                )
        return result


async def keepalive(
    ws: ClientConnection,
    interval: float,
    timeout: float,
    *,
    on_alive: Callable[[float], None],
    on_dead: Callable[[str, BaseException], None],
) -> None:
    """Ping every ``interval`` seconds; report each round trip, or the death of the transport.

    Returns when the transport closes or when a pong did not come within ``timeout`` (after
    calling ``on_dead("ping_timeout", error)``, which is expected to abort the transport).
    Sleeps in real time: it measures the network, so the testing switch does not skip it.
    """
    while True:
        await anyio.sleep(interval)
        try:
            pong = await ws.ping()
        except ConnectionClosed:
            return
        try:
            with anyio.fail_after(timeout):
                rtt = await pong
        except TimeoutError:
            on_dead("ping_timeout", TimeoutError(f"no pong within {timeout}s"))
            return
        except ConnectionClosed:
            return
        on_alive(rtt)
