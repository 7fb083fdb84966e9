"""DeliveryHub.serve_asgi driven the way an ASGI server drives an application: accept,
hello, data both ways, acks, disconnect, and the session resumed on a new connection."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest

from resilient_conn.delivery import DeliveryHub, EnvelopeError, ServerSession
from resilient_conn.delivery.envelope import (
    Ack,
    Data,
    Hello,
    decode,
    encode_ack,
    encode_data,
    encode_hello,
)

pytestmark = pytest.mark.anyio

Message = MutableMapping[str, Any]


class FakeAsgiServer:
    """The server side of one ASGI WebSocket connection: queues both ways."""

    def __init__(self) -> None:
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()
        self.gone = False

    async def receive(self) -> Message:
        """The ASGI ``receive`` callable."""
        return await self.to_app.get()

    async def send(self, message: Message) -> None:
        """The ASGI ``send`` callable (fails once the client is gone)."""
        if self.gone:
            raise OSError("the client is gone")
        await self.from_app.put(message)

    async def client_send(self, frame: str | bytes) -> None:
        """The client sends a WebSocket message."""
        key = "text" if isinstance(frame, str) else "bytes"
        await self.to_app.put({"type": "websocket.receive", key: frame})

    async def client_recv(self) -> Any:
        """The client receives the next frame (decoded)."""
        with anyio.fail_after(5):
            message = await self.from_app.get()
        assert message["type"] == "websocket.send"
        return decode(message.get("text") or message["bytes"])


def _app(hub: DeliveryHub, got: list[str | bytes], views: list[ServerSession]) -> Any:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        async with hub.serve_asgi(scope, receive, send) as session:
            views.append(session)
            async for message in session:
                got.append(message)
                text = message if isinstance(message, str) else message.decode()
                await session.send(f"echo {text}")

    return app


async def test_asgi_endpoint_delivers_acks_and_resumes_after_a_disconnect() -> None:
    """Over ASGI the hub accepts, answers the hello, delivers each message once, acks it,
    echoes; after a disconnect a new connection of the same session gets the echoes the
    client had not acknowledged again, in order, and duplicates it re-sends are dropped."""
    hub = DeliveryHub(ack_every=1, ack_delay=0)
    got: list[str | bytes] = []
    views: list[ServerSession] = []
    app = _app(hub, got, views)
    first = FakeAsgiServer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "websocket"}, first.receive, first.send)
        await first.to_app.put({"type": "websocket.connect"})
        with anyio.fail_after(5):
            assert (await first.from_app.get())["type"] == "websocket.accept"
        await first.client_send(encode_hello(Hello("asgi", "c1", 1, None, 0)))
        hello = await first.client_recv()
        assert isinstance(hello, Hello)
        assert hello.peer_epoch == "c1"
        await first.client_send(encode_data(1, "a"))
        await first.client_send(encode_data(2, b"b"))
        frames = [await first.client_recv() for _ in range(4)]
        assert [f for f in frames if isinstance(f, Data)] == [Data(1, "echo a"), Data(2, "echo b")]
        # ack_every=1: each message is acked once the handler asks for the next one
        assert [f for f in frames if isinstance(f, Ack)] == [Ack(1), Ack(2)]
        await first.client_send(encode_ack(1))  # the client got "echo a" only
        await first.to_app.put({"type": "websocket.disconnect", "code": 1006})
    assert got == ["a", b"b"]
    assert not views[0].attached
    second = FakeAsgiServer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "websocket"}, second.receive, second.send)
        await second.to_app.put({"type": "websocket.connect"})
        with anyio.fail_after(5):
            assert (await second.from_app.get())["type"] == "websocket.accept"
        await second.client_send(encode_hello(Hello("asgi", "c1", 1, hello.epoch, 1)))
        again = await second.client_recv()
        assert isinstance(again, Hello)
        assert again.delivered == 2  # it has both of ours: we re-send nothing
        assert await second.client_recv() == Data(2, "echo b")  # not acked: re-sent
        await second.client_send(encode_data(2, b"b"))  # a copy: dropped
        await second.client_send(encode_data(3, "c"))
        frames = [await second.client_recv() for _ in range(2)]
        assert sorted(frames, key=repr) == [Ack(3), Data(3, "echo c")]
        second.gone = True  # the client vanished: sends fail, the endpoint ends quietly
        await second.to_app.put({"type": "websocket.disconnect", "code": 1006})
    assert got == ["a", b"b", "c"]
    assert views[1].stats.duplicates == 1


async def test_asgi_misuse_is_refused() -> None:
    """A scope that is not a WebSocket, or a first event that is not ``websocket.connect``,
    is refused with a clear error."""
    hub = DeliveryHub()
    harness = FakeAsgiServer()
    with pytest.raises(EnvelopeError, match="websocket scope"):
        async with hub.serve_asgi({"type": "http"}, harness.receive, harness.send):
            pass
    await harness.to_app.put({"type": "websocket.disconnect"})
    with pytest.raises(EnvelopeError, match=r"websocket\.connect"):
        async with hub.serve_asgi({"type": "websocket"}, harness.receive, harness.send):
            pass


def test_delivery_public_api_matches_all_and_is_documented() -> None:
    """Every public name of resilient_conn.delivery is in its __all__ (and nothing else),
    and every public class and function has a docstring."""
    import inspect
    import types

    module = importlib.import_module("resilient_conn.delivery")
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))
    undocumented = [
        name
        for name in module.__all__
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert undocumented == []
