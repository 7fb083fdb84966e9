"""Serve /livez, /readyz, /healthz and /metrics for a connection and a breaker, then break things.

Runs on its own, against an embedded WebSocket server on 127.0.0.1::

    python examples/health_endpoint.py              # scripted tour, exits after a few seconds
    python examples/health_endpoint.py --serve 60   # then keep serving 60 s for curl

In a real service the registry is built the same way; only the server line changes (bind
``0.0.0.0`` and a fixed port for a Kubernetes probe, or mount ``registry.asgi_app()`` in the
ASGI server you already run).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

import anyio

from resilient_conn import (
    Backoff,
    CircuitBreaker,
    HealthRegistry,
    HealthStatus,
    ResilientConnection,
    StateChange,
    serve_health,
)
from resilient_conn.testing import ScriptedServer


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``; return the status and body (an HTTP error status is not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


async def show(base: str, path: str) -> int:
    """Fetch ``path`` in a thread, print a short summary, and return the status code."""
    status, body = await anyio.to_thread.run_sync(fetch, base + path)
    if path == "/metrics":
        lines = [line for line in body.splitlines() if "connection_state{" in line]
        print(f"GET {path} -> {status}\n  " + "\n  ".join(lines))
    else:
        data = json.loads(body)
        detail = data.get("detail", "")
        print(f"GET {path} -> {status}  {data.get('status')}" + (f": {detail}" if detail else ""))
    return status


async def main(serve_seconds: float = 0.0) -> list[int]:
    """Run the tour; return the status codes seen (the tests check them)."""
    seen: list[int] = []
    async with ScriptedServer() as upstream:
        conn = ResilientConnection(
            upstream.url,
            name="feed",
            backoff=Backoff(initial_delay=0.05, max_delay=0.2),
            breaker=CircuitBreaker(name="feed", recovery_timeout=0.5),  # short, for the demo
            ping_interval=1.0,
            ping_timeout=1.0,
            unhealthy_after=1.0,  # short, for the demo (default 30 s)
        )
        registry = HealthRegistry(name="demo", check_timeout=2.0)
        registry.register("feed", conn)
        registry.register("payments-api", CircuitBreaker(name="payments-api"), critical=False)
        unhealthy = anyio.Event()

        def watch(change: StateChange) -> None:  # a state-change hook (sync)
            if registry.health().status is HealthStatus.UNHEALTHY:
                unhealthy.set()

        conn.on_state_change(watch)
        async with conn, serve_health(registry, host="127.0.0.1", port=0) as server:
            print(f"health endpoints on {server.url}  (/livez /readyz /healthz /metrics)")
            await conn.wait_connected(10)
            seen += [await show(server.url, path) for path in ("/livez", "/readyz", "/metrics")]

            print("\n-- upstream goes down: DEGRADED (still ready) while reconnecting ...")
            await upstream.stop()
            seen.append(await show(server.url, "/readyz"))
            print("-- ... UNHEALTHY (503) once disconnected longer than unhealthy_after")
            with anyio.fail_after(10):
                await unhealthy.wait()
            seen.append(await show(server.url, "/readyz"))
            seen.append(await show(server.url, "/livez"))  # liveness does not follow upstreams

            print("\n-- upstream is back")
            await upstream.start()
            await conn.wait_connected(10)
            seen.append(await show(server.url, "/readyz"))
            if serve_seconds > 0:
                print(f"\nserving for {serve_seconds:g} s: curl {server.url}/healthz")
                await anyio.sleep(serve_seconds)
    return seen


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=float, default=0.0, help="keep serving this many seconds")
    anyio.run(main, parser.parse_args().serve)
