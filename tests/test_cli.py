"""The command line: `check` exit codes and JSON, `connect` as an interactive client (run as a
subprocess), and usage errors. Everything talks to servers on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import anyio
import pytest
import structlog

from resilient_conn.cli import commands as cli
from resilient_conn.testing import ScriptedServer

ROOT = Path(__file__).resolve().parent.parent


async def _run_main(argv: list[str], timeout: float) -> int:
    """Run ``cli.main`` in a worker thread (it runs its own event loop), bounded in time."""
    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(cli.main, argv)


# --------------------------------------------------------------------------- check
@pytest.mark.anyio
async def test_check_healthy_server_exits_0_with_a_json_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Against a live server `check` connects, measures a round trip, prints the report as
    JSON (status healthy, state connected, an RTT) and exits 0."""
    async with ScriptedServer() as server:
        code = await _run_main(["check", server.url, "--timeout", "5"], timeout=15)
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["status"] == "healthy"
    assert report["state"] == "connected"
    assert report["rtt"] is not None


@pytest.mark.anyio
async def test_check_dead_server_exits_2_without_waiting_past_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening: `check` dials once, reports UNHEALTHY with the error, exits 2, and
    returns within its timeout (plus process slack)."""
    async with ScriptedServer() as server:
        url = server.url
    code = await _run_main(["check", url, "--timeout", "2"], timeout=2 + 8)
    report = json.loads(capsys.readouterr().out)
    assert code == 2
    assert report["status"] == "unhealthy"
    assert "could not connect" in report["detail"]
    assert report["last_error"] is not None


@pytest.mark.anyio
async def test_check_stalled_handshake_exits_2_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that accepts TCP but never answers the handshake: `check` gives up after
    --timeout and exits 2 (it does not hang)."""
    async with ScriptedServer() as server:
        server.stall()
        code = await _run_main(["check", server.url, "--timeout", "1"], timeout=1 + 8)
        server.accept()
    assert code == 2
    assert json.loads(capsys.readouterr().out)["status"] == "unhealthy"


@pytest.mark.anyio
async def test_check_401_exits_2_with_state_failed(capsys: pytest.CaptureFixture[str]) -> None:
    """A 401 handshake is fatal: the report says FAILED with the status, exit code 2, and the
    server saw exactly one dial."""
    async with ScriptedServer() as server:
        server.reject(401, body="bad token")
        code = await _run_main(["check", server.url, "--timeout", "5"], timeout=15)
        assert server.rejection_count == 1
    report = json.loads(capsys.readouterr().out)
    assert code == 2
    assert report["status"] == "unhealthy"
    assert report["state"] == "failed"
    assert "401" in report["detail"]


@pytest.mark.anyio
async def test_check_sends_headers_and_keeps_secrets_out_of_the_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--header values reach the handshake; a token in the URL never appears in the output."""
    async with ScriptedServer() as server:
        url = server.url_for("/ws?token=s3cret")
        argv = ["check", url, "-H", "Authorization: Bearer abc", "--header", "X-Team: blue"]
        code = await _run_main(argv, timeout=15)
        headers = server.connections[-1].request_headers
    out = capsys.readouterr().out
    assert code == 0
    assert headers["Authorization"] == "Bearer abc"
    assert headers["X-Team"] == "blue"
    assert "s3cret" not in out


@pytest.mark.anyio
async def test_library_logs_stay_off_stdout_and_verbose_sends_them_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The library's structlog events never mix with a command's stdout (its JSON stays
    parseable), even when structlog was configured before; `-v` shows them on stderr."""
    structlog.configure(processors=structlog.get_config()["processors"])  # "configured"
    async with ScriptedServer() as server:
        assert await _run_main(["check", server.url], timeout=15) == 0
        quiet = capsys.readouterr()
        assert await _run_main(["-v", "check", server.url], timeout=15) == 0
        verbose = capsys.readouterr()
    json.loads(quiet.out)
    json.loads(verbose.out)
    assert "resilient_conn.state_changed" not in quiet.out + quiet.err
    assert "resilient_conn.state_changed" in verbose.err


