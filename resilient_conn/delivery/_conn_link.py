"""The client side's transport: frames written through a ResilientConnection (internal).

The counterpart of the server's transports in ``_links.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from .._core.errors import ConnectionClosedError, ConnectionFailedError, NotConnectedError
from ..connection.connection import ResilientConnection
from ._transport import LinkDown

__all__ = ["ConnLink"]

_DOWN = (LinkDown, NotConnectedError, ConnectionClosedError, ConnectionFailedError)


class ConnLink:
    """Writes frames through the connection, never into its buffer."""

    __slots__ = ("conn",)

    def __init__(self, conn: ResilientConnection) -> None:
        self.conn = conn

    async def send(self, frame: str | bytes) -> None:
        """Write one frame; raise :class:`LinkDown` when the connection cannot take it."""
        try:
            await self.conn.send(frame, buffer=False)
        except (NotConnectedError, ConnectionClosedError, ConnectionFailedError):
            raise LinkDown from None

    def fail(self, reason: str) -> None:
        """Drop the current transport: the server broke the protocol."""
        self.conn.fail_current("delivery_protocol_error", ConnectionError(reason))

    def fast_send_many(
        self,
    ) -> tuple[Callable[[Sequence[str | bytes]], Awaitable[None]], tuple[type[Exception], ...]]:
        """The connection's own ``send_many`` (no wrapper per call), the errors meaning down."""
        return partial(self.conn.send_many, buffer=False), _DOWN
