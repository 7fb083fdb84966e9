"""Health end to end: real ResilientConnections on 127.0.0.1, a registry, HTTP probes, alerts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from resilient_conn.connection.connection import ResilientConnection
from resilient_conn.connection.events import ConnectionState
from resilient_conn.health import HealthStatus
from resilient_conn.health.alerting import Alert, AlertKind, AlertPolicy
from resilient_conn.health.asgi import HealthServer, serve_health
from resilient_conn.health.registry import HealthRegistry
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.resilience.breaker import CircuitBreaker
from resilient_conn.testing import ChaosProxy, ScriptedServer

from ._recorder import StateRecorder

pytestmark = pytest.mark.anyio

S = ConnectionState
H = HealthStatus
FAST = Backoff(initial_delay=0.02, max_delay=0.1, jitter="full")


def conn_to(url: str, **kwargs: Any) -> ResilientConnection:
    """A connection with fast backoff and no keepalive (the tests drive round trips)."""
    options: dict[str, Any] = {
        "backoff": FAST,
        "stable_after": 0.2,
        "ping_interval": 0,
        "close_timeout": 1.0,
        "open_timeout": 2.0,
        "name": "feed",
    }
    options.update(kwargs)
    return ResilientConnection(url, **options)


async def get(server: HealthServer, path: str) -> tuple[int, bytes]:
    """GET ``path`` over a fresh loopback connection; return status and body."""
    with anyio.fail_after(10):
        stream = await anyio.connect_tcp(server.host, server.port)
        async with stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
            buf = bytearray()
            try:
                while True:
                    buf += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def metric(text: bytes, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``."""
    values = [
        s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(values) == 1, (name, labels, values)
    return float(values[0])


async def test_readyz_measures_rtt_then_turns_503_when_the_peer_goes_silent() -> None:
    """Over HTTP: a live connection is ready with a measured rtt; blackholed, /readyz answers
    503 "round trip failed" within the check timeout; healed, it is ready again."""
    async with ScriptedServer() as ws_server, ChaosProxy("127.0.0.1", ws_server.port) as proxy:
        async with conn_to(proxy.url_for("/")) as conn:
            await conn.wait_connected(5)
            registry = HealthRegistry(check_timeout=0.5)
            registry.register("feed", conn)
            async with serve_health(registry) as server:
                status, body = await get(server, "/readyz")
                assert status == 200
                feed = json.loads(body)["components"]["feed"]
                assert (feed["kind"], feed["state"], feed["status"]) == (
                    "connection",
                    "connected",
                    "healthy",
                )
                assert feed["rtt"] is not None
                proxy.blackhole()
                with anyio.fail_after(0.5 + 3):
                    status, body = await get(server, "/readyz")
                assert status == 503
                detail = json.loads(body)["components"]["feed"]["detail"]
                assert "round trip failed" in detail or "timed out" in detail
                status, _ = await get(server, "/livez")
                assert status == 200  # liveness ignores the upstream
                proxy.heal()
                status, _ = await get(server, "/readyz")
                assert status == 200


async def test_metrics_follow_traffic_and_reconnects() -> None:
    """/metrics counts messages each way and shows the reconnect after a server restart."""
    rec = StateRecorder()
    async with ScriptedServer() as ws_server, conn_to(ws_server.url) as conn:
        conn.on_state_change(rec)
        await conn.wait_connected(5)
        await conn.send("one")
        with anyio.fail_after(5):
            assert await conn.recv() == "one"
        await ws_server.restart()
        await rec.wait_state(S.CONNECTED, 2)
        registry = HealthRegistry()
        registry.register("feed", conn)
        async with serve_health(registry) as server:
            status, text = await get(server, "/metrics")
    assert status == 200
    assert metric(text, "resilient_conn_connection_messages_total", direction="out") == 1
    assert metric(text, "resilient_conn_connection_messages_total", direction="in") == 1
    assert metric(text, "resilient_conn_connection_reconnects_total") == 1
    assert metric(text, "resilient_conn_connection_state", state="connected") == 1
    assert metric(text, "resilient_conn_breaker_state", state="closed") == 1


async def test_unreachable_upstream_becomes_unhealthy_after_unhealthy_after() -> None:
    """A connection whose server went away is DEGRADED while retrying, then UNHEALTHY once it
    has been disconnected for unhealthy_after; the registry and /healthz say so."""
    rec = StateRecorder()
    async with ScriptedServer() as ws_server:
        breaker = CircuitBreaker(failure_threshold=1000)
        async with conn_to(ws_server.url, unhealthy_after=1.0, breaker=breaker) as conn:
            conn.on_state_change(rec)
            registry = HealthRegistry()
            registry.register("feed", conn)
            await conn.wait_connected(5)
            await ws_server.stop()
            await rec.wait_state(S.BACKOFF, 1)
            assert registry.health().status is H.DEGRADED
            await rec.wait_for(lambda: registry.health().status is H.UNHEALTHY, timeout=10)
            report = registry.health().components["feed"]
            assert "disconnected for" in report.detail
            assert report.last_error is not None
            async with serve_health(registry) as server:
                status, body = await get(server, "/healthz")
    assert status == 503
    assert json.loads(body)["components"]["feed"]["state"] in ("backoff", "connecting")


async def test_open_circuit_is_unhealthy_and_exported() -> None:
    """When the breaker opens, the connection is UNHEALTHY at once and /metrics shows it open."""
    rec = StateRecorder()
    async with ScriptedServer() as ws_server:
        await ws_server.stop()
        breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=60.0)
        async with conn_to(ws_server.url, breaker=breaker) as conn:
            conn.on_state_change(rec)
            await rec.wait_state(S.CIRCUIT_OPEN, 1)
            registry = HealthRegistry()
            registry.register("feed", conn)
            report = await registry.check_all(timeout=1.0)
            assert report.status is H.UNHEALTHY
            assert "circuit open" in report.components["feed"].detail
            async with serve_health(registry) as server:
                _, text = await get(server, "/metrics")
    assert metric(text, "resilient_conn_breaker_state", state="open") == 1
    assert metric(text, "resilient_conn_connection_state", state="circuit_open") == 1
    assert metric(text, "resilient_conn_health_status", status="unhealthy") == 1


