"""Issue 13, configuration: a value that cannot work fails at construction (or, from a
callable, makes the connection FAILED after one dial); it is never retried forever.

Each test reproduces a line of the issue: before the fix every one of these was accepted and
then looped in BACKOFF (``ValueError``, ``TypeError``, ``handshake``) or in ``on_open_failed``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_conn import ConfigError, ConnectionFailedError, ConnectionState, ResilientConnection
from resilient_conn.adapters.checks import CONNECT_KWARGS
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing import ScriptedServer

T = 10.0
FAST: dict[str, Any] = {"backoff": Backoff(0.01, 0.05), "ping_interval": 0}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ws://127.0.0.1:99999/", "port"),
        ("ws://127.0.0.1:abc/", "port"),
        ("ws://127.0.0.1:0/", "port"),
        ("ws://127.0.0.1/a b", "spaces"),
        ("ws://127.0.0.1/\r\nX: y", "control"),
        ("http://127.0.0.1/", "ws://"),
        ("ws:///nohost", "ws://"),
    ],
)
def test_bad_urls_fail_at_construction_naming_the_parameter(url: str, says: str) -> None:
    """A URL that can never be dialed is a ConfigError naming ``url`` and what is wrong."""
    with pytest.raises(ConfigError, match="url") as info:
        ResilientConnection(url)
    assert says in str(info.value)


def test_a_misspelled_option_is_refused_with_a_suggestion_and_the_accepted_names() -> None:
    """``pingg_interval=3`` is refused at once; the message suggests ``ping_interval`` and
    lists what is accepted."""
    with pytest.raises(ConfigError, match="pingg_interval") as info:
        ResilientConnection("ws://127.0.0.1:9/", pingg_interval=3)
    message = str(info.value)
    assert "did you mean 'ping_interval'" in message
    assert all(name in message for name in CONNECT_KWARGS)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"additional_headers": {"a": "b"}}, "use headers="),
        ({"process_exception": lambda e: e}, "classify="),
        ({"subprotocols": "chat"}, "subprotocols"),
        ({"subprotocols": ["a b"]}, "subprotocols"),
        ({"compression": "gzip"}, "compression"),
        ({"ssl": "yes"}, "ssl"),
        ({"origin": "http://x\r\nEvil: 1"}, "origin"),
        ({"write_limit": 0}, "write_limit"),
    ],
)
def test_managed_or_bad_websockets_options_are_refused(kwargs: dict[str, Any], says: str) -> None:
    """websockets options the connection manages, or bad values of known ones, are refused
    with a message that says what to use instead."""
    with pytest.raises(ConfigError, match=says):
        ResilientConnection("ws://127.0.0.1:9/", **kwargs)


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"X-Token": "abc\r\nInjected: 1"}, "CR, LF"),
        ({"X-A": "line\nbreak"}, "CR, LF"),
        ({"Bad Name": "v"}, "HTTP token"),
        ({"X-A": 3}, "must be a str"),
        ({"Sec-WebSocket-Protocol": "chat"}, "subprotocols="),
        ({"Host": "evil"}, "URL"),
        ({"X-A": "\u20ac"}, "Latin-1"),
        (["not", "a", "mapping"], "mapping"),
    ],
)
def test_bad_headers_fail_at_construction(headers: Any, says: str) -> None:
    """Header names must be tokens and values free of CR/LF/NUL (header injection); the
    handshake's own headers are refused; nothing secret is echoed."""
    with pytest.raises(ConfigError, match=says) as info:
        ResilientConnection("ws://127.0.0.1:9/", headers=headers)
    assert "abc" not in str(info.value)


def test_bad_callables_and_names_fail_at_construction() -> None:
    """on_open, on_dead_letter, classify, probe must be callable; name a non-empty string."""
    for param in ("on_open", "on_dead_letter", "classify", "probe"):
        with pytest.raises(ConfigError, match=param):
            ResilientConnection("ws://127.0.0.1:9/", **{param: "nope"})
    with pytest.raises(ConfigError, match="name"):
        ResilientConnection("ws://127.0.0.1:9/", name="  ")


@pytest.mark.anyio
async def test_a_sync_on_open_works_like_an_async_one() -> None:
    """A plain function as ``on_open`` is called after every connect and the connection goes
    live; it is not an ``on_open_failed`` loop."""
    calls: list[int] = []
    async with ScriptedServer() as server:
        async with ResilientConnection(
            server.url, on_open=lambda c: calls.append(c.generation), **FAST
        ) as conn:
            await conn.send("hi")
            with anyio.fail_after(T):
                assert await conn.recv() == "hi"
            await server.restart()
            with anyio.fail_after(T):
                await conn.send("again")
                assert await conn.recv() == "again"
        assert calls == [1, 2]
        assert "on_open_failed" not in conn.stats.failures


async def _fails_after_one_dial(conn: ResilientConnection) -> ConnectionFailedError:
    """Run ``conn`` until it FAILS (bounded); return the error its consumer sees."""
    async with conn:
        with anyio.fail_after(T), pytest.raises(ConnectionFailedError) as info:
            await conn.recv()
    assert conn.state is ConnectionState.FAILED
    assert conn.stats.dials == 1
    return info.value


