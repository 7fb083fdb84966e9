"""The dashboard over plain HTTP on 127.0.0.1: the page, its event stream, bounds, disconnects.

Served by ``serve_health`` (which streams ``more_body`` responses) and, for the ASGI contract a
real server such as uvicorn follows, called directly with scripted receive/send.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import random
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from resilient_conn import (
    Backoff,
    CircuitBreaker,
    ConfigError,
    HealthRegistry,
    HealthReport,
    HealthStatus,
    ResilientConnection,
    health_app,
    serve_health,
)
from resilient_conn.cli import commands as cli
from resilient_conn.cli._demo_dashboard import mount_dashboard, wait_for_viewer
from resilient_conn.cli._demo_report import DemoSummary
from resilient_conn.cli.demo import DASHBOARD_INTERVAL, MIN_DURATION, DemoOptions, run_demo
from resilient_conn.health import DashboardApp, DashboardConfig, HealthServer
from resilient_conn.testing import ScriptedServer

TIMEOUT = 15.0
FAST = DashboardConfig(interval=0.05)


@dataclass
class Event:
    """One Server-Sent Event."""

    kind: str
    data: Any
    id: str | None = None


@dataclass
class Stream:
    """A raw HTTP/1.1 client reading a text/event-stream incrementally."""

    sock: anyio.abc.SocketStream
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    buf: bytearray = field(default_factory=bytearray)
    retry: int | None = None

    @classmethod
    async def open(cls, server: HealthServer, path: str = "/dashboard/events") -> Stream:
        """Send GET ``path`` and read the response head."""
        sock = await anyio.connect_tcp(server.host, server.port)
        stream = cls(sock)
        await sock.send(
            f"GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        with anyio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in stream.buf:
                stream.buf += await sock.receive()
        head, _, rest = bytes(stream.buf).partition(b"\r\n\r\n")
        stream.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        stream.status = int(lines[0].split(" ")[1])
        stream.headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:])}
        return stream

    async def next(self) -> Event:
        """The next event (``retry:`` lines and comments are consumed on the way)."""
        with anyio.fail_after(TIMEOUT):
            while True:
                while b"\n\n" not in self.buf:
                    self.buf += await self.sock.receive()
                block, _, rest = bytes(self.buf).partition(b"\n\n")
                self.buf = bytearray(rest)
                fields: dict[str, str] = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(": ")
                    fields[name] = value
                if "retry" in fields:
                    self.retry = int(fields["retry"])
                if "event" in fields:
                    return Event(fields["event"], json.loads(fields["data"]), fields.get("id"))

    async def until(self, predicate: Callable[[Event], bool], limit: int = 500) -> list[Event]:
        """Read events until one satisfies ``predicate``; all read so far, that one last."""
        seen: list[Event] = []
        for _ in range(limit):
            seen.append(await self.next())
            if predicate(seen[-1]):
                return seen
        raise AssertionError(f"no matching event in {limit}: {[e.kind for e in seen][-20:]}")

    async def drain(self, limit: int = 1000) -> None:
        """Read events until the server closes the stream (raises EndOfStream then)."""
        for _ in range(limit):
            await self.next()
        raise AssertionError(f"the stream was still open after {limit} events")

    async def aclose(self) -> None:
        """Hang up."""
        await self.sock.aclose()


async def get(
    server: HealthServer, path: str, method: str = "GET", auth: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request over a fresh connection, read until the server closes it."""
    extra = f"Authorization: {auth}\r\n" if auth else ""
    with anyio.fail_after(TIMEOUT):
        sock = await anyio.connect_tcp(server.host, server.port)
        async with sock:
            await sock.send(f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
            buf = bytearray()
            try:
                while True:
                    buf += await sock.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def tiles(event: Event) -> dict[str, dict[str, Any]]:
    """The tiles of a sample or snapshot event, by name."""
    sample = event.data["sample"] if event.kind == "snapshot" else event.data
    return {t["name"]: t for t in sample["tiles"]}


# --- the page ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_page_and_assets_are_served_from_the_package_with_a_strict_policy() -> None:
    """/dashboard, app.js and app.css come from the package with their content types and a CSP
    that forbids loading from or connecting to any other origin; / redirects to the page."""
    registry = HealthRegistry()
    async with serve_health(registry) as server:
        status, headers, body = await get(server, "/dashboard")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b'src="dashboard/app.js"' in body
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "connect-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        status, headers, body = await get(server, "/dashboard/app.js")
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
        assert b"EventSource" in body
        status, headers, _ = await get(server, "/dashboard/app.css")
        assert (status, headers["content-type"]) == (200, "text/css; charset=utf-8")
        status, headers, _ = await get(server, "/dashboard/")
        assert (status, headers["location"]) == (308, "../dashboard")
        assert (await get(server, "/dashboard/nope"))[0] == 404
        assert (await get(server, "/dashboard/events", "POST"))[0] == 405
        status, headers, body = await get(server, "/dashboard/events", "HEAD")
        assert (status, headers["content-type"], body) == (
            200,
            "text/event-stream; charset=utf-8",
            b"",
        )


def test_static_files_ship_in_the_package_and_name_no_other_host() -> None:
    """The page's files are package data (so the wheel carries them) and contain no URL of any
    other host: nothing is loaded from a CDN, nothing is sent anywhere else."""
    static = resources.files("resilient_conn.health").joinpath("static")
    names = {"dashboard.html", "dashboard.js", "dashboard.css"}
    for name in names:
        text = static.joinpath(name).read_text()
        assert text.replace("http://www.w3.org/2000/svg", "").count("://") == 0, name
        for call in ("fetch(", "XMLHttpRequest", "sendBeacon", "WebSocket("):
            assert call not in text, (name, call)


@pytest.mark.anyio
async def test_dashboard_false_turns_the_routes_off() -> None:
    """health_app(dashboard=False) answers 404 on every dashboard route; probes still work."""
    registry = HealthRegistry()
    app = health_app(registry, dashboard=False)
    async with serve_health(registry, app=app) as server:
        for path in ("/dashboard", "/dashboard/events", "/dashboard/state", "/dashboard/app.js"):
            assert (await get(server, path))[0] == 404, path
        assert (await get(server, "/livez"))[0] == 200


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": float("nan")}, "interval"),
        ({"write_timeout": -1}, "write_timeout"),
        ({"max_subscribers": 0}, "max_subscribers"),
        ({"backlog": 1.5}, "backlog"),
        ({"history": True}, "history"),
        ({"points": 0}, "points"),
        ({"max_tiles": "5"}, "max_tiles"),
    ],
)
def test_bad_dashboard_settings_are_config_errors(kwargs: dict[str, Any], param: str) -> None:
    """Every bad DashboardConfig value is a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=param):
        DashboardConfig(**kwargs)


def test_bad_dashboard_argument_is_a_config_error() -> None:
    """health_app(dashboard=...) takes a bool or a DashboardConfig, nothing else."""
    with pytest.raises(ConfigError, match="dashboard"):
        health_app(HealthRegistry(), dashboard="yes")  # type: ignore[arg-type]


# --- the event stream --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_events_stream_a_snapshot_then_samples_and_state_changes_with_reasons() -> None:
    """text/event-stream: a retry hint, a snapshot with every tile, samples every interval, and
    a change event (with id and reason) as the connection goes down and comes back."""
    async with ScriptedServer() as upstream:
        conn = ResilientConnection(
            upstream.url, name="feed", backoff=Backoff(0.05, 0.2, rng=random.Random(1))
        )
        registry = HealthRegistry(name="svc")
        registry.register("feed", conn)
        app = health_app(registry, dashboard=FAST)
        async with conn, serve_health(registry, app=app) as server:
            await conn.wait_connected(TIMEOUT)
            stream = await Stream.open(server)
            assert stream.status == 200
            assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert stream.headers["cache-control"] == "no-store"
            assert "content-length" not in stream.headers
            first = await stream.next()
            assert first.kind == "snapshot"
            assert stream.retry == 2000
            assert tiles(first)["feed"]["state"] == "connected"
            assert first.data["config"]["interval"] == FAST.interval
            await stream.until(lambda e: e.kind == "sample")

            await upstream.stop(1001, "outage")
            seen = await stream.until(lambda e: e.kind == "change" and e.data["old"] == "connected")
            change = seen[-1]
            assert change.id == str(change.data["seq"])
            assert change.data["name"] == "feed"
            assert change.data["what"] == "state"
            assert "1001" in change.data["reason"]
            await stream.until(
                lambda e: e.kind == "sample" and tiles(e)["feed"]["state"] != "connected"
            )

            await upstream.start()
            await stream.until(lambda e: e.kind == "change" and e.data["new"] == "connected")
            await stream.until(
                lambda e: e.kind == "sample" and tiles(e)["feed"]["state"] == "connected"
            )
            sample = (await stream.until(lambda e: e.kind == "sample"))[-1]
            assert sample.data["points"]["feed"][0] == sample.data["t"]
            await stream.aclose()


@pytest.mark.anyio
async def test_a_breaker_transition_is_a_change_event_and_the_snapshot_keeps_the_timeline() -> None:
    """Components without hooks (a bare breaker) show up as changes seen between samples; a
    page that opens later gets them in its snapshot's timeline."""
    breaker = CircuitBreaker(name="geo")
    registry = HealthRegistry()
    registry.register("geo", breaker)
    async with serve_health(registry, app=health_app(registry, dashboard=FAST)) as server:
        stream = await Stream.open(server)
        assert (await stream.next()).kind == "snapshot"
        breaker.force_open()
        seen = await stream.until(lambda e: e.kind == "change")
        assert seen[-1].data | {"at": 0, "seq": 0} == {
            "seq": 0,
            "at": 0,
            "name": "geo",
            "what": "breaker",
            "old": "closed",
            "new": "forced_open",
            "reason": "circuit forced open; next probe in forever",
        }
        later = await Stream.open(server)
        snapshot = await later.next()
        assert [c["new"] for c in snapshot.data["timelines"]["geo"]] == ["forced_open"]
        assert tiles(snapshot)["geo"]["status"] == "unhealthy"
        await stream.aclose()
        await later.aclose()


