"""The demo: a short run survives every fault with nothing lost, and its accounting is honest."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import connect

from resilient_conn._core.errors import ConfigError
from resilient_conn.cli import commands as cli
from resilient_conn.cli._demo_app import AckingSender, DemoServerState, decode_seq, encode_message
from resilient_conn.cli._demo_realtime import run_realtime_part
from resilient_conn.cli._demo_report import DemoSummary, Reporter
from resilient_conn.cli.demo import MAX_DURATION, MIN_DURATION, DemoOptions
from resilient_conn.connection.buffer import DeadLetter, DeadLetterReason
from resilient_conn.connection.events import ConnectionState
from resilient_conn.testing import ScriptedServer


def test_short_demo_survives_every_fault_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`demo --duration 8 --seed 1 --json` runs in-process: five faults are injected, the
    client reconnects and the breaker opens, and sent == delivered + dead-lettered (lost 0),
    computed from what the server really received; exit code 0."""
    code = cli.main(["demo", "--duration", "8", "--seed", "1", "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 0, captured.err
    assert summary["ok"] is True
    assert summary["lost"] == 0
    assert summary["sent"] > 0
    assert summary["sent"] == summary["delivered"] + summary["dead_lettered"]
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


@dataclass
class _FakeConn:
    """Just enough of a ResilientConnection for AckingSender: a state and a send()."""

    state: ConnectionState = ConnectionState.CONNECTED
    sent: list[str] = field(default_factory=list)

    async def send(self, message: str) -> None:
        self.sent.append(message)


@pytest.mark.anyio
async def test_sender_resends_only_what_a_dead_transport_took() -> None:
    """After a reconnect, on_open re-sends the unacked messages handed to an earlier
    transport; messages sent while disconnected are left to the library's buffer (no double
    send), and an acked message is never re-sent."""
    conn = _FakeConn()
    sender = AckingSender()
    await sender.send(conn, 1)  # type: ignore[arg-type]
    await sender.send(conn, 2)  # type: ignore[arg-type]
    sender.on_ack(json.dumps({"ack": 1}))
    conn.state = ConnectionState.BACKOFF
    await sender.send(conn, 3)  # type: ignore[arg-type]  # buffered by the library
    conn.sent.clear()
    conn.state = ConnectionState.CONNECTED
    await sender.on_open(conn)  # type: ignore[arg-type]
    assert [decode_seq(m) for m in conn.sent] == [2]
    assert sender.resent == 1
    # on the next reconnect, #3 (flushed onto the previous transport) is re-sent too
    conn.sent.clear()
    await sender.on_open(conn)  # type: ignore[arg-type]
    assert [decode_seq(m) for m in conn.sent] == [2, 3]


def test_sender_counts_dead_letters_and_overflow_as_given_up() -> None:
    """A message the library dead-letters, or one evicted from the bounded unacked set, is
    counted as dead-lettered (reported), never silently forgotten."""
    given_up: list[tuple[int, str]] = []
    sender = AckingSender(capacity=2, on_give_up=lambda seq, why: given_up.append((seq, why)))
    letter = DeadLetter(encode_message(7), DeadLetterReason.OVERFLOW, 0.0, 1.0, "demo")
    sender.on_dead_letter(letter)
    assert sender.dead == {7}
    assert given_up == [(7, "overflow")]
    with pytest.raises(ValueError, match="capacity"):
        AckingSender(capacity=0)


@pytest.mark.anyio
async def test_sender_gives_up_the_oldest_when_unacked_is_full() -> None:
    """The unacked set is bounded: beyond capacity the oldest is given up and reported."""
    given_up: list[tuple[int, str]] = []
    sender = AckingSender(capacity=2, on_give_up=lambda seq, why: given_up.append((seq, why)))
    conn = _FakeConn()
    for seq in (1, 2, 3):
        await sender.send(conn, seq)  # type: ignore[arg-type]
    assert sender.unacked == 2
    assert given_up == [(1, "unacked_overflow")]


def test_decode_seq_reads_sequence_numbers_and_ignores_junk() -> None:
    """decode_seq reads the sequence number the server de-duplicates by, and ignores junk."""
    assert decode_seq(encode_message(42)) == 42
    assert decode_seq("not json") is None
    assert decode_seq(json.dumps({"seq": True})) is None
    assert decode_seq(json.dumps([1, 2])) is None


@pytest.mark.anyio
async def test_demo_server_acks_every_copy_and_counts_duplicates_once() -> None:
    """The demo server acks each copy it receives (so a re-send clears the client's unacked
    entry) but counts a sequence number as delivered once; extra copies are duplicates."""
    state = DemoServerState()
    async with ScriptedServer(state.handler) as server, connect(server.url) as ws:
        for seq in (1, 2, 1):
            await ws.send(encode_message(seq))
        with anyio.fail_after(5):
            acks = [decode_seq(await ws.recv(), "ack") for _ in range(3)]
    assert acks == [1, 2, 1]
    assert state.delivered == {1, 2}
    assert state.duplicates == 1


def test_summary_text_shows_the_lost_equation_and_json_is_serialisable() -> None:
    """The SUMMARY spells out lost = sent - delivered - dead-lettered, and to_dict() is JSON."""
    summary = DemoSummary(seed=5, duration=10.0, sent=100, delivered=98, dead_lettered=2)
    summary.faults = ["restart"]
    summary.faults_injected = 1
    text = summary.render(Reporter(None))
    assert "lost = sent - delivered - dead-lettered = 100 - 98 - 2 = 0" in text
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