async def test_alert_policy_on_a_real_connection_alerts_once_and_recovers_once() -> None:
    """Wired to on_state_change, AlertPolicy raises one incident for a server outage, however
    many reconnect attempts it takes, and one recovery when the connection is back."""
    alerts: list[Alert] = []
    got_two = anyio.Event()

    def sink(alert: Alert) -> None:
        alerts.append(alert)
        if len(alerts) == 2:
            got_two.set()

    rec = StateRecorder()
    async with ScriptedServer() as ws_server, conn_to(ws_server.url) as conn:
        await conn.wait_connected(5)
        conn.on_state_change(AlertPolicy(grace=0.0, sink=sink))
        conn.on_state_change(rec)
        await ws_server.stop()
        # several failed attempts during the outage (the third opens the connection's breaker)
        await rec.wait_for(lambda: rec.count(S.BACKOFF) + rec.count(S.CIRCUIT_OPEN) >= 3)
        await ws_server.start()
        with anyio.fail_after(10):
            await got_two.wait()
    assert [a.kind for a in alerts] == [AlertKind.INCIDENT, AlertKind.RECOVERED]
    assert alerts[0].name == "feed"
    assert alerts[1].duration > 0


def load_example(name: str) -> Any:
    """Import ``examples/<name>.py`` as a module."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_health_endpoint_example_runs_and_sees_the_documented_codes() -> None:
    """examples/health_endpoint.py runs by itself: 200s while up, 200 while degraded, 503 once
    unhealthy, 200 on /livez throughout, 200 again after recovery."""
    with anyio.fail_after(30):
        codes = await load_example("health_endpoint").main()
    assert codes == [200, 200, 200, 200, 503, 200, 200]


async def test_alerting_example_runs_and_alerts_as_documented() -> None:
    """examples/alerting_hook.py: no alert for a quick restart; warning + recovery for an
    outage; critical + recovery when the circuit opens."""
    with anyio.fail_after(30):
        alerts = await load_example("alerting_hook").main()
    assert [(a.kind, a.severity) for a in alerts] == [
        (AlertKind.INCIDENT, "warning"),
        (AlertKind.RECOVERED, "info"),
        (AlertKind.INCIDENT, "critical"),
        (AlertKind.RECOVERED, "info"),
    ]
