"""The demo: a short run survives every fault with nothing lost, and its accounting is honest."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from resilient_conn import Backoff, CircuitBreaker, ResilientConnection, StateChange
from resilient_conn._core.errors import ConfigError
from resilient_conn.cli import commands as cli
from resilient_conn.cli._demo_app import (
    DRAIN_TIMEOUT,
    SESSION,
    DemoClient,
    DemoServerState,
    decode_seq,
    encode_message,
)
from resilient_conn.cli._demo_realtime import run_realtime_part
from resilient_conn.cli._demo_report import DemoSummary, Reporter
from resilient_conn.cli.demo import MAX_DURATION, MIN_DURATION, DemoOptions, _Demo
from resilient_conn.connection.events import ConnectionState
from resilient_conn.delivery.envelope import Ack, Hello, decode, encode_data, encode_hello
from resilient_conn.testing import ChaosProxy, ScriptedServer


def test_short_demo_survives_every_fault_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`demo --duration 8 --seed 1 --json` runs in-process: five faults are injected, the
    client reconnects and the breaker opens, and sent == delivered + dead-lettered (lost 0),
    computed from what the server application really received; the acknowledged stream
    re-sent what the blackhole swallowed, and no copy or reordering reached the application;
    exit code 0."""
    code = cli.main(["demo", "--duration", "8", "--seed", "1", "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 0, captured.err
    assert summary["ok"] is True
    assert summary["lost"] == 0
    assert summary["sent"] > 0
    assert summary["sent"] == summary["delivered"] + summary["dead_lettered"]
    assert summary["resent"] >= 1  # what the blackhole swallowed went out again
    assert summary["duplicates_delivered"] == summary["reordered"] == 0
    assert summary["gap_notices"] == 0
    assert summary["faults_injected"] >= 4
    assert summary["faults"] == ["restart", "blackhole", "503_retry_after", "flapping", "outage"]
    assert summary["reconnects"] >= 1
    assert summary["breaker_openings"] >= 1
    assert summary["failures"].get("ping_timeout", 0) >= 1  # the blackhole was detected
    assert summary["failures"].get("http_503", 0) >= 1
    assert summary["seed"] == 1
    assert summary["final_health"] == "healthy"
    # the live event lines went to stderr, with timestamps relative to the start
    assert "FAULT 1/5" in captured.err
    assert "breaker   closed -> open" in captured.err
    assert captured.err.lstrip().startswith("[")


def test_demo_rejects_a_duration_too_short_for_the_schedule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A duration below the minimum is a usage error (exit 2) naming the bound."""
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--duration", "1"])
    assert info.value.code == 2
    assert f">= {MIN_DURATION:g}" in capsys.readouterr().err


def test_demo_options_validate_duration() -> None:
    """DemoOptions refuses a too-short or absurd duration with a ConfigError naming it."""
    with pytest.raises(ConfigError, match="duration"):
        DemoOptions(duration=MIN_DURATION - 1)
    with pytest.raises(ConfigError, match="duration"):
        DemoOptions(duration=MAX_DURATION + 1)


def test_demo_exit_code_is_1_and_says_why_when_messages_are_lost(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the accounting finds lost messages the command exits 1 and prints the reason."""

    async def fake_run_demo(options: DemoOptions, out: object, *, color: bool) -> DemoSummary:
        summary = DemoSummary(seed=3, duration=options.duration, sent=10, delivered=8, lost=2)
        summary.problems.append("2 message(s) were neither delivered nor dead-lettered")
        return summary

    monkeypatch.setattr(cli, "run_demo", fake_run_demo)
    code = cli.main(["demo", "--duration", "10", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "RESULT: FAILED" in captured.out
    assert "lost = sent - delivered - dead-lettered = 10 - 8 - 0 = 2" in captured.out
    assert "neither delivered nor dead-lettered" in captured.err


def _fast_conn(url: str, client: DemoClient, **kwargs: Any) -> ResilientConnection:
    """A connection for the demo client that redials at once and whose breaker never opens."""
    options: dict[str, Any] = {
        "on_open": client.stream.on_open,
        "backoff": Backoff(0.01, 0.05),
        "breaker": CircuitBreaker(failure_threshold=1000, name="demo-tests"),
        "open_timeout": 1.0,
        "close_timeout": 0.5,
        "ping_interval": 0,
        **kwargs,
    }
    return ResilientConnection(url, **options)


@pytest.mark.anyio
async def test_readings_a_silent_network_swallowed_are_resent_and_seen_once() -> None:
    """The demo's client and server over a chaos proxy: readings written into a blackholed
    transport never reach the server; once keepalive drops that transport and the client
    reconnects, the acknowledged stream re-sends them, and the server application receives
    every reading exactly once, in order, with nothing given up."""
    state = DemoServerState()
    client = DemoClient()
    dropped = anyio.Event()

    def on_state(change: StateChange) -> None:
        if change.old is ConnectionState.CONNECTED:
            dropped.set()

    async with (
        ScriptedServer(state.handler, ping_interval=None, close_timeout=0.5) as server,
        ChaosProxy("127.0.0.1", server.port, connect_timeout=1.0) as proxy,
    ):
        conn = _fast_conn(proxy.url_for("/"), client, ping_interval=0.5, ping_timeout=0.5)
        conn.on_state_change(on_state)
        async with conn, client.stream.open(conn):
            with anyio.fail_after(10):
                for seq in range(1, 11):
                    await client.send(seq)
                await client.stream.wait_acked()
                proxy.blackhole()
                for seq in range(11, 21):
                    await client.send(seq)
                await dropped.wait()
                # written to a transport (first copies only so far) but not received
                swallowed = client.stream.stats.written - len(state.delivered)
                proxy.heal()
                await client.stream.wait_acked()
    assert state.delivered == client.sent == set(range(1, 21))
    assert client.dead == set()
    assert client.stream.options.drain_timeout == DRAIN_TIMEOUT
    assert state.duplicates_delivered == state.reordered == state.invalid == 0
    assert swallowed > 0  # the blackhole really took some
    assert client.resent >= swallowed
    assert conn.stats.failures.get("ping_timeout") == 1


@pytest.mark.anyio
async def test_demo_server_hands_each_reading_to_the_application_once() -> None:
    """Speaking the envelope by hand: the hub drops a copy of reading 1 (counted as
    suppressed, never reaching the application) and skips 1,000 garbage frames; a data frame
    whose payload is not a reading is counted invalid; everything is acknowledged."""
    rng = random.Random(5)
    junk: list[str | bytes] = []
    for _ in range(1000):
        if rng.random() < 0.5:
            junk.append(b"Z" + rng.randbytes(rng.randrange(0, 40)))
        else:
            junk.append(rng.choice(["", "X", "D1", "Dx\nq", "A-1", "A", "Q" + "9" * 30]))
    state = DemoServerState()
    async with (
        ScriptedServer(state.handler, ping_interval=None) as server,
        connect(server.url) as ws,
    ):
        await ws.send(encode_hello(Hello(SESSION, "byhand", 1, None, 0)))
        with anyio.fail_after(5):
            assert isinstance(decode(await ws.recv()), Hello)
            frames = [encode_data(1, encode_message(1)), *junk, encode_data(2, encode_message(2))]
            frames += [encode_data(1, encode_message(1)), encode_data(3, "not a reading")]
            for frame in frames:
                await ws.send(frame)
            acked = 0
            while acked < 3:
                frame = decode(await ws.recv())
                if isinstance(frame, Ack):
                    acked = frame.seq
    assert state.delivered == {1, 2}
    assert state.duplicates_suppressed == 1
    assert state.duplicates_delivered == state.reordered == 0
    assert state.invalid == 1
    session = state.hub.get(SESSION)
    assert session is not None
    assert session.stats.invalid_frames == 1000


@pytest.mark.anyio
async def test_demo_server_refuses_a_client_without_hello_quietly() -> None:
    """A first frame that is not a hello: the hub closes the connection with 1002 and the
    demo server counts the refusal (no handler error, no session created)."""
    state = DemoServerState()
    async with ScriptedServer(state.handler, ping_interval=None) as server:
        async with connect(server.url) as ws:
            await ws.send("not a hello")
            with anyio.fail_after(5), pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1002
        await server.wait_until(lambda: server.closed_count == 1)
    assert state.refused == 1
    assert state.hub.sessions() == []


@pytest.mark.anyio
async def test_demo_client_counts_what_the_stream_gives_up() -> None:
    """While every handshake is refused (503): a reading the full window cannot take within
    send_timeout is given up as buffer_full, and what is still unacknowledged when the
    stream closes is dead-lettered closed; both are counted as dead, never dropped silently."""
    given_up: list[tuple[int, str]] = []
    client = DemoClient(
        on_give_up=lambda seq, why: given_up.append((seq, why)),
        window=1,
        send_timeout=0.05,
        drain_timeout=0.05,
    )
    async with ScriptedServer(ping_interval=None) as server:
        server.reject(503)
        conn = _fast_conn(server.url, client)
        async with conn, client.stream.open(conn):
            await client.send(1)
            await client.send(2)
    assert client.sent == client.dead == {1, 2}
    assert given_up == [(2, "buffer_full"), (1, "closed")]
    assert server.connection_count == 0


def test_a_copy_reaching_the_application_fails_the_run() -> None:
    """The run's verdict: a copy or a reordered message seen by the server application is a
    problem (RESULT: FAILED) even when nothing was lost."""
    demo = _Demo(DemoOptions(duration=MIN_DURATION), Reporter(None), seed=1)
    demo.client.sent.update({1, 2})
    for message in (encode_message(2), encode_message(1), encode_message(1)):
        demo.app.record(message)
    summary = demo._finish(ResilientConnection("ws://127.0.0.1:9/"))
    assert summary.lost == 0
    assert (summary.duplicates_delivered, summary.reordered) == (1, 1)
    assert summary.problems == [
        "the server application saw 1 duplicate(s) and 1 message(s) out of order"
    ]
    assert "RESULT: FAILED" in summary.render(Reporter(None))


def test_demo_server_counts_copies_and_reordering_that_reach_the_application() -> None:
    """The server application's own accounting does not trust the hub: a copy, a lower
    number after a higher one, and a payload that is not a reading are each counted."""
    state = DemoServerState()
    for message in (encode_message(2), encode_message(1), encode_message(2), "junk"):
        state.record(message)
    assert state.delivered == {1, 2}
    assert state.duplicates_delivered == 1
    assert state.reordered == 1
    assert state.invalid == 1


def test_decode_seq_reads_sequence_numbers_and_ignores_junk() -> None:
    """decode_seq reads the sequence number the server de-duplicates by, and ignores junk."""
    assert decode_seq(encode_message(42)) == 42
    assert decode_seq("not json") is None
    assert decode_seq(json.dumps({"seq": True})) is None
    assert decode_seq(json.dumps([1, 2])) is None


def test_summary_text_shows_the_lost_equation_and_json_is_serialisable() -> None:
    """The SUMMARY spells out lost = sent - delivered - dead-lettered, and to_dict() is JSON."""
    summary = DemoSummary(seed=5, duration=10.0, sent=100, delivered=98, dead_lettered=2)
    summary.faults = ["restart"]
    summary.faults_injected = 1
    text = summary.render(Reporter(None))
    assert "lost = sent - delivered - dead-lettered = 100 - 98 - 2 = 0" in text
    assert "0 copies, 0 out of order reached the application" in text
    assert "RESULT: OK" in text
    assert "\x1b[" not in text  # no colors unless asked
    assert json.loads(json.dumps(summary.to_dict()))["ok"] is True


def test_json_feed_consumer_example_runs_standalone_and_exits_0() -> None:
    """examples/json_feed_consumer.py runs on its own (embedded server, one restart): it
    re-subscribes after the restart, notices the gap, reports dead letters, exits 0."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "json_feed_consumer.py"), "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=root,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "subscribed (subscription #2)" in result.stdout
    assert "gap: missed" in result.stdout
    assert "dead letter (overflow)" in result.stdout


@pytest.mark.anyio
async def test_realtime_part_rejoins_after_a_phoenix_restart_and_reports_the_gap() -> None:
    """The --realtime part: the channel receives changes, the Phoenix server restarts, the
    client rejoins by itself, the gap hook fires, and later changes arrive too."""
    result = await run_realtime_part(Reporter(None), seed=1, timeout=20)
    assert result["available"] is True
    assert result["ok"] is True, result
    assert result["events"] == 5
    assert result["rejoins"] >= 1
    assert result["gaps_reported"] >= 1


@pytest.mark.anyio
async def test_realtime_part_says_when_the_client_is_not_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the Realtime client the part is skipped with a message, not a crash."""
    monkeypatch.setitem(sys.modules, "resilient_conn.realtime", None)
    result = await run_realtime_part(Reporter(None), seed=1)
    assert result == {"available": False, "detail": "the Realtime client is not available"}
