"""One HTTP response over ASGI: the start (status and headers) and the body (none for HEAD).

Shared by the health app and the dashboard, which differ only in their standing headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ["respond"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def respond(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    head: bool,
    headers: Sequence[tuple[bytes, bytes]],
) -> None:
    """Send a complete response: content type and length, then ``headers``, then the body."""
    start = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    start.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body})
