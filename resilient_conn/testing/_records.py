"""What a :class:`~resilient_conn.testing.ScriptedServer` records: connections and rejections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["ConnectionRecord", "RejectionRecord", "Rule"]


@dataclass(slots=True)
class ConnectionRecord:
    """One accepted WebSocket connection, as the server saw it (updated until it closes).

    Attributes:
        id: 1, 2, 3... in order of acceptance (stable across restarts).
        path: Request path, with the query string.
        request_headers: The client's handshake headers.
        remote: The client's ``(host, port)``.
        opened_at: ``time.monotonic()`` when the handshake completed.
        closed_at: ``time.monotonic()`` when the connection closed, or None while open.
        close_code: Close code of the connection once closed (the client's, or 1006 when the
            TCP connection was lost without a closing handshake).
        close_reason: Close reason once closed.
        messages_received: Messages the server received on this connection.
    """

    id: int
    path: str
    request_headers: Headers
    remote: tuple[str, int] | None
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    messages_received: int = 0

    @property
    def open(self) -> bool:
        """Whether the connection is still open."""
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """A handshake the server refused with an HTTP response.

    Attributes:
        path: Request path.
        request_headers: The client's handshake headers.
        status: HTTP status sent.
        at: ``time.monotonic()`` when it was sent.
    """

    path: str
    request_headers: Headers
    status: int
    at: float


@dataclass(frozen=True, slots=True)
class Rule:
    """A handshake rejection a test scripted: status, headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: str

    @classmethod
    def make(cls, status: int, headers: Mapping[str, str] | None, body: str) -> Rule:
        """Check ``status`` (an HTTP status, not 101) and build the rule."""
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code (100-599), got {status!r}")
        if status == HTTPStatus.SWITCHING_PROTOCOLS:
            raise ValueError("status must not be 101: that would accept the handshake")
        return cls(status, tuple((headers or {}).items()), body)

    def respond(self, conn: ServerConnection) -> Response:
        """The HTTP response that rejects ``conn``'s handshake."""
        response = conn.respond(self.status, self.body)
        for name, value in self.headers:
            response.headers[name] = value
        return response
