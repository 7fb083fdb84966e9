"""Serve an ASGI app with uvicorn inside the running event loop (``serve_health(server=...)``).

uvicorn is made to own a process: it installs signal handlers and configures logging. Here it
is a guest in the application's loop, so neither happens: signals stay the application's
(``capture_signals`` does nothing), logging is left as configured (``log_config=None``), no
access log. The app's lifespan is not run (the health app has nothing to start).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio

from .._core.errors import ConfigError

__all__ = ["uvicorn_server"]


@contextlib.asynccontextmanager
async def uvicorn_server(app: Any, host: str, port: int) -> AsyncIterator[tuple[str, int]]:
    """Run ``app`` in uvicorn on ``host:port`` while the block runs; yield the bound address.

    Raises:
        ConfigError: uvicorn is not installed.
        OSError: The address could not be bound.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError(
            "server='uvicorn' needs uvicorn (pip install 'resilient-conn[health]')"
        ) from exc

    class GuestServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the application owns its signals

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=2,
    )
    server = GuestServer(config)
    error: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 (uvicorn exposes no event for it)
                    await anyio.sleep(0.005)
            try:
                yield str(bound[0]), int(bound[1])
            except Exception as exc:  # re-raised below as is, not in an ExceptionGroup
                error = exc
            finally:
                server.should_exit = True
    finally:
        for listener in getattr(server, "servers", []):  # cancelled before uvicorn's shutdown
            listener.close()
        sock.close()
    if error is not None:
        raise error
