"""The live dashboard behind your own authentication (HTTP Basic here), with faults to watch.

Run it and open the printed URL (user ``ops``; the password is ``$DASHBOARD_PASSWORD`` or a
random one printed at start)::

    python examples/dashboard_behind_auth.py --seconds 120

An embedded server on 127.0.0.1 restarts every few seconds, so the tile turns from connected to
backoff and back, and the timeline fills. The probes (``/livez``, ``/readyz``, ``/healthz``,
``/metrics``) stay open for the orchestrator; only ``/dashboard`` asks for the password.

Why HTTP Basic (or a session cookie) and not a bearer token: the page's ``EventSource`` cannot
set an ``Authorization`` header, but the browser re-sends Basic credentials and same-origin
cookies by itself. See docs/dashboard.md for Starlette/FastAPI and reverse-proxy variants.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from resilient_conn import HealthRegistry, ResilientConnection, health_app, serve_health
from resilient_conn.testing import ScriptedServer

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def basic_auth(app: App, user: str, password: str, *, prefix: str = "/dashboard") -> App:
    """Wrap an ASGI app so that paths under ``prefix`` need HTTP Basic ``user:password``."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        if root and path.startswith(root):  # mounted under a prefix (Starlette's Mount, ...)
            path = path[len(root) :]
        if scope["type"] == "http" and (path == prefix or path.startswith(prefix + "/")):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not secrets.compare_digest(given.decode("latin-1"), expected):
                headers = [
                    (b"www-authenticate", b'Basic realm="resilient_conn dashboard"'),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                ]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": b"authentication required\n"})
                return
        await app(scope, receive, send)

    return guarded


async def main(seconds: float, port: int) -> None:
    """Serve the guarded dashboard for ``seconds`` while the embedded server keeps restarting."""
    password = os.environ.get("DASHBOARD_PASSWORD") or secrets.token_urlsafe(12)
    async with ScriptedServer() as upstream:
        conn = ResilientConnection(upstream.url, name="feed", ping_interval=1.0)
        registry = HealthRegistry(name="example")
        registry.register("feed", conn)
        app = basic_auth(health_app(registry), "ops", password)
        async with conn, serve_health(registry, port=port, app=app) as server:
            shown = "from $DASHBOARD_PASSWORD" if "DASHBOARD_PASSWORD" in os.environ else password
            print(f"dashboard: {server.url}/dashboard  (user ops, password {shown})", flush=True)
            with anyio.move_on_after(seconds):
                while True:
                    await anyio.sleep(6)
                    await upstream.restart(downtime=1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to run")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args()
    anyio.run(main, args.seconds, args.port)
