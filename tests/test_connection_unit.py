"""ResilientConnection without a server: bad input, the buffer's overflow policies, redaction."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from structlog.testing import capture_logs

from resilient_conn._core.errors import (
    BufferFullError,
    ConfigError,
    ConnectionClosedError,
    NotConnectedError,
)
from resilient_conn.connection.buffer import DeadLetter, DeadLetterReason
from resilient_conn.connection.connection import ResilientConnection
from resilient_conn.connection.events import ConnectionState

URL = "ws://127.0.0.1:9/feed"  # never dialed in these tests


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"url": "http://127.0.0.1/"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": 42}, "url"),
        ({"open_timeout": -1}, "open_timeout"),
        ({"ping_timeout": 0}, "ping_timeout"),
        ({"close_timeout": -0.5}, "close_timeout"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"buffer_bytes": 0}, "buffer_bytes"),
        ({"overflow": "explode"}, "overflow"),
        ({"message_ttl": 0}, "message_ttl"),
        ({"buffer_high_water": 1.5}, "buffer_high_water"),
        ({"dead_letter_capacity": -1}, "dead_letter_capacity"),
        ({"headers": 3}, "headers"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_parameter(
    kwargs: dict[str, object], param: str
) -> None:
    """Every bad argument is a ValueError (ConfigError) whose message names the parameter."""
    args = {"url": URL, **kwargs}
    url = args.pop("url")
    with pytest.raises(ConfigError, match=param) as info:
        ResilientConnection(url, **args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_environment_overrides_defaults_and_arguments_override_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RESILIENT_CONN_* variables beat the code defaults; explicit arguments beat both."""
    monkeypatch.setenv("RESILIENT_CONN_PING_INTERVAL", "3.5")
    monkeypatch.setenv("RESILIENT_CONN_BUFFER_SIZE", "7")
    assert ResilientConnection(URL).options.ping_interval == 3.5
    assert ResilientConnection(URL, ping_interval=1.0).options.ping_interval == 1.0
    monkeypatch.setenv("RESILIENT_CONN_STABLE_AFTER", "soon")
    with pytest.raises(ConfigError, match="RESILIENT_CONN_STABLE_AFTER"):
        ResilientConnection(URL)


def test_secrets_never_reach_repr_or_name() -> None:
    """userinfo and token/apikey query values are redacted in the repr and the display URL."""
    conn = ResilientConnection("wss://user:hunter2@h.example/ws?apikey=sekrit&token=t0k&vsn=2")
    text = repr(conn) + conn.url
    for secret in ("hunter2", "sekrit", "t0k", "user:"):
        assert secret not in text
    assert "vsn=2" in text


@pytest.mark.anyio
async def test_drop_oldest_dead_letters_the_oldest_with_a_reason() -> None:
    """While disconnected, a full buffer with drop_oldest evicts the oldest message, which
    reaches the dead-letter callback with reason OVERFLOW; nothing vanishes."""
    seen: list[DeadLetter] = []
    conn = ResilientConnection(
        URL, buffer_size=2, overflow="drop_oldest", on_dead_letter=seen.append
    )
    for m in ("m1", "m2", "m3"):
        await conn.send(m)
    assert [d.message for d in seen] == ["m1"]
    assert seen[0].reason is DeadLetterReason.OVERFLOW
    assert conn.buffered == 2
    assert conn.stats.dead_letters == {"overflow": 1}
    await conn.aclose()
    assert [d.message for d in seen] == ["m1", "m2", "m3"]
    assert [d.reason for d in seen[1:]] == [DeadLetterReason.CLOSED] * 2


@pytest.mark.anyio
async def test_drop_newest_dead_letters_the_new_message() -> None:
    """drop_newest keeps what is buffered and dead-letters the message that did not fit."""
    conn = ResilientConnection(URL, buffer_size=1, overflow="drop_newest")
    await conn.send(b"first")
    await conn.send(b"second")
    assert [d.message for d in conn.dead_letters] == [b"second"]
    await conn.aclose()


@pytest.mark.anyio
async def test_raise_policy_raises_and_keeps_nothing_of_the_rejected_message() -> None:
    """overflow="raise" raises BufferFullError; the caller still owns the message."""
    conn = ResilientConnection(URL, buffer_size=1, overflow="raise")
    await conn.send("a")
    with pytest.raises(BufferFullError):
        await conn.send("b")
    assert conn.buffered == 1
    assert not conn.dead_letters
    await conn.aclose()


