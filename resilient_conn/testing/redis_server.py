"""RedisServer: a real ``redis-server`` process on 127.0.0.1 for tests and benchmarks.

Needs the ``redis-server`` program (Debian: ``apt-get install redis-server``). Nothing is
persisted (no RDB, no AOF), so a kill and restart is a Redis that lost its data, as after a
crash without persistence. Tests use :func:`redis_server_path` to skip when it is absent.

Example::

    async with RedisServer() as redis:
        store = RedisStore(redis.url)
        await redis.kill()       # SIGKILL
        await redis.start()      # same port, empty
        redis.pause()            # SIGSTOP: a Redis that stops answering
        redis.resume()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from types import TracebackType

import anyio
import anyio.abc

__all__ = ["RedisServer", "free_port", "redis_server_path"]

LOOPBACK = "127.0.0.1"


def redis_server_path() -> str | None:
    """Return the path of ``redis-server`` (``$REDIS_SERVER`` or on ``PATH``), or None."""
    return os.environ.get("REDIS_SERVER") or shutil.which("redis-server")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Runs ``redis-server`` bound to 127.0.0.1 on a free port (kept across restarts).

    Args:
        port: Port to listen on; 0 picks a free one.
        start_timeout: Real seconds to wait for "Ready to accept connections".

    Raises:
        FileNotFoundError: ``redis-server`` is not installed.
    """

    def __init__(self, port: int = 0, *, start_timeout: float = 10.0) -> None:
        path = redis_server_path()
        if path is None:
            raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
        self._path = path
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self._dir = tempfile.TemporaryDirectory(prefix="resilient-conn-redis-")
        self._process: anyio.abc.Process | None = None
        self.starts = 0
        """How many times the server was started."""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start (or restart on the same port) and wait until it accepts connections.

        Raises:
            RuntimeError: Already running, or it exited or did not get ready in time.
        """
        if self.running:
            raise RuntimeError("redis-server is already running")
        args = [
            self._path,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        process = await anyio.open_process(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._process = process
        assert process.stdout is not None
        seen = b""
        try:
            with anyio.fail_after(self.start_timeout):
                async for chunk in process.stdout:
                    seen = (seen + chunk)[-4096:]
                    if b"Ready to accept connections" in seen:
                        break
                else:
                    raise RuntimeError(f"redis-server exited: {seen[-500:]!r}")
        except BaseException:
            await self.kill()
            raise
        self.starts += 1

    async def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it. A no-op when not running."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its sockets but answers nothing (a hung Redis)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.returncode is None:
            self.resume()  # a paused process must run to die cleanly
        await self.kill()
        self._dir.cleanup()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"
