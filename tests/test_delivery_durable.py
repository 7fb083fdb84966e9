"""The durable outbox: unacknowledged messages and dead letters in SQLite survive the
process (a SIGKILL mid-stream included); inspection, replay and the CLI."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from resilient_conn import Backoff, CircuitBreaker, ConfigError, ResilientConnection
from resilient_conn.cli import main as cli_main
from resilient_conn.delivery import (
    AckedStream,
    DeliveryHub,
    DurableOutbox,
    OutboxError,
    read_dead_letters,
    read_summary,
    requeue_dead_letters,
)
from resilient_conn.delivery.cli import run_dead_letters
from resilient_conn.testing import ScriptedServer

from ._delivery_app import HubApp

pytestmark = pytest.mark.anyio

DEAD_URL = "ws://127.0.0.1:9/"  # the discard port: every dial is refused


def _conn(url: str, stream: AckedStream) -> ResilientConnection:
    return ResilientConnection(
        url,
        on_open=stream.on_open,
        backoff=Backoff(0.01, 0.05, rng=random.Random(2)),
        breaker=CircuitBreaker(failure_threshold=1000, name="durable-tests"),
        stable_after=0.1,
        ping_interval=0,
        open_timeout=2.0,
        close_timeout=1.0,
    )


async def test_pending_messages_survive_a_restart_and_are_sent_by_the_next_run(
    tmp_path: Path,
) -> None:
    """Messages sent while the server is unreachable stay in the file when the stream
    closes (not dead-lettered), and the next run, with the same session and epoch, sends
    them first, in order, then its own."""
    path = tmp_path / "outbox" / "sensor-7.sqlite3"
    stream = AckedStream(outbox=DurableOutbox(path), drain_timeout=0)
    conn = _conn(DEAD_URL, stream)
    async with conn, stream.open(conn):
        for i in range(5):
            assert await stream.send(f"early {i}") == i + 1
    assert stream.dead_letters == []
    summary = read_summary(path)
    assert (summary.pending, summary.next_seq, summary.epoch) == (5, 6, stream.epoch)
    app = HubApp(DeliveryHub())
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        again = AckedStream(outbox=DurableOutbox(path))
        conn = _conn(server.url, again)
        async with conn, again.open(conn):
            assert (again.session, again.epoch) == (stream.session, stream.epoch)
            assert await again.send("late") == 6
            await again.wait_acked(5)
    assert app.received == [*(f"early {i}" for i in range(5)), "late"]
    assert read_summary(path).pending == 0


async def test_dead_letters_are_kept_listed_and_replayed(tmp_path: Path) -> None:
    """Dead letters (here: overflow and too large) are stored with their reason; the CLI
    lists them (table and JSON), replays them into the outbox, and the next run delivers
    them after what was pending."""
    path = tmp_path / "d.sqlite3"
    stream = AckedStream(
        "dl", outbox=DurableOutbox(path), window=2, window_bytes=64,
        overflow="drop_newest", drain_timeout=0,
    )  # fmt: skip
    conn = _conn(DEAD_URL, stream)
    async with conn, stream.open(conn):
        await stream.send("kept 1")
        await stream.send(b"kept \x002")
        assert await stream.send("overflow 1") == 0
        assert await stream.send(b"\xffoverflow 2") == 0
        assert await stream.send("x" * 65) == 0
    letters = read_dead_letters(path)
    assert [(d.message, d.reason) for d in letters] == [
        ("overflow 1", "overflow"),
        (b"\xffoverflow 2", "overflow"),
        ("x" * 65, "too_large"),
    ]
    out, err = io.StringIO(), io.StringIO()
    assert run_dead_letters([str(path)], out, err) == 0
    table = out.getvalue()
    assert "session 'dl'" in table
    assert "2 pending, 3 dead letter(s)" in table
    assert "overflow 1" in table
    assert "<11 bytes> ff6f" in table
    assert "too_large" in table
    out = io.StringIO()
    assert run_dead_letters([str(path), "--json", "--limit", "2"], out, err) == 0
    document = json.loads(out.getvalue())
    assert document["dead_letters_total"] == 3
    assert len(document["dead_letters"]) == 2
    assert document["dead_letters"][1] == {**document["dead_letters"][1], "binary": True,
                                           "message": b"\xffoverflow 2".hex()}  # fmt: skip
    out = io.StringIO()
    ids = [str(letters[0].id), str(letters[1].id)]
    assert run_dead_letters([str(path), "--replay", "--id", ids[0], "--id", ids[1]], out, err) == 0
    assert "requeued 2 dead letter(s)" in out.getvalue()
    assert [d.message for d in read_dead_letters(path)] == ["x" * 65]
    app = HubApp(DeliveryHub())
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        again = AckedStream(outbox=DurableOutbox(path))
        conn = _conn(server.url, again)
        async with conn, again.open(conn):
            await again.wait_acked(5)
    assert app.received == ["kept 1", b"kept \x002", "overflow 1", b"\xffoverflow 2"]


def test_cli_refuses_bad_use_with_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI says what is wrong: no such file (2), not an outbox (2), --id without --replay
    (2), an unknown id (1); it is reachable as ``resilient-conn dead-letters``."""
    missing = tmp_path / "missing.sqlite3"
    assert cli_main(["dead-letters", str(missing)]) == 2
    assert "no such outbox file" in capsys.readouterr().err
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    assert cli_main(["dead-letters", str(junk)]) == 2
    assert "not a usable outbox" in capsys.readouterr().err
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    assert cli_main(["dead-letters", str(empty), "--id", "3"]) == 2
    assert "--id needs --replay" in capsys.readouterr().err
    assert cli_main(["dead-letters", str(empty)]) == 0
    assert "0 dead letter(s)" in capsys.readouterr().out
    assert cli_main(["dead-letters", str(empty), "--replay", "--id", "3"]) == 1
    assert "no dead letter with id 3" in capsys.readouterr().err
    assert cli_main(["dead-letters", str(empty), "--replay"]) == 0
    assert "requeued 0" in capsys.readouterr().out
    assert cli_main(["dead-letters", str(empty), "--limit", "0"]) == 2
    assert cli_main(["dead-letters", "--help"]) == 0
    assert "replay" in capsys.readouterr().out


