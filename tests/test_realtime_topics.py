"""Topics as the server knows them: ``realtime:`` only for Supabase, exact topics elsewhere.

Reproduction from issue 13: ``client.channel("rooms:lobby")`` always became
``realtime:rooms:lobby``, so against a plain Phoenix server a topic its router does not match
was silently joined under another name, and a topic outside ``realtime:`` could not be joined.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_conn._core.errors import ChannelJoinError, ConfigError
from resilient_conn.realtime import ChannelState, RealtimeClient
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing.phoenix import PhoenixServer

T = 5.0

FAST: dict[str, Any] = {
    "backoff": Backoff(initial_delay=0.01, max_delay=0.05),
    "stable_after": 0.05,
    "push_timeout": 2.0,
}


@pytest.mark.anyio
async def test_a_plain_phoenix_endpoint_joins_topics_exactly_as_given() -> None:
    """On ``/socket/websocket`` a routed topic is joined under its own name and works."""
    async with PhoenixServer(topics=("rooms:*",)) as server:
        async with RealtimeClient(server.url, **FAST) as client:
            assert client.topic_prefix == ""
            room = client.channel("rooms:lobby")
            assert room.topic == "rooms:lobby"
            await room.subscribe()
            assert room.state is ChannelState.JOINED
            assert [j.topic for j in server.joins] == ["rooms:lobby"]
            await server.broadcast("rooms:lobby", "hi", {"n": 1})
            with anyio.fail_after(T):
                message = await anext(aiter(room))
            assert message.topic == "rooms:lobby"


@pytest.mark.anyio
async def test_an_unrouted_topic_fails_with_phoenix_unmatched_topic() -> None:
    """A topic the server's router does not match fails the join with ``unmatched topic``
    (Phoenix's own answer) instead of being joined under another name."""
    async with PhoenixServer(topics=("rooms:*",)) as server:
        async with RealtimeClient(server.url, **FAST) as client:
            room = client.channel("lobby")
            with pytest.raises(ChannelJoinError, match="unmatched topic") as info:
                await room.subscribe()
            assert info.value.reason == "unmatched topic"
            assert room.state is ChannelState.CLOSED
            (join,) = server.joins
            assert (join.topic, join.accepted) == ("lobby", False)


@pytest.mark.anyio
async def test_supabase_paths_and_an_explicit_prefix_add_realtime() -> None:
    """The Supabase path adds ``realtime:``; ``topic_prefix=`` does so on any path; a topic
    that already has the prefix is left alone."""
    async with PhoenixServer() as server:
        async with RealtimeClient(server.realtime_url, **FAST) as client:
            assert client.channel("room1").topic == "realtime:room1"
            assert client.channel("realtime:room2").topic == "realtime:room2"
            await client.channel("room1").subscribe()
        async with RealtimeClient(server.url, topic_prefix="realtime:", **FAST) as client:
            room = client.channel("room3")
            await room.subscribe()
            assert room.topic == "realtime:room3"
    assert [j.topic for j in server.joins] == ["realtime:room1", "realtime:room3"]


def test_the_prefix_is_chosen_from_the_url_and_bad_topics_are_refused() -> None:
    """Hosted Supabase (host or path) gets the prefix, other servers none; bad topics and
    prefixes raise ConfigError at once."""
    cases = {
        "https://xyz.supabase.co": "realtime:",
        "wss://xyz.supabase.co/realtime/v1/websocket": "realtime:",
        "ws://localhost:4000/realtime/v1/websocket": "realtime:",
        "ws://localhost:4000/socket/websocket": "",
        "wss://phoenix.example/live/websocket": "",
    }
    for url, prefix in cases.items():
        assert RealtimeClient(url).topic_prefix == prefix, url
    client = RealtimeClient("ws://localhost:4000/socket/websocket")
    for bad in ("", "phoenix", None, 3):
        with pytest.raises(ConfigError, match="topic"):
            client.channel(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="topic_prefix"):
        RealtimeClient("ws://h/socket/websocket", topic_prefix=1)  # type: ignore[arg-type]


def test_phoenix_example_runs_against_its_local_server() -> None:
    """examples/phoenix_channels.py joins ``rooms:lobby`` as is, gets ``unmatched topic`` for
    ``lobby``, and its slow async handler drops (bounded) while a sync one sees everything."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "phoenix_channels.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for expected in (
        "topic prefix for ws://127.0.0.1",
        "join 'lobby' refused: unmatched topic",
        "joined rooms:lobby",
        "sync handler saw 501 messages",
    ):
        assert expected in done.stdout


@settings(max_examples=200, deadline=None)
@given(
    url=st.text(max_size=40) | st.from_regex(r"(https?|wss?)://[^/]{0,12}(:[0-9a-z]{0,6})?/.{0,10}")
)
def test_any_realtime_url_is_accepted_or_refused_with_config_error(url: str) -> None:
    """RealtimeClient checks its URL at construction like ResilientConnection: ConfigError,
    or a URL whose every dial URL is valid (e.g. ``ws://h:99999/`` used to be accepted)."""
    from resilient_conn.adapters.websocket import check_ws_url

    try:
        client = RealtimeClient(url)
    except ConfigError:
        return
    assert check_ws_url(client._dial_url())