@pytest.mark.anyio
async def test_subscribers_are_bounded_and_a_hang_up_frees_the_slot() -> None:
    """Beyond max_subscribers a page gets 503 with Retry-After at once; when a watching page
    hangs up the server notices (no write needed) and the slot is free again."""
    registry = HealthRegistry()
    dash = DashboardApp(registry, DashboardConfig(interval=30, max_subscribers=2))
    feed = dash.feed
    async with serve_health(registry, app=dash) as server:
        a = await Stream.open(server, "/events")
        b = await Stream.open(server, "/events")
        assert (await a.next()).kind == (await b.next()).kind == "snapshot"
        status, headers, body = await get(server, "/events")
        assert status == 503
        assert headers["retry-after"] == "5"
        assert json.loads(body)["max"] == 2
        await a.aclose()
        await feed.changed.wait_until(lambda: feed.subscribers == 1, TIMEOUT)
        c = await Stream.open(server, "/events")
        assert c.status == 200
        assert (await c.next()).kind == "snapshot"
        await b.aclose()
        await c.aclose()
        await feed.changed.wait_until(lambda: feed.subscribers == 0, TIMEOUT)


@pytest.mark.anyio
async def test_a_page_that_stops_reading_is_dropped_after_write_timeout() -> None:
    """A subscriber that never reads (its socket buffers full) is dropped once one update waits
    longer than write_timeout: it cannot hold a slot or grow memory."""
    registry = HealthRegistry()
    for i in range(60):
        registry.register(f"breaker-{i:02d}-" + "x" * 100, CircuitBreaker(name=f"b{i}"))
    dash = DashboardApp(registry, DashboardConfig(interval=0.01, write_timeout=0.2))
    feed = dash.feed
    async with serve_health(registry, app=dash) as server:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
        try:
            await anyio.to_thread.run_sync(raw.connect, (server.host, server.port))
            await anyio.to_thread.run_sync(raw.sendall, b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
            await feed.changed.wait_until(lambda: feed.subscribers == 1, TIMEOUT)
            await feed.changed.wait_until(lambda: feed.subscribers == 0, 30)
        finally:
            raw.close()


@pytest.mark.anyio
async def test_the_asgi_contract_a_disconnect_ends_the_stream() -> None:
    """Called as any ASGI server calls it: the stream starts with 200 and a snapshot, and ends
    (no task left) when receive() says http.disconnect."""
    registry = HealthRegistry()
    registry.register("geo", CircuitBreaker(name="geo"))
    app = health_app(registry, dashboard=DashboardConfig(interval=0.01))
    sent: list[dict[str, Any]] = []
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) >= 4:
            gone.set()

    scope = {"type": "http", "method": "GET", "path": "/dashboard/events", "root_path": ""}
    with anyio.fail_after(TIMEOUT):
        await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert sent[1]["more_body"] is True
    assert b"event: snapshot" in sent[1]["body"]


