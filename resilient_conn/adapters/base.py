"""What the supervisor needs of a transport, and of the adapter that dials one.

A :class:`Transport` is one open WebSocket: the small subset of websockets'
``ClientConnection`` the supervisor speaks (send, recv, ping, close, abort, how it ended, the
negotiated subprotocol). An :class:`Adapter` opens one from a URL, handshake headers and
:class:`DialOptions`. Two adapters ship: ``websockets`` (the default) and ``picows`` (the
``resilient-conn[picows]`` extra); :func:`get_adapter` turns the ``transport=`` option into one.

Every network wait the supervisor makes on a transport has a deadline, on every adapter:
:meth:`Transport.serve` fails a stuck closing handshake at once, and
:mod:`~resilient_conn.adapters.deadlines` bounds a send and the close (aborting the transport
past the bound); :class:`~resilient_conn.adapters.keepalive.Keepalive` bounds a ping's write
and its pong together.

The error vocabulary is websockets' on every adapter, so one classifier serves them all:

- ``send``/``recv``/``ping`` on a closed transport raise
  :class:`websockets.exceptions.ConnectionClosed` (``ConnectionClosedOK`` after a clean 1000 /
  1001 close, ``ConnectionClosedError`` otherwise); :attr:`Transport.close_exc` is that
  exception, carrying the close frames received (``rcvd``) and sent (``sent``).
- Two concurrent ``recv()`` calls raise :class:`websockets.exceptions.ConcurrencyError`.
- A rejected handshake raises :class:`websockets.exceptions.InvalidStatus` (with the response's
  status and headers, so ``Retry-After`` is honoured), a malformed one
  :class:`websockets.exceptions.InvalidHandshake`; a dial past ``open_timeout`` raises
  :class:`TimeoutError`; a refused or reset TCP connection the ``OSError`` it was.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._core.errors import ConfigError

__all__ = ["TRANSPORTS", "Adapter", "DialOptions", "Message", "Transport", "get_adapter"]

Message = str | bytes

TRANSPORTS: dict[str, str] = {
    "websockets": "resilient_conn.adapters.websocket",
    "picows": "resilient_conn.adapters.picows",
}
"""The ``transport=`` names and the module whose ``ADAPTER`` class implements each."""


class Transport(Protocol):
    """One open WebSocket, as the supervisor uses it.

    Exceptions follow websockets' (see the module docstring), whatever the library underneath.
    """

    async def send(self, message: Message) -> None:
        """Send one text (``str``) or binary (``bytes``) message.

        Raises:
            websockets.exceptions.ConnectionClosed: The transport is closed.
        """
        ...

    def start_send(self, message: Message) -> Awaitable[None] | None:
        """Hand one message to the transport now, without a coroutine on the common path.

        The connection's ``send()`` goes through here: most writes finish at once and return
        None. Otherwise the returned awaitable finishes the send: it waits while the peer is
        not reading (flow control), or raises ``ConnectionClosed`` once the transport is
        closing. The caller bounds that wait (``send_timeout``); :meth:`send` is the same
        with no bound.
        """
        ...

    def start_send_many(self, messages: Sequence[Message]) -> Awaitable[None] | None:
        """:meth:`start_send` for several messages: each its own message, in order.

        With as few writes to the socket as the library allows (websockets: one for the
        lot). Raises ``TypeError`` (or returns an awaitable that does) for a message that is
        neither ``str`` nor ``bytes``, before anything is written.
        """
        ...

    def send_now(self, message: Message, room: int = 0) -> bool:
        """Write one message if that needs no wait; else False, and nothing was written.

        A write would wait while the transport is closing, and while the peer is not reading
        (flow control), unless the transport's write buffer holds under ``room`` bytes then.
        ``send_nowait()`` of the connection goes through here.

        Raises:
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        ...

    def set_handler(self, handler: Callable[[Message], object]) -> None:
        """From now on hand each whole message to ``handler`` as it arrives, in order.

        Messages already queued go first; :meth:`recv` then gets nothing. The connection's
        ``on_message`` option sets it on each transport before serving it.
        """
        ...

    def recv_nowait(self) -> Message | None:
        """The next whole message if one is ready now, else None (then await :meth:`recv`).

        Also None while a :meth:`recv` is waiting, or whenever the message needs the full
        path (a fragmented one, invalid UTF-8 that closes the transport): :meth:`recv`
        handles those.
        """
        ...

    async def recv(self) -> Message:
        """Receive the next whole message (fragments reassembled).

        Cancelling it loses nothing: the next call returns the next message.

        Raises:
            websockets.exceptions.ConnectionClosed: The transport is closed.
            websockets.exceptions.ConcurrencyError: Another ``recv()`` is waiting.
        """
        ...

    async def ping(self) -> Awaitable[float]:
        """Send a ping; return an awaitable of the round trip in seconds (done on its pong).

        Raises:
            websockets.exceptions.ConnectionClosed: The transport is closed (also set on the
                returned awaitable if it closes before the pong).
        """
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Perform the closing handshake (waits at most the adapter's ``close_timeout``)."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone."""
        ...

    def serve(self) -> Awaitable[None]:
        """Return what completes once the transport is closed, failing a stuck close at once.

        What the supervisor awaits while the transport is up: a coroutine, or a future the
        transport completes itself (so an idle connection holds no frame of it). Unlike
        :meth:`wait_closed`, it does not wait out ``close_timeout`` for a peer that went
        silent after a protocol error (the transport answered with a close frame of its own):
        that transport is aborted at once. A close the peer started gets ``close_timeout`` to
        finish, then is aborted. Cancelling it leaves the transport as it was.
        """
        ...

    def watch(
        self, callback: Callable[[object], object], context: contextvars.Context | None
    ) -> bool:
        """Call ``callback`` (in ``context``) once the transport is closed; False if it is.

        :meth:`serve` for a watcher that holds no future of its own (a parked connection):
        the same ending, a stuck close cut short the same way, and nothing to cancel.
        """
        ...

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake (a dead peer)."""
        ...

    @property
    def close_exc(self) -> Exception:
        """The ``ConnectionClosed`` describing how the transport ended (valid once closed)."""
        ...

    @property
    def close_code(self) -> int | None:
        """The close code received (None while open, or if the peer sent none)."""
        ...

    @property
    def close_reason(self) -> str | None:
        """The close reason received (None while open, or if the peer sent none)."""
        ...

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose (None if none)."""
        ...

    @property
    def is_open(self) -> bool:
        """True until a close frame was sent or received or the connection dropped."""
        ...


@dataclass(frozen=True, slots=True)
class DialOptions:
    """What an adapter needs to open one transport.

    Attributes:
        open_timeout: Dial + handshake timeout (seconds).
        close_timeout: Closing handshake timeout (seconds).
        max_size: Largest inbound message (bytes).
        max_queue: Inbound messages queued before the transport stops reading the socket.
        extra: Other keyword arguments for the adapter (``ssl``, ``subprotocols``,
            ``compression``, ... for websockets' ``connect``).
        adapter: The adapter that dials (None: websockets).
    """

    open_timeout: float
    close_timeout: float
    max_size: int
    max_queue: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    adapter: Adapter | None = None


class Adapter(Protocol):
    """Opens transports of one kind. Built once per connection; checks options at construction.

    Construction raises :class:`~resilient_conn.ConfigError` for an option the library
    underneath cannot honour (e.g. ``compression="deflate"`` on picows), not the first dial.
    """

    name: str
    """The ``transport=`` name (``"websockets"``, ``"picows"``)."""

    async def connect(
        self, url: str, headers: Mapping[str, str] | None, options: DialOptions
    ) -> Transport:
        """Open one transport to ``url`` (already checked) with these handshake headers."""
        ...


class AdapterFactory(Protocol):
    """An adapter class: built from the extra connect options (checked at construction)."""

    def __call__(self, extra: Mapping[str, Any]) -> Adapter:
        """Build the adapter, or raise ``ConfigError`` for an option it cannot honour."""
        ...


def get_adapter(transport: str, extra: Mapping[str, Any]) -> Adapter:
    """Build the adapter named ``transport`` for these extra connect options.

    Raises:
        ConfigError: An unknown name, a missing optional dependency (with the extra to
            install), or an option that adapter cannot honour.
    """
    module_name = TRANSPORTS.get(transport) if isinstance(transport, str) else None
    if module_name is None:
        raise ConfigError(
            f"transport must be one of {sorted(TRANSPORTS)}, got {transport!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"transport={transport!r} needs the {transport!r} package: "
            f"pip install 'resilient-conn[{transport}]' ({exc})"
        ) from exc
    factory: AdapterFactory = module.ADAPTER
    return factory(extra)
