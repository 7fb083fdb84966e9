"""The server side's transports: a websockets connection or an ASGI WebSocket (internal)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from functools import partial
from typing import Any

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..adapters.websocket import send_many
from ._transport import LinkDown
from .envelope import EnvelopeError

__all__ = [
    "ASGIReceive",
    "ASGIScope",
    "ASGISend",
    "AsgiLink",
    "Closed",
    "ServerLink",
    "WebsocketsLink",
]

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Closed(Exception):
    """The transport ended."""


class ServerLink:
    """A server-side transport: websockets or ASGI."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.failure: str | None = None

    def fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        if self.scope is not None:
            self.scope.cancel()

    def fast_send_many(
        self,
    ) -> tuple[Callable[[Sequence[str | bytes]], Awaitable[None]], tuple[type[Exception], ...]]:
        return self.send_many, (LinkDown,)

    async def send_many(self, frames: Sequence[str | bytes]) -> None:
        for frame in frames:
            await self.send(frame)

    async def send(self, frame: str | bytes) -> None:
        raise NotImplementedError

    async def recv(self) -> str | bytes:
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        raise NotImplementedError


class WebsocketsLink(ServerLink):
    def __init__(self, ws: ServerConnection) -> None:
        super().__init__()
        self.ws = ws

    async def send(self, frame: str | bytes) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            raise LinkDown from None

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            raise Closed from None

    def fast_send_many(
        self,
    ) -> tuple[Callable[[Sequence[str | bytes]], Awaitable[None]], tuple[type[Exception], ...]]:
        return partial(send_many, self.ws), (LinkDown, ConnectionClosed)

    async def close(self, code: int, reason: str) -> None:
        with anyio.move_on_after(2.0):
            await self.ws.close(code, reason)
        self.ws.transport.abort()


class AsgiLink(ServerLink):
    def __init__(self, receive: ASGIReceive, send: ASGISend) -> None:
        super().__init__()
        self._receive = receive
        self._send = send
        self.closed = False

    async def accept(self, subprotocol: str | None) -> None:
        message = await self._receive()
        if message.get("type") != "websocket.connect":
            self.closed = True
            raise EnvelopeError(f"ASGI: expected websocket.connect, got {message.get('type')!r}")
        reply: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            reply["subprotocol"] = subprotocol
        await self._send(reply)

    async def send(self, frame: str | bytes) -> None:
        if self.closed:
            raise LinkDown
        key = "text" if isinstance(frame, str) else "bytes"
        try:
            await self._send({"type": "websocket.send", key: frame})
        except (OSError, RuntimeError) as exc:  # servers raise these once the client is gone
            self.closed = True
            raise LinkDown from exc

    async def recv(self) -> str | bytes:
        while True:
            if self.closed:
                raise Closed
            message = await self._receive()
            kind = message.get("type")
            if kind == "websocket.disconnect":
                self.closed = True
                raise Closed
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    return str(text)
                data = message.get("bytes")
                if data is not None:
                    return bytes(data)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with anyio.move_on_after(2.0):
            with contextlib.suppress(OSError, RuntimeError):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
