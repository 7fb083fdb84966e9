"""What an endpoint writes through: a Link to the peer and one Attachment per transport (internal).

The client's link is in ``_conn_link.py``, the server's (websockets, ASGI) in ``_links.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .envelope import Hello

__all__ = ["Attachment", "Link", "LinkDown"]


class LinkDown(Exception):
    """The transport cannot take a frame now (closed, or not ready)."""


class Link(Protocol):
    """One way of writing frames to the peer."""

    async def send(self, frame: str | bytes) -> None:
        """Write one frame; raise :class:`LinkDown` when the transport cannot take it."""

    def fail(self, reason: str) -> None:
        """Drop the transport because the peer broke the protocol."""

    def fast_send_many(
        self,
    ) -> tuple[Callable[[Sequence[str | bytes]], Awaitable[None]], tuple[type[Exception], ...]]:
        """A writer of several frames at once (the pump's), and the errors meaning LinkDown.

        The writer sends the frames in order, each its own WebSocket message, with as few
        writes to the socket as the transport allows; no wrapper per call on the hot path.
        """


@dataclass(eq=False, slots=True)
class Attachment:
    """One transport of an endpoint.

    Attributes:
        link: How to write to it.
        ready: True once the hello exchange and the re-send are done (the pump may write).
        down: True once a write failed (the transport is gone).
        peer_hello: The peer's hello on this transport, once received.
    """

    link: Link
    ready: bool = False
    down: bool = False
    peer_hello: Hello | None = None
