"""The health ASGI app, served over real HTTP on 127.0.0.1 by serve_health, and called directly."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from resilient_conn._core.errors import ConfigError
from resilient_conn.health import HealthReport, HealthStatus
from resilient_conn.health.asgi import HealthServer, health_app, serve_health
from resilient_conn.health.registry import HealthRegistry
from resilient_conn.resilience.breaker import CircuitBreaker

H = HealthStatus
TIMEOUT = 10.0


class Fixed:
    """A component whose status the test sets."""

    def __init__(self, status: HealthStatus) -> None:
        self.status = status

    def health(self) -> HealthReport:
        """The set status."""
        return HealthReport(self.status, "fixed", f"set to {self.status.value}", 0.0)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """The set status."""
        return self.health()


@dataclass
class Reply:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


async def request(
    server: HealthServer, path: str, method: str = "GET", raw: bytes | None = None
) -> Reply:
    """Send one HTTP/1.1 request over a fresh loopback connection and read until EOF."""
    with anyio.fail_after(TIMEOUT):
        stream = await anyio.connect_tcp(server.host, server.port)
        async with stream:
            data = (
                raw or f"{method} {path} HTTP/1.1\r\nHost: probe\r\nUser-Agent: t\r\n\r\n".encode()
            )
            await stream.send(data)
            buf = bytearray()
            try:
                while True:
                    buf += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(status, {k.lower(): v for k, v in headers.items()}, body)


def registry_with(*statuses: HealthStatus, ready_on_degraded: bool = True) -> HealthRegistry:
    """A registry with one component per status."""
    registry = HealthRegistry(name="svc", ready_on_degraded=ready_on_degraded, check_timeout=2.0)
    for i, status in enumerate(statuses):
        registry.register(f"c{i}", Fixed(status))
    return registry


# --- over real HTTP ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_livez_is_200_even_when_every_upstream_is_down() -> None:
    """Liveness does not depend on upstreams: UNHEALTHY components still give 200 alive."""
    async with serve_health(registry_with(H.UNHEALTHY)) as server:
        reply = await request(server, "/livez")
    assert server.host == "127.0.0.1"
    assert reply.status == 200
    assert reply.json() == {"status": "alive", "name": "svc"}
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    assert int(reply.headers["content-length"]) == len(reply.body)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("statuses", "ready_on_degraded", "code", "ready"),
    [
        ((H.HEALTHY, H.HEALTHY), True, 200, True),
        ((H.HEALTHY, H.DEGRADED), True, 200, True),
        ((H.HEALTHY, H.DEGRADED), False, 503, False),
        ((H.HEALTHY, H.UNHEALTHY), True, 503, False),
    ],
)
async def test_readyz_status_code_follows_readiness(
    statuses: tuple[HealthStatus, ...], ready_on_degraded: bool, code: int, ready: bool
) -> None:
    """/readyz is 200 when ready and 503 when not, with the aggregate report as JSON."""
    registry = registry_with(*statuses, ready_on_degraded=ready_on_degraded)
    async with serve_health(registry) as server:
        reply = await request(server, "/readyz")
    assert reply.status == code
    body = reply.json()
    assert body["ready"] is ready
    assert body["status"] == H.worst(statuses).value
    assert set(body["components"]) == {f"c{i}" for i in range(len(statuses))}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code"), [(H.HEALTHY, 200), (H.DEGRADED, 200), (H.UNHEALTHY, 503)]
)
async def test_healthz_is_503_only_when_unhealthy(status: HealthStatus, code: int) -> None:
    """/healthz answers 200 for HEALTHY and DEGRADED, 503 for UNHEALTHY, with JSON detail."""
    async with serve_health(registry_with(status)) as server:
        reply = await request(server, "/healthz")
    assert reply.status == code
    body = reply.json()
    assert body["components"]["c0"]["detail"] == f"set to {status.value}"
    assert "ready" not in body


@pytest.mark.anyio
async def test_readyz_follows_a_live_change_of_state() -> None:
    """The same server turns 503 when a breaker opens and 200 again when it is reset."""
    registry = HealthRegistry()
    breaker = CircuitBreaker(name="db")
    registry.register("db", breaker)
    async with serve_health(registry) as server:
        assert (await request(server, "/readyz")).status == 200
        breaker.force_open()
        down = await request(server, "/readyz")
        breaker.reset()
        up = await request(server, "/readyz")
    assert down.status == 503
    assert down.json()["components"]["db"]["breaker_state"] == "forced_open"
    assert up.status == 200


@pytest.mark.anyio
async def test_metrics_endpoint_serves_parsable_prometheus_text() -> None:
    """/metrics has the 0.0.4 content type and parses with prometheus_client."""
    registry = registry_with(H.HEALTHY)
    registry.register("db", CircuitBreaker(name="db"))
    async with serve_health(registry) as server:
        reply = await request(server, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {f.name for f in text_string_to_metric_families(reply.body.decode())}
    assert {"resilient_conn_health_status", "resilient_conn_breaker_state"} <= names


@pytest.mark.anyio
async def test_unknown_path_is_404_and_other_methods_405() -> None:
    """Unknown paths are 404; POST/PUT on a known path is 405 with Allow: GET, HEAD."""
    async with serve_health(registry_with(H.HEALTHY)) as server:
        missing = await request(server, "/admin")
        post = await request(server, "/readyz", method="POST")
        body = b"x" * 30_000
        head = f"PUT /livez HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        put = await request(server, "", raw=head + body)
    assert put.status == 405  # read intact although the server never read the body
    assert missing.status == 404
    assert missing.json()["error"] == "not found"
    assert post.status == 405
    assert post.headers["allow"] == "GET, HEAD"


@pytest.mark.anyio
async def test_head_has_headers_but_no_body() -> None:
    """HEAD answers with the GET status and length, and sends no body."""
    async with serve_health(registry_with(H.UNHEALTHY)) as server:
        get = await request(server, "/healthz")
        head = await request(server, "/healthz", method="HEAD")
    assert head.status == get.status == 503
    assert head.body == b""
    assert int(head.headers["content-length"]) > 0


@pytest.mark.anyio
async def test_query_string_is_ignored_for_routing() -> None:
    """/readyz?verbose=1 is still /readyz."""
    async with serve_health(registry_with(H.HEALTHY)) as server:
        assert (await request(server, "/readyz?verbose=1")).status == 200


@pytest.mark.anyio
async def test_bad_requests_get_400_or_431_and_the_server_keeps_serving() -> None:
    """A malformed request line, a bad header and an oversized head are refused; the next
    request is served normally."""
    async with serve_health(registry_with(H.HEALTHY)) as server:
        garbage = await request(server, "", raw=b"HELLO\r\n\r\n")
        bad_header = await request(server, "", raw=b"GET /livez HTTP/1.1\r\nnocolon\r\n\r\n")
        huge = await request(server, "", raw=b"GET /livez HTTP/1.1\r\nX: " + b"a" * 20_000)
        silent = await anyio.connect_tcp(server.host, server.port)
        await silent.aclose()  # a client that connects and leaves without a word
        after = await request(server, "/livez")
    assert (garbage.status, bad_header.status, huge.status) == (400, 400, 431)
    assert after.status == 200


@pytest.mark.anyio
async def test_a_standard_http_client_works() -> None:
    """urllib (in a thread) gets 200 JSON for /livez and an HTTPError 503 for /readyz."""
    async with serve_health(registry_with(H.UNHEALTHY)) as server:

        def fetch(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(server.url + path, timeout=TIMEOUT) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as err:
                with err:
                    return err.code, err.read()

        live = await anyio.to_thread.run_sync(fetch, "/livez")
        ready = await anyio.to_thread.run_sync(fetch, "/readyz")
    assert live[0] == 200
    assert ready[0] == 503
    assert json.loads(ready[1])["status"] == "unhealthy"


@pytest.mark.anyio
async def test_hanging_component_gives_503_within_the_check_timeout() -> None:
    """A component whose check hangs makes /readyz answer 503 "timed out", not hang the probe."""

    class Hanging(Fixed):
        async def check(self, timeout: float | None = None) -> HealthReport:
            """Never answers."""
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    registry = HealthRegistry()
    registry.register("stuck", Hanging(H.HEALTHY))
    async with serve_health(registry, check_timeout=0.2) as server:
        with anyio.fail_after(0.2 + 2.0):
            reply = await request(server, "/readyz")
    assert reply.status == 503
    assert "timed out" in reply.json()["components"]["stuck"]["detail"]


@pytest.mark.anyio
async def test_server_stops_listening_after_the_block() -> None:
    """Leaving the block closes the listener: a new connection is refused."""
    async with serve_health(registry_with(H.HEALTHY)) as server:
        pass
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp(server.host, server.port)


@pytest.mark.anyio
async def test_errors_in_the_block_propagate_unwrapped() -> None:
    """An exception raised inside the block comes out as itself, not as an ExceptionGroup."""
    with pytest.raises(KeyError, match="boom"):
        async with serve_health(registry_with(H.HEALTHY)):
            raise KeyError("boom")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"check_timeout": -1}, "check_timeout"),
    ],
)
async def test_serve_health_rejects_bad_arguments(kwargs: dict[str, Any], param: str) -> None:
    """Bad serve_health arguments are ConfigErrors naming the parameter."""
    with pytest.raises(ConfigError, match=param):
        async with serve_health(HealthRegistry(), **kwargs):
            pass


@pytest.mark.anyio
async def test_app_errors_become_500_and_the_server_survives() -> None:
    """An ASGI app that raises gives a 500, and the server answers the next request."""
    calls = 0

    async def flaky(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("broken app")
        await health_app(registry_with(H.HEALTHY))(scope, receive, send)

    async with serve_health(HealthRegistry(), app=flaky) as server:
        first = await request(server, "/livez")
        second = await request(server, "/livez")
    assert (first.status, second.status) == (500, 200)


# --- the ASGI app called directly -------------------------------------------------------------


class Channel:
    """Collects what an ASGI app sends; feeds it scripted messages."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        """Next scripted message."""
        return self.incoming.pop(0)

    async def send(self, message: Any) -> None:
        """Record."""
        self.sent.append(dict(message))


@pytest.mark.anyio
async def test_lifespan_is_acknowledged() -> None:
    """startup and shutdown get their .complete answers, then the app returns."""
    channel = Channel({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    app = health_app(registry_with(H.HEALTHY))
    with anyio.fail_after(TIMEOUT):
        await app({"type": "lifespan"}, channel.receive, channel.send)
    assert [m["type"] for m in channel.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_mounted_under_a_root_path() -> None:
    """When mounted (root_path=/ops, path=/ops/readyz) the app routes on the rest of the path."""
    channel = Channel()
    scope = {"type": "http", "method": "GET", "path": "/ops/readyz", "root_path": "/ops"}
    await health_app(registry_with(H.HEALTHY))(scope, channel.receive, channel.send)
    assert channel.sent[0]["status"] == 200


@pytest.mark.anyio
async def test_websocket_scope_is_refused_politely() -> None:
    """A websocket connection is closed with 1008 instead of crashing the server."""
    channel = Channel({"type": "websocket.connect"})
    await health_app(HealthRegistry())({"type": "websocket"}, channel.receive, channel.send)
    assert channel.sent == [{"type": "websocket.close", "code": 1008, "reason": "not a websocket"}]


@pytest.mark.anyio
async def test_unknown_scope_type_raises() -> None:
    """An unknown scope type raises, as the ASGI spec asks."""
    channel = Channel()
    with pytest.raises(ValueError, match="unsupported ASGI scope type"):
        await health_app(HealthRegistry())({"type": "telepathy"}, channel.receive, channel.send)


def test_registry_asgi_app_and_bad_timeout() -> None:
    """registry.asgi_app() builds the app; a bad check_timeout is a ConfigError."""
    assert callable(HealthRegistry().asgi_app())
    with pytest.raises(ConfigError, match="check_timeout"):
        HealthRegistry().asgi_app(check_timeout=0)
