"""The picows adapter: the same Transport, on picows' Cython WebSocket client.

Install with ``pip install 'resilient-conn[picows]'`` and pass ``transport="picows"``.
picows hands each frame to a callback; :class:`PicowsTransport` turns those frames into the
websockets-style :class:`~resilient_conn.adapters.base.Transport` the supervisor speaks:

- whole messages (fragments reassembled; text decoded as UTF-8, bad UTF-8 closes with 1007),
  at most ``max_size`` bytes (a larger one closes with 1009);
- an inbound queue of at most ``max_queue`` messages: past it, the socket stops being read
  until the consumer catches up (so a flooding peer cannot grow memory);
- pings matched to pongs by payload (the round trip in seconds); picows answers pings itself;
- a close frame from the server is answered with the same code, then the TCP connection is
  dropped; ``close()`` waits ``close_timeout`` for the server's answer, then aborts;
- errors in websockets' vocabulary (``ConnectionClosedOK`` / ``ConnectionClosedError`` with
  the close frames, ``InvalidStatus`` with the response headers, ``InvalidHandshake``,
  ``TimeoutError`` past ``open_timeout``), so the default classifier treats both adapters alike.

What picows cannot do is refused when the adapter is built, not at the first message:
``compression="deflate"`` (picows has no permessage-deflate) and connect options it has no
equivalent for. Supported options: ``ssl``, ``subprotocols``, ``compression`` (None or
``"auto"``, which means none here), ``origin``, ``user_agent_header``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import picows
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import Response

from .._core.errors import ConfigError
from ._picows_transport import PicowsTransport
from .base import AdapterFactory, DialOptions

__all__ = ["ADAPTER", "PicowsAdapter", "PicowsTransport"]

_SUPPORTED = frozenset({"ssl", "subprotocols", "compression", "origin", "user_agent_header"})


class PicowsAdapter:
    """Opens :class:`PicowsTransport` with ``picows.ws_connect``.

    Args:
        extra: Connect options (see the module docstring for the supported ones).

    Raises:
        ConfigError: ``compression="deflate"`` (picows cannot compress), an unsupported
            option, or a badly typed one.
    """

    name = "picows"

    def __init__(self, extra: Mapping[str, Any]) -> None:
        unknown = sorted(set(extra) - _SUPPORTED)
        if unknown:
            raise ConfigError(
                f"transport='picows' does not support {', '.join(unknown)} "
                f"(supported: {', '.join(sorted(_SUPPORTED))}); use transport='websockets'"
            )
        compression = extra.get("compression", "auto")
        if compression not in ("auto", None):
            raise ConfigError(
                f"transport='picows' cannot compress (compression={compression!r}): picows has "
                "no permessage-deflate; pass compression=None, or use transport='websockets'"
            )
        ssl = extra.get("ssl")
        if not (ssl is None or ssl is True or isinstance(ssl, ssl_module.SSLContext)):
            raise ConfigError(f"ssl must be an SSLContext, True or None, got {ssl!r}")
        self._ssl: ssl_module.SSLContext | None = ssl if ssl is not True else None
        protocols = extra.get("subprotocols")
        if protocols is not None and (
            isinstance(protocols, str)
            or not isinstance(protocols, Sequence)
            or not all(isinstance(p, str) and p for p in protocols)
        ):
            raise ConfigError(f"subprotocols must be a list of strings, got {protocols!r}")
        self._subprotocols: tuple[str, ...] = tuple(protocols or ())
        headers: list[tuple[str, str]] = []
        for key, header in (("origin", "Origin"), ("user_agent_header", "User-Agent")):
            value = extra.get(key)
            if value is not None:
                if not isinstance(value, str):
                    raise ConfigError(f"{key} must be a string, got {value!r}")
                headers.append((header, value))
        if self._subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(self._subprotocols)))
        self._fixed_headers = headers

    async def connect(
        self, url: str, headers: Mapping[str, str] | None, options: DialOptions
    ) -> PicowsTransport:
        """Open one transport to ``url``.

        Raises:
            InvalidStatus: The server answered the handshake with an HTTP error.
            InvalidHandshake: Any other handshake failure (e.g. a subprotocol not offered).
            InvalidURI: picows could not parse the URL.
            TimeoutError: No open connection within ``open_timeout``.
            OSError: The TCP connection failed.
        """
        all_headers = [*self._fixed_headers, *(headers or {}).items()]
        url, basic = _split_userinfo(url)
        if basic is not None and not any(k.lower() == "authorization" for k, _ in all_headers):
            all_headers.append(("Authorization", basic))  # as websockets does with user:pass@

        def listener() -> PicowsTransport:
            return PicowsTransport(options.max_size, options.max_queue, options.close_timeout)

        # picows does not close the connection when ws_connect is cancelled during the
        # handshake (open_timeout, or aclose() while dialing): the socket would leak. So we
        # make the socket, and on any failure shut it down; the transport then sees EOF and
        # closes it.
        handed: list[socket.socket] = []

        async def make_socket(parsed: Any) -> socket.socket:
            sock = await _connected_socket(parsed.host, parsed.port)
            handed.append(sock)
            return sock

        try:
            async with asyncio.timeout(options.open_timeout):
                ws, transport = await picows.ws_connect(
                    listener,
                    url,
                    ssl_context=self._ssl,
                    websocket_handshake_timeout=None,
                    max_frame_size=options.max_size,
                    extra_headers=all_headers,
                    enable_auto_pong=True,
                    logger_name="resilient_conn.picows",
                    # picows starts with a 16 KiB read buffer per connection and grows it on
                    # demand; 2 KiB saves ~13 KB per idle connection (bench_idle.py).
                    read_buffer_init_size=2048,
                    socket_factory=make_socket,
                )
        except BaseException as exc:
            for sock in handed:
                if sock.fileno() != -1:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            if isinstance(exc, picows.WSInvalidStatusError):
                raise _invalid_status(exc) from exc
            if isinstance(exc, picows.WSInvalidURL):
                raise InvalidURI(url, str(exc)) from exc
            if isinstance(exc, picows.WSHandshakeError):
                raise InvalidHandshake(str(exc)) from exc
            raise
        assert isinstance(transport, PicowsTransport)
        chosen = ws.response.headers.get("Sec-WebSocket-Protocol")
        if chosen is not None:
            if chosen not in self._subprotocols:
                ws.disconnect(graceful=False)
                raise InvalidHandshake(f"server chose subprotocol {chosen!r}, not offered")
            transport.subprotocol = chosen
        return transport


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without user:pass@, "Basic ..." header value or None)``: picows ignores userinfo."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    host = parts.netloc.rsplit("@", 1)[1]
    stripped = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return stripped, "Basic " + base64.b64encode(credentials.encode()).decode()


async def _connected_socket(host: str, port: int) -> socket.socket:
    """A TCP socket connected to ``host:port`` (each resolved address in turn)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error or OSError(f"cannot resolve {host!r}")


def _invalid_status(exc: picows.WSInvalidStatusError) -> InvalidStatus:
    response = exc.response
    status = int(response.status) if response is not None else 0
    headers = Headers()
    if response is not None:
        for key, value in response.headers.items():
            headers[key] = value
    reason = getattr(response.status, "phrase", "") if response is not None else ""
    body = (response.body or b"") if response is not None else b""
    return InvalidStatus(Response(status, reason, headers, body))


ADAPTER = PicowsAdapter
"""The adapter class :func:`~resilient_conn.adapters.base.get_adapter` builds for this module."""

if TYPE_CHECKING:  # mypy proves the adapter and its transport satisfy the protocols
    _FACTORY: AdapterFactory = PicowsAdapter