# --- no secret on the page ----------------------------------------------------------------------

SECRETS = ("SUPERSECRET1", "SUPERSECRET2", "SUPERSECRET3", "SUPERSECRET4")


class Leaky:
    """A component whose reports and state-change hooks carry credentials."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[Any], None]] = []

    def health(self) -> HealthReport:
        """A report whose detail and last error quote credentials."""
        return HealthReport(
            HealthStatus.DEGRADED,
            "leaky",
            f"dial wss://u:{SECRETS[0]}@feed.example/ws?token={SECRETS[1]}",
            0.0,
            last_error=f"401 for Authorization: Bearer {SECRETS[2]}",
        )

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Same as health()."""
        return self.health()

    def on_state_change(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Keep the hook; the test fires it."""
        self.hooks.append(callback)
        return lambda: self.hooks.remove(callback)


@dataclass
class FakeChange:
    """Shaped like a StateChange, with a secret in its reason and error."""

    old: str = "connected"
    new: str = "backoff"
    reason: str = f"redirected to https://x.example/?apikey={SECRETS[3]}"
    error: Exception = field(default_factory=lambda: RuntimeError(f"password={SECRETS[3]}"))
    at: float = 1.0


@pytest.mark.anyio
async def test_no_secret_reaches_the_page_from_reports_or_hooks() -> None:
    """Userinfo, token query keys, bearer tokens and api keys in reports, errors and hook
    reasons are redacted in the snapshot, the samples and the change events."""
    leaky = Leaky()
    registry = HealthRegistry()
    registry.register("leaky", leaky)
    async with serve_health(registry, app=health_app(registry, dashboard=FAST)) as server:
        stream = await Stream.open(server)
        text = [json.dumps((await stream.next()).data)]
        assert len(leaky.hooks) == 1
        leaky.hooks[0](FakeChange())
        seen = await stream.until(lambda e: e.kind == "change")
        text += [json.dumps(e.data) for e in seen]
        text.append((await get(server, "/dashboard/state"))[2].decode())
        await stream.aclose()
    everything = "\n".join(text)
    assert "***" in everything
    for secret in SECRETS:
        assert secret not in everything


# --- the demo --------------------------------------------------------------------------------


class Lines(io.StringIO):
    """A text stream that signals when the demo printed its dashboard URL."""

    def __init__(self) -> None:
        super().__init__()
        self.announced = anyio.Event()

    def write(self, text: str) -> int:
        """Write, and watch for the URL line."""
        written = super().write(text)
        if "dashboard: open" in text:
            self.announced.set()
        return written


@pytest.mark.anyio
async def test_demo_dashboard_prints_its_url_and_streams_the_faults() -> None:
    """`demo --dashboard` (quiet) still prints the dashboard URL and waits for a page; the
    page's stream there shows the demo connection's tile and its first fault as a change; the
    demo still loses nothing.

    The demo runs to its end: cancelling it while its first fault (a server restart) is under
    way can hang the event loop (a pre-existing problem, reported; not the dashboard's).
    """
    out = Lines()
    summaries: list[DemoSummary] = []
    options = DemoOptions(duration=MIN_DURATION, seed=3, quiet=True, dashboard=True)

    async def run() -> None:
        summaries.append(await run_demo(options, out))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(TIMEOUT):
            await out.announced.wait()
        found = re.search(r"open http://([\d.]+):(\d+)/dashboard ", out.getvalue())
        assert found is not None, out.getvalue()
        stream = await Stream.open(HealthServer(found[1], int(found[2])))
        snapshot = await stream.next()
        assert "demo" in tiles(snapshot)
        assert snapshot.data["config"]["interval"] == DASHBOARD_INTERVAL
        await stream.until(lambda e: e.kind == "change" and e.data["old"] == "connected")
        await stream.aclose()
    assert summaries[0].ok, summaries[0].problems


def test_demo_dashboard_port_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --dashboard-port is a usage error naming the bound; DemoOptions checks it too."""
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--dashboard", "--dashboard-port", "70000"])
    assert info.value.code == 2
    assert "[0, 65535]" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="dashboard_port"):
        DemoOptions(dashboard_port=-1)


# --- the auth example ----------------------------------------------------------------------------


def load_example() -> Any:
    """examples/dashboard_behind_auth.py as a module."""
    path = Path(__file__).parent.parent / "examples" / "dashboard_behind_auth.py"
    spec = importlib.util.spec_from_file_location("dashboard_behind_auth", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
async def test_auth_example_guards_the_dashboard_and_leaves_the_probes_open() -> None:
    """The example's Basic-auth wrapper: /dashboard and its stream are 401 with a challenge
    without the password and 200 with it; /livez and /metrics stay open for the orchestrator."""
    example = load_example()
    registry = HealthRegistry()
    app = example.basic_auth(health_app(registry), "ops", "pw")
    good = "Basic " + base64.b64encode(b"ops:pw").decode()
    bad = "Basic " + base64.b64encode(b"ops:nope").decode()
    async with serve_health(registry, app=app) as server:
        status, headers, _ = await get(server, "/dashboard")
        assert status == 401
        assert headers["www-authenticate"].startswith("Basic ")
        assert (await get(server, "/dashboard/events", auth=bad))[0] == 401
        assert (await get(server, "/dashboard", auth=good))[0] == 200
        assert (await get(server, "/dashboard/events", "HEAD", auth=good))[0] == 200
        assert (await get(server, "/livez"))[0] == 200
        assert (await get(server, "/metrics"))[0] == 200


@pytest.mark.anyio
async def test_auth_example_runs_and_prints_where_to_look(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example starts, prints the dashboard URL without echoing a password from the
    environment, and stops by itself."""
    monkeypatch.setenv("DASHBOARD_PASSWORD", "hunter2")
    example = load_example()
    with anyio.fail_after(TIMEOUT):
        await example.main(0.3, 0)
    out = capsys.readouterr().out
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/dashboard", out)
    assert "hunter2" not in out


@pytest.mark.anyio
async def test_auth_example_guards_the_dashboard_under_a_mount_prefix() -> None:
    """Mounted under /ops (Starlette keeps the full path and sets root_path), the wrapper still
    guards /ops/dashboard: no page without the password."""
    example = load_example()
    app = example.basic_auth(HealthRegistry().asgi_app(), "ops", "pw")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/ops/dashboard", "root_path": "/ops"}
    await app(scope, receive, send)
    assert sent[0]["status"] == 401


@pytest.mark.anyio
async def test_registry_asgi_app_can_turn_the_dashboard_off() -> None:
    """registry.asgi_app(dashboard=False) has no /dashboard; the default has it."""
    registry = HealthRegistry()
    async with serve_health(registry, app=registry.asgi_app(dashboard=False)) as server:
        assert (await get(server, "/dashboard"))[0] == 404
    async with serve_health(registry, app=registry.asgi_app()) as server:
        assert (await get(server, "/dashboard"))[0] == 200


# --- hostile use ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_crowd_of_pages_gets_exactly_max_subscribers_streams() -> None:
    """Twenty pages at once against max_subscribers=3: three streams, seventeen 503s, and after
    they all hang up nothing is left subscribed."""
    registry = HealthRegistry()
    dash = DashboardApp(registry, DashboardConfig(interval=30, max_subscribers=3))
    feed = dash.feed
    statuses: list[int] = []
    streams: list[Stream] = []
    async with serve_health(registry, app=dash) as server:

        async def page() -> None:
            stream = await Stream.open(server, "/events")
            statuses.append(stream.status)
            streams.append(stream)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(page)
        assert sorted(statuses) == [200] * 3 + [503] * 17
        for stream in streams:
            await stream.aclose()
        await feed.changed.wait_until(lambda: feed.subscribers == 0, TIMEOUT)


@pytest.mark.anyio
async def test_stopping_the_server_ends_open_streams_and_leaves_nothing_running() -> None:
    """Leaving serve_health with pages watching closes their streams (they see EOF) and the
    subscriber count returns to 0."""
    registry = HealthRegistry()
    registry.register("b", CircuitBreaker())
    dash = DashboardApp(registry, DashboardConfig(interval=0.05))
    async with serve_health(registry, app=dash) as server:
        streams = [await Stream.open(server, "/events") for _ in range(3)]
        for stream in streams:
            assert (await stream.next()).kind == "snapshot"
    assert dash.feed.subscribers == 0
    for stream in streams:
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.drain()
        await stream.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/dashboard/events?since=abc&x=%00", 200),
        ("/dashboard/%2e%2e/livez", 404),
        ("/dashboard/app.js/", 404),
        ("/dashboard/state?" + "a" * 4000, 200),
        ("/dashboardx", 404),
        ("/DASHBOARD", 404),
    ],
)
async def test_odd_paths_get_plain_answers(path: str, status: int) -> None:
    """Queries are ignored, traversal and near-miss paths are 404, nothing breaks the app."""
    registry = HealthRegistry()
    async with serve_health(registry) as server:
        if status == 200 and "events" in path:
            stream = await Stream.open(server, path)
            assert stream.status == 200
            assert (await stream.next()).kind == "snapshot"
            await stream.aclose()
        else:
            assert (await get(server, path))[0] == status


@pytest.mark.anyio
async def test_state_is_fresh_even_when_no_page_is_watching() -> None:
    """/dashboard/state takes a new sample when the last one is older than interval."""
    breaker = CircuitBreaker()
    registry = HealthRegistry()
    registry.register("b", breaker)
    # an interval so short that every request finds the last sample out of date
    app = health_app(registry, dashboard=DashboardConfig(interval=1e-9))
    async with serve_health(registry, app=app) as server:
        first = json.loads((await get(server, "/dashboard/state"))[2])
        assert first["sample"]["tiles"][0]["breaker_state"] == "closed"
        breaker.force_open()
        second = json.loads((await get(server, "/dashboard/state"))[2])
        assert second["sample"]["tiles"][0]["breaker_state"] == "forced_open"


@pytest.mark.anyio
@pytest.mark.parametrize("cancel_at", [1, 2, 3, 5, 8])
async def test_cancelling_a_stream_at_any_send_releases_its_slot(cancel_at: int) -> None:
    """Cancelled from outside at its 1st, 2nd, ... send (the head, the snapshot, samples), a
    stream ends at once and gives its subscriber slot back."""
    registry = HealthRegistry()
    registry.register("b", CircuitBreaker())
    dash = DashboardApp(registry, DashboardConfig(interval=0.001, max_subscribers=1))
    sends = 0
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with anyio.fail_after(TIMEOUT), anyio.CancelScope() as outer:

        async def send(message: dict[str, Any]) -> None:
            nonlocal sends
            sends += 1
            if sends == cancel_at:
                outer.cancel()
            await anyio.lowlevel.checkpoint()

        await dash({"type": "http", "method": "GET", "path": "/events"}, receive, send)
    assert outer.cancel_called
    assert sends == cancel_at
    assert dash.feed.subscribers == 0


@pytest.mark.anyio
async def test_the_demo_waits_for_a_first_page_before_its_faults() -> None:
    """wait_for_viewer returns True as soon as a page subscribes, and False after its timeout
    when none does (the demo then goes on)."""
    registry = HealthRegistry()
    dash = DashboardApp(registry, DashboardConfig(interval=30))
    assert await wait_for_viewer(dash, 0.01) is False
    app = mount_dashboard(health_app(registry, dashboard=False), dash)
    async with serve_health(registry, app=app) as server, anyio.create_task_group() as tg:
        seen: list[bool] = []

        async def waiter() -> None:
            seen.append(await wait_for_viewer(dash, TIMEOUT))

        tg.start_soon(waiter)
        stream = await Stream.open(server)
        assert (await stream.next()).kind == "snapshot"
        with anyio.fail_after(TIMEOUT):
            while not seen:
                await dash.feed.changed.wait()
        assert seen == [True]
        assert (await get(server, "/livez"))[0] == 200
        await stream.aclose()