def test_exit_codes_follow_health_status() -> None:
    """The documented mapping: healthy 0, degraded 1, unhealthy 2."""
    assert {s.value: c for s, c in cli.EXIT_CODES.items()} == {
        "healthy": 0,
        "degraded": 1,
        "unhealthy": 2,
    }


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "http://127.0.0.1:1/"], "ws:// or wss://"),
        (["connect", "127.0.0.1:1"], "ws:// or wss://"),
        (["check", "ws://"], "ws:// or wss://"),
        (["check", "ws://127.0.0.1:1/", "--timeout", "0"], "--timeout"),
        (["check", "ws://127.0.0.1:1/", "--timeout", "nan"], "--timeout"),
        (["connect", "ws://127.0.0.1:1/", "-H", "no colon"], "Name: value"),
        (["connect", "ws://127.0.0.1:1/", "--ping-timeout", "-1"], "--ping-timeout"),
        (["demo", "--duration", "abc"], "--duration"),
        (["demo", "--duration", "4000"], "at most 3600"),
        ([], "COMMAND"),
    ],
)
def test_bad_input_is_a_usage_error_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad URLs, numbers and headers exit 2 (argparse) and the message says what is wrong."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- connect
async def _spawn_connect(url: str, *extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resilient_conn",
        "connect",
        url,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


async def _read_line(proc: asyncio.subprocess.Process, timeout: float = 10) -> str:
    assert proc.stdout is not None
    with anyio.fail_after(timeout):
        return (await proc.stdout.readline()).decode().rstrip("\n")


async def _finish(proc: asyncio.subprocess.Process, timeout: float = 10) -> tuple[int, str]:
    assert proc.stderr is not None
    try:
        with anyio.fail_after(timeout):
            err = (await proc.stderr.read()).decode()
            code = await proc.wait()
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return code, err


@pytest.mark.anyio
async def test_connect_echoes_stdin_lines_and_exits_0_on_eof() -> None:
    """Lines typed on stdin are sent; the echoes are printed on stdout; state changes go to
    stderr; EOF on stdin closes the connection gracefully with exit code 0."""
    async with ScriptedServer() as server:
        proc = await _spawn_connect(server.url)
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"hello\nworld\n")
            await proc.stdin.drain()
            assert await _read_line(proc) == "hello"
            assert await _read_line(proc) == "world"
            proc.stdin.close()
            code, err = await _finish(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert code == 0, err
        assert "* connected" in err
        assert "* closed" in err
        await server.wait_for_closed(1)
        assert server.connections[-1].close_code == 1000


@pytest.mark.anyio
async def test_connect_stays_connected_across_a_server_restart() -> None:
    """After a server restart (1012) the same session reconnects by itself and the next
    stdin line is echoed on the new connection."""
    async with ScriptedServer() as server:
        proc = await _spawn_connect(server.url, "--ping-interval", "0")
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"one\n")
            await proc.stdin.drain()
            assert await _read_line(proc) == "one"
            await server.restart()
            await server.wait_for_connection(2, timeout=10)
            proc.stdin.write(b"two\n")
            await proc.stdin.drain()
            assert await _read_line(proc) == "two"
            proc.stdin.close()
            code, err = await _finish(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert code == 0, err
        assert "* backoff" in err


@pytest.mark.anyio
async def test_connect_exits_1_when_the_connection_fails_even_with_stdin_open() -> None:
    """A fatal 401 ends the session by itself (stdin still open) with exit code 1 and the
    reason on stderr."""
    async with ScriptedServer() as server:
        server.reject(401)
        proc = await _spawn_connect(server.url)
        code, err = await _finish(proc)
    assert code == 1
    assert "connection failed" in err
    assert "401" in err
