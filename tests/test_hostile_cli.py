"""Issue 13, CLI and counters: dead letters fail ``connect``, ``--subprotocol``, 1009 is its
own failure kind, failure kinds (metric labels) come from a bounded set."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from resilient_conn import CircuitBreaker, ResilientConnection
from resilient_conn.cli import commands as cli
from resilient_conn.cli._session import describe
from resilient_conn.connection.metrics import MAX_FAILURE_KINDS, ConnectionStats
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.resilience.classify import close_kind, default_classify
from resilient_conn.testing import ScriptedServer
from tests.test_cli import ROOT, _finish

T = 10.0


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run(
    *argv: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``python -m resilient_conn ARGV`` with ``stdin``; return (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resilient_conn",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})},
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    await proc.stdin.drain()
    proc.stdin.close()
    return await _finish(proc, timeout=T)


@pytest.mark.anyio
async def test_connect_exits_1_and_says_how_many_lines_were_dead_lettered() -> None:
    """``echo important | resilient-conn connect ws://127.0.0.1:<closed>/`` reports the line
    it could not deliver and exits 1.

    Reproduction: it exited 0 after dead-lettering the line."""
    url = f"ws://127.0.0.1:{_closed_port()}/"
    code, err = await _run(
        "connect", url, stdin=b"important\n", env={"RESILIENT_CONN_DRAIN_TIMEOUT": "0.2"}
    )
    assert code == 1, err
    assert "1 message(s) not delivered" in err
    assert "refused" in err


@pytest.mark.anyio
async def test_subprotocol_is_offered_by_check_and_connect() -> None:
    """``--subprotocol`` reaches the handshake: a server that requires ``chat.v2`` accepts
    ``check`` and ``connect`` with it (and the server saw it offered)."""
    async with ScriptedServer(subprotocols=["chat.v2"]) as server:
        code, err = await _run("check", server.url, "--subprotocol", "chat.v2")
        assert code == 0, err
        code, err = await _run("connect", server.url, "--subprotocol", "chat.v2", stdin=b"hi\n")
        assert code == 0, err
        offered = [c.request_headers.get("Sec-WebSocket-Protocol") for c in server.connections]
        assert offered == ["chat.v2", "chat.v2"]


def test_bad_subprotocol_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A subprotocol that is not an HTTP token is refused by argparse (exit 2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["check", "ws://127.0.0.1:9/", "--subprotocol", "a b"])
    assert info.value.code == 2
    assert "HTTP token" in capsys.readouterr().err


def test_message_too_big_is_its_own_kind_with_a_clear_message() -> None:
    """1009 in either direction is ``message_too_big`` (not a generic ``lost``), and the CLI
    says which limit it is about."""
    ours = ConnectionClosedError(None, Close(1009, "frame exceeds limit of 100 bytes"), None)
    theirs = ConnectionClosedError(Close(1009, "too big"), Close(1009, "too big"), True)
    assert default_classify(ours).kind == "message_too_big"
    assert default_classify(theirs).kind == "message_too_big"
    assert "max_size" in describe(ours)


@pytest.mark.anyio
async def test_an_inbound_message_over_max_size_counts_as_message_too_big() -> None:
    """A server sending a message larger than ``max_size`` ends the transport with 1009; the
    failure is counted as ``message_too_big`` and the connection reconnects."""

    async def big(ws: ServerConnection, _: ScriptedServer) -> None:
        await ws.send("x" * 2000)
        await ws.wait_closed()

    async with ScriptedServer(big) as server:
        conn = ResilientConnection(
            server.url, max_size=1000, backoff=Backoff(0.01, 0.05), ping_interval=0
        )
        async with conn:
            await server.wait_for_connection(2, timeout=T)
        assert conn.stats.failures.get("message_too_big", 0) >= 1
        assert "lost" not in conn.stats.failures


def test_failure_kinds_from_close_codes_are_a_small_bounded_set() -> None:
    """Every close code a server can pick (0-65535) maps into at most 20 kinds; a custom
    classifier's endless kinds stop at MAX_FAILURE_KINDS + 'other'.

    Reproduction: ``close_{code}`` let a server create ~4,000 label values."""
    kinds = {close_kind(code) for code in range(65536)}
    assert len(kinds) <= 20
    assert {"close_4xxx", "close_3xxx", "close_other", "message_too_big"} <= kinds
    stats = ConnectionStats()
    for i in range(1000):
        stats.count_failure(f"custom_{i}")
    assert len(stats.failures) == MAX_FAILURE_KINDS + 1
    assert stats.failures["other"] == 1000 - MAX_FAILURE_KINDS


@pytest.mark.anyio
async def test_fifty_private_close_codes_make_one_failure_label() -> None:
    """A server closing with 50 different private codes yields one ``close_4xxx`` label."""
    async with ScriptedServer() as server:
        conn = ResilientConnection(
            server.url,
            backoff=Backoff(0.001, 0.002),
            breaker=CircuitBreaker(failure_threshold=1000),
            ping_interval=0,
        )
        async with conn:
            for code in range(4000, 4050):
                await server.wait_for_connection(code - 3999, timeout=T)
                await server.close_all(code)
            await server.wait_for_connection(51, timeout=T)
        assert conn.stats.failures["close_4xxx"] == 50
        assert [k for k in conn.stats.failures if k.startswith("close_4")] == ["close_4xxx"]


@pytest.mark.anyio
async def test_bytes_are_counted_the_same_on_every_path_and_bad_types_always_raise() -> None:
    """``bytes_out`` counts UTF-8 bytes whether a message went straight out or through the
    buffer, ``bytes_in`` likewise; ``send(list)`` raises TypeError connected or not.

    Reproduction: characters on one path, bytes on the other; a list was sent fragmented while
    connected but raised TypeError while buffered."""
    text = "héllo wörld €"  # 13 characters, 17 UTF-8 bytes
    size = len(text.encode())
    port = _closed_port()
    offline = ResilientConnection(f"ws://127.0.0.1:{port}/", ping_interval=0, drain_timeout=0.01)
    with pytest.raises(TypeError, match="str or bytes"):
        await offline.send(["a", "b"])  # type: ignore[arg-type]
    await offline.aclose()
    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, ping_interval=0)
        await conn.send(text)  # buffered: not connected yet
        async with conn:
            with anyio.fail_after(T):
                assert await conn.recv() == text
                await conn.wait_connected()
            await conn.send(text)  # straight to the transport
            await conn.send(bytearray(b"\x00\x01"))
            with anyio.fail_after(T):
                assert await conn.recv() == text
                assert await conn.recv() == b"\x00\x01"
            with pytest.raises(TypeError, match="str or bytes"):
                await conn.send(["a", "b"])  # type: ignore[arg-type]
        assert conn.stats.bytes_out == 2 * size + 2
        assert conn.stats.bytes_in == 2 * size + 2
        assert conn.stats.messages_out == 3
