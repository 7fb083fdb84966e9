"""Going through an HTTP proxy: what websockets reads from the environment, and how to override it.

ResilientConnection dials with ``websockets.asyncio.client.connect``, whose ``proxy`` argument
defaults to ``True``: "use the system's proxy settings". On Linux and macOS those come from the
environment, read by ``urllib.request.getproxies()`` on every dial:

- ``wss://`` uses, in order, ``wss_proxy``, ``socks_proxy``/``all_proxy`` (SOCKS, needs
  ``pip install python-socks``), ``https_proxy``;
- ``ws://`` uses ``ws_proxy``, ``socks_proxy``/``all_proxy``, ``https_proxy``, ``http_proxy``
  (so a plain ``ws://`` URL goes through ``HTTPS_PROXY`` if one is set);
- ``no_proxy`` (host names, suffixes, ``*``) bypasses the proxy.

Upper- and lower-case names both work. An HTTP proxy is asked to ``CONNECT host:port`` and
then carries the TLS/WebSocket bytes. Pass ``proxy="http://host:port"`` to choose one in code,
``proxy=None`` to ignore the environment. The proxy's failures (refused, 407, timeouts) are
failures of the dial like any other: retried with backoff, counted by the breaker.

Run: ``python examples/http_proxy.py`` (a tiny CONNECT proxy and a server on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import os

import anyio

from resilient_conn import ResilientConnection
from resilient_conn.testing import ScriptedServer


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 that counts the tunnels it opened."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            if up_writer is not None:
                up_writer.close()
                self._writers.discard(up_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main() -> dict[str, int]:
    """Connect through the proxy from the environment, then from ``proxy=``; count tunnels."""
    async with ScriptedServer() as server, ConnectProxy() as proxy:
        proxy_url = f"http://127.0.0.1:{proxy.port}"

        names = [f"{p}_proxy" for p in ("http", "https", "ws", "wss", "all", "socks", "no")]
        names += [n.upper() for n in names]
        saved = {k: os.environ.get(k) for k in names}
        for name in names:  # only ours: an https_proxy would win over http_proxy for ws://
            os.environ.pop(name, None)
        os.environ["http_proxy"] = proxy_url  # what an operator would export
        try:
            async with ResilientConnection(server.url) as conn:
                await conn.send("via the environment")
                print(f"environment: echoed {await conn.recv()!r}")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        from_env = len(proxy.tunnels)

        async with ResilientConnection(server.url, proxy=proxy_url) as conn:
            await conn.send("via proxy=")
            print(f"proxy= argument: echoed {await conn.recv()!r}")
        explicit = len(proxy.tunnels) - from_env

        async with ResilientConnection(server.url, proxy=None) as conn:
            await conn.send("direct")
            await conn.recv()
        direct = len(proxy.tunnels) - from_env - explicit
        print(f"tunnels: environment {from_env}, proxy= {explicit}, proxy=None {direct}")
    return {"environment": from_env, "explicit": explicit, "direct": direct}


if __name__ == "__main__":
    anyio.run(main)