async def test_outbox_misuse_is_refused(tmp_path: Path) -> None:
    """One process and one session per file; bad names and settings are refused; a file
    that is not an outbox is reported as such."""
    with pytest.raises(ConfigError, match="name must be"):
        DurableOutbox.for_connection(tmp_path, "../escape")
    with pytest.raises(ConfigError, match="synchronous"):
        DurableOutbox(tmp_path / "x.sqlite3", synchronous="sometimes")
    with pytest.raises(ConfigError, match="max_dead_letters"):
        DurableOutbox(tmp_path / "x.sqlite3", max_dead_letters=0)
    outbox = DurableOutbox.for_connection(tmp_path, "feed")
    assert outbox.path == tmp_path / "feed.sqlite3"
    restored = await outbox.open("mine", "e1")
    assert (restored.session, restored.epoch, restored.next_seq) == ("mine", "e1", 1)
    with pytest.raises(OutboxError, match="in use by another process"):
        await DurableOutbox(outbox.path).open(None, "e2")
    with pytest.raises(OutboxError, match="in use"):
        requeue_dead_letters(outbox.path)
    await outbox.aclose()
    with pytest.raises(OutboxError, match="belongs to session 'mine'"):
        await DurableOutbox(outbox.path).open("theirs", "e3")
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(OutboxError, match="not a usable outbox"):
        await DurableOutbox(junk).open(None, "e")


CHILD = textwrap.dedent(
    """
    import sys, anyio, structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    from resilient_conn import Backoff, CircuitBreaker, ResilientConnection
    from resilient_conn.delivery import AckedStream, DurableOutbox

    async def main(url, path, start, count):
        stream = AckedStream(outbox=DurableOutbox(path))
        conn = ResilientConnection(url, on_open=stream.on_open, ping_interval=0,
                                   backoff=Backoff(0.01, 0.05),
                                   breaker=CircuitBreaker(failure_threshold=1000))
        async with conn, stream.open(conn):
            for i in range(start, start + count):
                await stream.send(str(i))          # returns once committed
                print(i, flush=True)
            await stream.wait_acked(20)
        print("done", flush=True)

    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    """
)


async def test_a_client_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """A client process streaming through a durable outbox is killed with SIGKILL
    mid-stream (the server acks only every 0.3 s, so many are unacknowledged); a new
    process on the same file re-sends them: every message whose send() returned in the dead
    process reaches the server application, exactly once and in order."""
    path = tmp_path / "crash.sqlite3"
    app = HubApp(DeliveryHub(ack_every=10**6, ack_delay=0.3))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with ScriptedServer(app.handler, ping_interval=None) as server:
        args = [sys.executable, "-c", CHILD, server.url, str(path)]
        reported: list[int] = []
        async with await anyio.open_process([*args, "0", "100000"], env=env) as first:
            assert first.stdout is not None
            buffer = b""
            with anyio.fail_after(20):
                async for chunk in first.stdout:
                    buffer += chunk
                    lines = buffer.split(b"\n")
                    buffer = lines.pop()
                    reported += [int(line) for line in lines]
                    if len(reported) >= 500:
                        break
            with pytest.raises(OutboxError, match="in use"):
                await DurableOutbox(path).open(None, "x")
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        pending = read_summary(path).pending
        assert pending > 0  # the kill really left unacknowledged messages behind
        result = await anyio.run_process([*args, "1000000", "10"], env=env, check=False)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert result.stdout.decode().split()[-1] == "done"
    got = [int(m) for m in app.received]  # type: ignore[arg-type]
    assert set(reported) <= set(got)
    assert len(got) == len(set(got))  # the hub kept the session: no duplicate
    first_run = [g for g in got if g < 1_000_000]
    assert first_run == list(range(len(first_run)))  # in order, no hole
    assert got[len(first_run) :] == list(range(1_000_000, 1_000_010))
    assert read_summary(path).pending == 0


async def test_a_failing_disk_ends_the_stream_loudly(tmp_path: Path) -> None:
    """If the outbox cannot commit (here: its tables vanish under it), send() raises
    OutboxError and the stream ends with that error instead of pretending."""
    path = tmp_path / "fragile.sqlite3"
    stream = AckedStream(outbox=DurableOutbox(path), drain_timeout=0)
    conn = _conn(DEAD_URL, stream)
    async with conn, stream.open(conn):
        await stream.send("fine")
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE outbox")
        with pytest.raises(OutboxError, match="commit failed"):
            await stream.send("doomed")
        with pytest.raises(OutboxError):
            await stream.send("after")


async def test_an_open_cancelled_midway_releases_the_file(tmp_path: Path) -> None:
    """Cancelling the opening of an outbox (the stream's task is cancelled at that moment)
    stops its thread and releases the file's lock: the next process can open it."""
    path = tmp_path / "cancelled.sqlite3"
    outbox = DurableOutbox(path)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await outbox.open(None, "e1")
    again = DurableOutbox(path)
    restored = await again.open(None, "e2")
    assert restored.next_seq == 1
    await again.aclose()
