"""ScriptedServer: what a real websockets client sees when a test scripts the server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from resilient_conn.testing import ScriptedServer, serve_scripted
from tests._dial import dial

pytestmark = pytest.mark.anyio


async def test_echo_is_the_default_and_messages_are_recorded_in_order() -> None:
    """The default handler echoes text and bytes; the server records them in order."""
    async with ScriptedServer() as server, dial(server.url) as ws:
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.send(b"\x00two")
        assert await ws.recv() == b"\x00two"
        assert await server.wait_for_messages(2) == ["one", b"\x00two"]
        assert server.message_count == 2
        assert server.connections[0].messages_received == 2


async def test_connections_are_recorded_with_path_headers_and_close() -> None:
    """Each connection is recorded: path, request headers, remote, open/close times, code."""
    async with ScriptedServer() as server:
        async with dial(server.url_for("/feed?token=t"), additional_headers={"X-Test": "1"}):
            record = await server.wait_for_connection(1)
            assert record.open
            assert record.path == "/feed?token=t"
            assert record.request_headers["X-Test"] == "1"
            assert record.remote is not None
            assert record.remote[0] == "127.0.0.1"
        await server.wait_for_closed(1)
        assert server.connections[0].open is False
        assert record.closed_at is not None
        assert record.closed_at >= record.opened_at
        assert record.close_code == 1000
        assert server.open_connections == []


async def test_close_all_sends_the_chosen_code_and_reason() -> None:
    """close_all(code, reason) closes the client with exactly that code and reason."""
    async with ScriptedServer() as server, dial(server.url) as ws:
        await server.wait_for_connection(1)
        assert await server.close_all(4001, "go away") == 1
        with pytest.raises(ConnectionClosed) as exc_info:
            await ws.recv()
        assert exc_info.value.rcvd is not None
        assert exc_info.value.rcvd.code == 4001
        assert exc_info.value.rcvd.reason == "go away"


async def test_reject_next_503_with_retry_after_is_seen_by_the_client_once() -> None:
    """reject_next(503, Retry-After) fails one handshake with that status and header."""
    async with ScriptedServer() as server:
        server.reject_next(503, headers={"Retry-After": "2"}, body="busy")
        with pytest.raises(InvalidStatus) as exc_info:
            async with dial(server.url):
                pass
        response = exc_info.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.body == b"busy"
        assert server.rejections[0].status == 503
        async with dial(server.url) as ws:  # only the next one was rejected
            await ws.send("ok")
            assert await ws.recv() == "ok"


async def test_reject_holds_until_accept() -> None:
    """reject(401) fails every handshake with 401 until accept() is called."""
    async with ScriptedServer() as server:
        server.reject(401)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as exc_info:
                async with dial(server.url):
                    pass
            assert exc_info.value.response.status_code == 401
        assert server.rejection_count == 2
        assert server.connection_count == 0
        server.accept()
        async with dial(server.url):
            pass
        assert server.connection_count == 1


async def test_reject_next_count_rejects_that_many_then_429() -> None:
    """reject_next(..., count=2) rejects two handshakes, then the standing reject applies."""
    async with ScriptedServer() as server:
        server.reject(429, headers={"Retry-After": "1"})
        server.reject_next(503, count=2)
        statuses = []
        for _ in range(3):
            with pytest.raises(InvalidStatus) as exc_info:
                async with dial(server.url):
                    pass
            statuses.append(exc_info.value.response.status_code)
        assert statuses == [503, 503, 429]


async def test_restart_keeps_the_port_and_a_new_client_connects() -> None:
    """restart() closes clients with 1012, then serves again on the same port."""
    async with ScriptedServer() as server:
        port = server.port
        async with dial(server.url) as ws:
            await server.restart()
            with pytest.raises(ConnectionClosed) as exc_info:
                await ws.recv()
            assert exc_info.value.rcvd is not None
            assert exc_info.value.rcvd.code == 1012
        assert server.port == port
        async with dial(server.url) as ws:
            await ws.send("back")
            assert await ws.recv() == "back"
        assert server.connection_count == 2


async def test_stopped_server_refuses_dials_until_started() -> None:
    """After stop(), a dial is refused; start() serves on the same port again."""
    async with ScriptedServer() as server:
        await server.stop()
        assert not server.running
        with pytest.raises(ConnectionRefusedError):
            async with dial(server.url):
                pass
        await server.start()
        async with dial(server.url):
            pass


async def test_stall_makes_the_client_open_timeout_fire() -> None:
    """stall(): TCP is accepted but the handshake never answered, so open_timeout fires."""
    async with ScriptedServer() as server:
        server.stall()
        with pytest.raises(TimeoutError):
            async with dial(server.url, open_timeout=0.2):
                pass
        server.accept()
        async with dial(server.url):
            pass


async def test_stop_answers_a_stalled_handshake_with_503() -> None:
    """Stopping a stalled server answers the pending handshake (503) instead of hanging."""
    async with ScriptedServer() as server:
        server.stall()
        async with anyio.create_task_group() as tg:

            async def dial_stalled() -> None:
                with pytest.raises(InvalidStatus) as exc_info:
                    async with dial(server.url, open_timeout=5):
                        pass
                assert exc_info.value.response.status_code == 503

            tg.start_soon(dial_stalled)
            await server.wait_until(lambda: server.stalled_handshakes == 1)
            await server.stop()
        assert server.stalled_handshakes == 0


async def test_custom_handler_and_send_to_all() -> None:
    """A custom handler runs with (ws, server); send_to_all pushes to every client."""

    async def greet(ws: ServerConnection, server: ScriptedServer) -> None:
        await ws.send(f"welcome {len(server.connections)}")
        await ws.wait_closed()

    async with serve_scripted(greet) as server, dial(server.url) as a, dial(server.url) as b:
        assert await a.recv() == "welcome 1"
        assert await b.recv() == "welcome 2"
        assert await server.send_to_all("news") == 2
        assert await a.recv() == "news"
        assert await b.recv() == "news"


async def test_failing_handler_closes_with_1011() -> None:
    """A handler that raises closes the client with 1011 (internal error)."""

    async def broken(ws: ServerConnection, server: ScriptedServer) -> None:
        raise RuntimeError("boom")

    async with ScriptedServer(broken) as server, dial(server.url) as ws:
        with pytest.raises(ConnectionClosed) as exc_info:
            await ws.recv()
        assert exc_info.value.rcvd is not None
        assert exc_info.value.rcvd.code == 1011


async def test_history_is_bounded_but_counts_are_total() -> None:
    """Only the last `history` messages are kept; message_count still counts them all."""
    async with ScriptedServer(history=3) as server, dial(server.url) as ws:
        for i in range(5):
            await ws.send(str(i))
            assert await ws.recv() == str(i)
        assert server.messages == ["2", "3", "4"]
        assert server.message_count == 5


async def test_wait_for_messages_times_out_when_nothing_comes() -> None:
    """wait_for_messages raises TimeoutError (no silent hang) when no message arrives."""
    async with ScriptedServer() as server:
        with pytest.raises(TimeoutError):
            await server.wait_for_messages(1, timeout=0.05)


async def test_client_close_is_recorded_normally() -> None:
    """A client's normal close ends the echo loop quietly (ConnectionClosedOK)."""
    async with ScriptedServer() as server:
        async with dial(server.url) as ws:
            await ws.close(1001, "bye")
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
        await server.wait_for_closed(1)
        assert server.connections[0].close_code == 1001
        assert server.connections[0].close_reason == "bye"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"host": "0.0.0.0"}, "host"),
        ({"port": -1}, "port"),
        ({"history": 0}, "history"),
        ({"process_request": None}, "process_request"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict[str, Any], name: str) -> None:
    """The server only listens on 127.0.0.1 and rejects bad numbers with a clear error."""
    with pytest.raises(ValueError, match=name):
        ScriptedServer(**kwargs)


def test_bad_rejection_arguments_raise_value_error() -> None:
    """A status outside 100-599, 101, or count < 1 is rejected up front."""
    server = ScriptedServer()
    with pytest.raises(ValueError, match="status"):
        server.reject(700)
    with pytest.raises(ValueError, match="101"):
        server.reject_next(101)
    with pytest.raises(ValueError, match="count"):
        server.reject_next(503, count=0)


def test_every_public_testing_name_is_exported_and_documented() -> None:
    """Each name in resilient_conn.testing.__all__ exists and carries a docstring."""
    import inspect

    import resilient_conn.testing as testing

    assert len(set(testing.__all__)) == len(testing.__all__)
    for name in testing.__all__:
        obj = getattr(testing, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):  # not the type aliases
            assert (obj.__doc__ or "").strip(), name
    for name in ("ChaosProxy", "ProxyStats", "ScriptedServer", "serve_scripted", "FakeClock"):
        assert name in testing.__all__