@pytest.mark.anyio
async def test_a_headers_callable_returning_crlf_fails_after_one_dial() -> None:
    """Headers from a callable are checked before each dial: a CR/LF value is fatal."""
    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, headers=lambda: {"X-T": "a\r\nb: c"}, **FAST)
        error = await _fails_after_one_dial(conn)
        assert "invalid_config" in str(error)
        assert server.connection_count == 0


@pytest.mark.anyio
async def test_http_200_without_upgrade_is_failed_not_retried() -> None:
    """A plain web page (HTTP 200, no upgrade) is not a WebSocket endpoint: FAILED."""
    async with ScriptedServer() as server:
        server.reject(200, body="<html>hello</html>")
        error = await _fails_after_one_dial(ResilientConnection(server.url, **FAST))
        assert "not_websocket" in str(error)
        assert "200" in str(error)


@pytest.mark.anyio
async def test_a_redirect_loop_is_failed_not_retried() -> None:
    """A server redirecting to itself ends in FAILED (``redirect``) after websockets' ten
    hops, instead of being redialed forever."""
    async with ScriptedServer() as server:
        server.reject(302, headers={"Location": server.url})
        error = await _fails_after_one_dial(ResilientConnection(server.url, **FAST))
        assert "redirect" in str(error)
        assert server.rejection_count == 10


@pytest.mark.anyio
async def test_a_cross_origin_redirect_drops_every_credential_header() -> None:
    """Redirected to another origin, the dial keeps ordinary headers but drops every
    credential-looking one (websockets alone would forward ``apikey`` and ``X-Api-Key``); a
    same-origin redirect keeps them."""
    secret = {
        "Authorization": "Bearer t0k",
        "apikey": "k1",
        "X-Api-Key": "k2",
        "X-Session-Id": "s3",
        "X-Trace": "keep-me",
    }
    async with ScriptedServer() as target, ScriptedServer() as origin:
        origin.reject_next(302, headers={"Location": origin.url_for("/same")})
        origin.reject_next(307, headers={"Location": target.url})
        async with ResilientConnection(origin.url, headers=secret, **FAST):
            await target.wait_for_connection(1, timeout=T)
        same = origin.rejections[-1].request_headers
        assert same.get("apikey") == "k1"
        sent = target.connections[0].request_headers
        assert sent.get("X-Trace") == "keep-me"
        for name in ("Authorization", "apikey", "X-Api-Key", "X-Session-Id"):
            assert name not in sent, name


def test_realtime_client_refuses_unknown_options_with_a_suggestion() -> None:
    """A typo on RealtimeClient is refused at construction with the closest name, whether it
    was meant for the client or for its connection."""
    from resilient_conn.realtime import RealtimeClient

    with pytest.raises(ConfigError, match="did you mean 'access_token'"):
        RealtimeClient("ws://127.0.0.1:9/socket/websocket", acess_token="t")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="did you mean 'ping_interval'"):
        RealtimeClient("ws://127.0.0.1:9/socket/websocket", pingg_interval=3)
    client = RealtimeClient("ws://127.0.0.1:9/socket/websocket", stable_after=1.0, ssl=None)
    assert client.connection.options.stable_after == 1.0


@settings(max_examples=300, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda scheme, host, port, rest: f"{scheme}://{host}:{port}{rest}",
            st.sampled_from(["ws", "wss", "http", "", "WS"]),
            st.text(max_size=15),
            st.text(max_size=8),
            st.text(max_size=15),
        ),
    )
)
def test_any_url_is_accepted_or_refused_with_config_error(url: str) -> None:
    """Whatever string is passed as a URL, construction either succeeds with a dialable URL
    (port 1-65535) or raises ConfigError, never anything else."""
    from urllib.parse import urlsplit

    try:
        ResilientConnection(url)
    except ConfigError:
        return
    port = urlsplit(url).port
    assert port is None or 1 <= port <= 65535


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(
        st.text(max_size=12) | st.integers(), st.text(max_size=20) | st.none(), max_size=4
    ),
    kwargs=st.dictionaries(st.text(max_size=12), st.none() | st.text(max_size=5), max_size=3),
)
def test_any_headers_and_kwargs_are_accepted_or_refused_with_config_error(
    headers: dict[Any, Any], kwargs: dict[str, Any]
) -> None:
    """Arbitrary header maps and keyword arguments: ConfigError or a valid connection whose
    headers have no CR/LF, never another exception."""
    from resilient_conn.adapters.checks import check_connect_kwargs, check_headers

    try:
        checked = check_headers(headers)
    except ConfigError:
        pass
    else:
        assert all("\r" not in v and "\n" not in v for v in checked.values())
    with contextlib.suppress(ConfigError):
        check_connect_kwargs(kwargs)


def test_the_option_lists_in_errors_match_the_constructor() -> None:
    """The names an unknown-option error lists are exactly ResilientConnection's keyword
    options, and none of them is also passed on to websockets."""
    import inspect

    from resilient_conn.adapters.checks import MANAGED, OWN_OPTIONS

    params = inspect.signature(ResilientConnection.__init__).parameters
    keyword_only = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    assert sorted(OWN_OPTIONS) == sorted(keyword_only)
    assert not set(OWN_OPTIONS) & (CONNECT_KWARGS | set(MANAGED))
