"""A Starlette app that owns a ResilientConnection in its lifespan and mounts the health endpoints.

The pattern for any ASGI app (FastAPI is Starlette underneath, the same code works there):

- open the connection when the app starts (``lifespan``), close it when the app stops, so no
  connection task outlives the server and shutdown drains the outbound buffer;
- register it in a :class:`~resilient_conn.HealthRegistry` and mount ``registry.asgi_app()``
  under ``/health`` (``/health/livez``, ``/health/readyz``, ``/health/healthz``,
  ``/health/metrics``) for the orchestrator's probes;
- keep the consumer (``async for message in conn``) in a task the lifespan owns.

Runs on its own against an embedded WebSocket server on 127.0.0.1 (needs ``starlette`` and
``uvicorn``: ``pip install starlette uvicorn``)::

    python examples/asgi_lifespan.py

In production you would run ``uvicorn myapp:app --host 0.0.0.0 --port 8000`` and point the
Kubernetes ``livenessProbe`` at ``/health/livez`` and the ``readinessProbe`` at
``/health/readyz``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from resilient_conn import HealthRegistry, ResilientConnection
from resilient_conn.testing import ScriptedServer


def build_app(upstream_url: str) -> Starlette:
    """The application: one upstream feed, its health under /health, a /last route."""
    conn = ResilientConnection(upstream_url, name="feed", ping_interval=5, ping_timeout=5)
    registry = HealthRegistry(name="my-service", check_timeout=2.0)
    registry.register("feed", conn)
    latest: dict[str, str] = {}

    async def consume() -> None:
        async for message in conn:  # keeps going across reconnects; ends when conn closes
            latest["message"] = str(message)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with conn, anyio.create_task_group() as tg:  # conn closes after the consumer
            tg.start_soon(consume)
            await conn.send("subscribe")  # buffered until connected, then sent in order
            yield
            tg.cancel_scope.cancel()

    async def last(request: Request) -> JSONResponse:
        return JSONResponse({"last": latest.get("message"), "state": conn.state.value})

    return Starlette(
        routes=[Route("/last", last), Mount("/health", app=registry.asgi_app())],
        lifespan=lifespan,
    )


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``; return the status and body (an HTTP error status is not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


async def main() -> dict[str, int]:
    """Serve the app with uvicorn on 127.0.0.1, probe it, stop it; return path -> status."""
    seen: dict[str, int] = {}
    async with ScriptedServer() as upstream:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # uvicorn serves on this socket: no port race
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(build_app(upstream.url), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 (uvicorn exposes no event)
                    await anyio.sleep(0.01)
            await upstream.wait_for_messages(1)  # the lifespan's "subscribe" arrived
            for path in ("/health/livez", "/health/readyz", "/last", "/health/metrics"):
                status, body = await anyio.to_thread.run_sync(fetch, base + path)
                seen[path] = status
                shown = body if path != "/health/metrics" else f"{len(body.splitlines())} lines"
                print(f"GET {path} -> {status} {shown.strip()[:100]}")
            server.should_exit = True
        sock.close()
    print(json.dumps(seen))
    return seen


if __name__ == "__main__":
    anyio.run(main)