@pytest.mark.anyio
async def test_block_policy_times_out_with_buffer_full() -> None:
    """overflow="block" waits send_timeout for room, then raises BufferFullError."""
    conn = ResilientConnection(URL, buffer_size=1, send_timeout=0.05)
    await conn.send("a")
    with anyio.fail_after(5), pytest.raises(BufferFullError, match="still full"):
        await conn.send("b")
    await conn.aclose()


@pytest.mark.anyio
async def test_blocked_sender_is_woken_by_close() -> None:
    """A sender blocked on a full buffer gets ConnectionClosedError when the user closes."""
    conn = ResilientConnection(URL, buffer_size=1, send_timeout=30)
    await conn.send("a")
    async with anyio.create_task_group() as tg:
        result: list[BaseException] = []

        async def blocked() -> None:
            try:
                await conn.send("b")
            except ConnectionClosedError as exc:
                result.append(exc)

        tg.start_soon(blocked)
        await asyncio.sleep(0)  # let it block (it can only block: the buffer is full)
        with anyio.fail_after(5):
            await conn.aclose()
    assert len(result) == 1


@pytest.mark.anyio
async def test_oversized_message_is_dead_lettered_too_large() -> None:
    """A message bigger than the whole byte capacity can never be buffered: dead-lettered."""
    conn = ResilientConnection(URL, buffer_bytes=4)
    await conn.send("12345")
    assert conn.dead_letters[0].reason is DeadLetterReason.TOO_LARGE
    await conn.aclose()


@pytest.mark.anyio
async def test_unbuffered_send_while_disconnected_raises() -> None:
    """send(buffer=False) refuses instead of buffering when no transport is open."""
    conn = ResilientConnection(URL)
    with pytest.raises(NotConnectedError):
        await conn.send("x", buffer=False)
    assert conn.buffered == 0
    await conn.aclose()


@pytest.mark.anyio
async def test_closed_connection_refuses_io_and_iteration_ends() -> None:
    """After aclose(): send and recv raise ConnectionClosedError and `async for` just ends."""
    conn = ResilientConnection(URL)
    await conn.aclose()
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosedError):
        await conn.send("x")
    with pytest.raises(ConnectionClosedError):
        await conn.recv()
    assert [m async for m in conn] == []
    await conn.aclose()  # idempotent


@pytest.mark.anyio
async def test_wrong_message_type_is_a_type_error() -> None:
    """Only str and bytes can be sent."""
    conn = ResilientConnection(URL)
    with pytest.raises(TypeError, match="str or bytes"):
        await conn.send(123)  # type: ignore[arg-type]
    await conn.aclose()


@pytest.mark.anyio
async def test_log_events_are_namespaced_and_redacted() -> None:
    """State changes are logged as resilient_conn.state_changed and carry no secrets."""
    with capture_logs() as logs:
        conn = ResilientConnection("ws://127.0.0.1:9/?token=sekrit")
        await conn.aclose()
    events = [entry["event"] for entry in logs]
    assert "resilient_conn.state_changed" in events
    assert "sekrit" not in repr(logs)


@pytest.mark.anyio
async def test_aclose_from_on_open_closes_and_cancels_the_caller() -> None:
    """Awaiting aclose() inside on_open (which runs in the supervisor) cannot wait for the
    close, which stops the supervisor: it starts the close, on_open is cancelled with the
    supervisor (nothing after the await runs), and the connection ends CLOSED on its own."""
    from resilient_conn.testing import ScriptedServer

    after_await: list[str] = []
    cancelled: list[bool] = []

    async def closes_itself(c: ResilientConnection) -> None:
        try:
            await c.aclose()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        after_await.append("ran")

    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, on_open=closes_itself, ping_interval=0)
        closed = asyncio.Event()
        conn.on_state_change(lambda ch: closed.set() if ch.new is ConnectionState.CLOSED else None)
        conn.start()
        with anyio.fail_after(10):
            await closed.wait()
            await conn.aclose()  # the same close: returns once it is over
        assert conn.state is ConnectionState.CLOSED
        await server.wait_for_closed(1)
    assert cancelled == [True]
    assert after_await == []
