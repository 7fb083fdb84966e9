"""Issue 13, secrets: every secret x every place a user or an operator can see, each cell
asserted.

Secrets: credential-looking query keys (``client_secret``, ``auth``, ``sig``,
``access-token``, ``apikey``), URL userinfo, handshake headers (``Authorization: Bearer``,
``apikey``, ``X-Session-Id``), and a secret quoted inside the message of an exception raised by
a ``headers`` callable. Places: ``repr(conn)``, ``conn.url``, ``snapshot()``, ``health()`` and
its ``to_dict()``, the consumer's error, breaker metrics, log events (ours and websockets' own
DEBUG lines), and ``/healthz``, ``/readyz``, ``/metrics`` of the health app.

Reproduction: with a fixed list of names, ``client_secret``, ``auth``, ``sig`` and
``access-token`` appeared in ``repr(conn)``, ``conn.url`` and ``snapshot()``; the callable's
message leaked into logs, ``health()``, the probes and breaker metrics; websockets' DEBUG log
printed the query and the header values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from resilient_conn import HealthRegistry, ResilientConnection
from resilient_conn._core.log import redact_text
from resilient_conn.health.asgi import health_app
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing import ScriptedServer

QUERY_SECRETS = {
    "client_secret": "QS1secret",
    "auth": "QS2secret",
    "sig": "QS3secret",
    "access-token": "QS4secret",
    "apikey": "QS5secret",
}
USERINFO = "UI6secret"
HEADER_SECRETS = {
    "Authorization": "Bearer HS7secret",
    "apikey": "HS8secret",
    "X-Session-Id": "HS9secret",
}
RAISED = "RS10secret"
ALL = [*QUERY_SECRETS.values(), USERINFO, "HS7secret", "HS8secret", "HS9secret", RAISED]


async def _get(app: Any, path: str) -> str:
    """GET ``path`` from an ASGI app in-process; return the body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()


def _raising_headers() -> dict[str, str]:
    raise ValueError(f"token endpoint said no: https://idp.example/t?client_secret={RAISED}")


@pytest.mark.anyio
async def test_no_secret_appears_in_any_place(caplog: pytest.LogCaptureFixture) -> None:
    """Every cell of secret x place: the secret's value is absent."""
    query = "&".join(f"{k}={v}" for k, v in QUERY_SECRETS.items())
    caplog.set_level(logging.DEBUG, logger="websockets")
    places: dict[str, Callable[[], str]] = {}
    with capture_logs() as logs:
        async with ScriptedServer() as server:
            url = f"ws://user:{USERINFO}@127.0.0.1:{server.port}/feed?{query}&vsn=2"
            live = ResilientConnection(url, headers=HEADER_SECRETS, name="live", ping_interval=0)
            broken = ResilientConnection(
                server.url,
                headers=_raising_headers,
                name="broken",
                backoff=Backoff(0.01, 0.02),
                ping_interval=0,
            )
            registry = HealthRegistry()
            registry.register("live", live)
            registry.register("broken", broken)
            app = health_app(registry)
            async with live, broken:
                await live.send("hello")
                with anyio.fail_after(10):
                    assert await live.recv() == "hello"
                    while broken.stats.failures.get("ValueError", 0) < 2:
                        await broken._changed.wait()
                for conn in (live, broken):
                    places[f"repr({conn.name})"] = lambda c=conn: repr(c)
                    places[f"{conn.name}.url"] = lambda c=conn: c.url
                    places[f"{conn.name}.snapshot()"] = lambda c=conn: repr(c.snapshot())
                    places[f"{conn.name}.health()"] = lambda c=conn: repr(c.health())
                    places[f"{conn.name}.health().to_dict()"] = lambda c=conn: json.dumps(
                        c.health().to_dict()
                    )
                    places[f"{conn.name}.last_error"] = lambda c=conn: redact_text(
                        repr(c.last_error)
                    )
                    places[f"{conn.name}.breaker.metrics"] = lambda c=conn: json.dumps(
                        c.breaker.metrics().to_dict()
                    )
                    places[f"{conn.name}.breaker.metrics repr"] = lambda c=conn: repr(
                        c.breaker.metrics()
                    )
                bodies = {p: await _get(app, p) for p in ("/healthz", "/readyz", "/metrics")}
    for path, body in bodies.items():
        places[path] = lambda b=body: b
    places["structlog events"] = lambda: repr(logs)
    places["websockets DEBUG log"] = lambda: "\n".join(r.getMessage() for r in caplog.records)
    places["registry.metrics()"] = lambda: json.dumps(registry.metrics())

    assert any("GET /feed" in r.getMessage() for r in caplog.records), "no websockets DEBUG"
    assert RAISED in repr(broken.last_error)  # the raw exception is the user's own object
    leaks = [
        (secret, place) for place, show in places.items() for secret in ALL if secret in show()
    ]
    assert leaks == []


@pytest.mark.parametrize(
    "text",
    [
        "wss://h/ws?client_secret=SECRET&vsn=2",
        "wss://h/ws?auth=SECRET",
        "wss://h/ws?x_sig=SECRET",
        "wss://h/ws?ACCESS-TOKEN=SECRET",
        "wss://h/ws?sessionid=SECRET",
        "wss://h/ws?db_password=SECRET",
        "wss://h/ws?aws_credential=SECRET",
        "wss://u:SECRET@h/ws",
        "failed: Authorization: Bearer SECRET",
        "> apikey: SECRET",
        "> Cookie: sid=SECRET",
        "{'X-Api-Key': 'SECRET'}",
        '{"refresh_token": "SECRET"}',
        "token is eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.SECRETsig",
        "Basic SECRET=",
    ],
)
def test_redaction_is_by_pattern(text: str) -> None:
    """Any credential-looking name (token, secret, key, auth, sig, password, session, cookie,
    credential; any case; ``-`` or ``_``), userinfo, bearer/basic credentials and JWTs."""
    assert "SECRET" not in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "KeyError: 'x'",
        "ValueError: invalid port",
        "Token has expired 0 seconds ago",
        "wss://h/ws?vsn=2.0.0&log_level=info",
        "close_1011; next dial in 0.3s",
    ],
)
def test_redaction_leaves_ordinary_text_alone(text: str) -> None:
    """Error names, server reasons and ordinary query keys are kept as they are."""
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "key" * 300_000,
        "'key" * 300_000,
        "> " + "token" * 200_000,
        "a=b&" * 250_000,
        "{'" + "secret" * 100_000 + "': '" + "x" * 100_000,
    ],
)
def test_redaction_of_a_megabyte_of_hostile_text_is_linear(text: str) -> None:
    """Inputs that made the old patterns backtrack quadratically (about an hour for 1 MB) are
    handled in one pass; the result keeps the text's size order."""
    out = redact_text(text)
    assert len(out) <= len(text) + 3
