"""dial(): evaluate a connection's URL and header sources, and open one transport."""

from __future__ import annotations

from collections.abc import Awaitable

from .base import Adapter, DialOptions, Transport
from .checks import check_headers, check_ws_url
from .websocket import _DEFAULT, HeadersSource, UrlSource, WebsocketsAdapter, evaluate

__all__ = ["dial"]


def dial(
    url: UrlSource, headers: HeadersSource | None, options: DialOptions
) -> Awaitable[Transport]:
    """Evaluate the URL and header sources, then open one transport with ``options.adapter``.

    Static sources (a URL string, headers that are not a callable) go straight to the
    adapter's ``connect``: no coroutine of this function's own lives through the handshake
    (it counts in what every dial in flight holds).

    Raises:
        ConfigError: The URL source returned something that is not a ws(s) URL (raised by
            the call when the source is static, else by the await).
        Exception: Whatever the adapter raised (classified by the supervisor).
    """
    if isinstance(url, str) and not callable(headers):
        extra_headers = None if headers is None else check_headers(headers)
        return _adapter(options).connect(check_ws_url(url), extra_headers, options)
    return _dial_sources(url, headers, options)


async def _dial_sources(
    url: UrlSource, headers: HeadersSource | None, options: DialOptions
) -> Transport:
    target = check_ws_url(await evaluate(url))
    extra_headers = None if headers is None else check_headers(await evaluate(headers))
    return await _adapter(options).connect(target, extra_headers, options)


def _adapter(options: DialOptions) -> Adapter:
    adapter = options.adapter
    if adapter is None:
        adapter = _DEFAULT if not options.extra else WebsocketsAdapter(options.extra)
    return adapter
