"""ChaosProxy: a TCP proxy on 127.0.0.1 whose faults a test switches on and off at run time.

Put it between a client and a server (``client -> proxy -> upstream``) and make the network
misbehave: latency, a silent blackhole, resets, clean closes, refused dials, a flapping
upstream, a thin pipe, a cut after N bytes. ``heal()`` turns it back into a clean pipe.

"Upstream" is the client-to-server direction, "downstream" the server-to-client one.

The proxy models the network, so it waits in real time (``anyio.sleep``): neither
:func:`resilient_conn.set_testing` nor a :class:`~resilient_conn.testing.FakeClock` speeds
it up.

This module owns the proxy itself: listening, accepting, switching faults, the counters'
snapshots. The per-connection forwarding (dialing upstream, the pumps, faults applied to the
bytes) lives in :mod:`resilient_conn.testing._forward`.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import anyio
from anyio.abc import TaskGroup

from ..resilience.config import check_non_negative, check_positive
from ._forward import CHUNK_SIZE, QUEUE_CHUNKS, SIDES, Faults, Forwarder, Pair, Side
from ._net import LOOPBACK, check_loopback, check_port, close_writer, reset_writer

__all__ = ["CHUNK_SIZE", "QUEUE_CHUNKS", "ChaosProxy", "Direction", "ProxyStats"]

Direction = Literal["both", "upstream", "downstream"]


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A frozen snapshot of a :class:`ChaosProxy`'s counters.

    Attributes:
        connections_accepted: TCP connections the proxy accepted (including those dropped
            at once by ``accept_and_close``).
        connections_refused: Connections turned away by ``accept_and_close`` (accepted, then
            dropped). Dials made while ``refuse()`` is on never reach the proxy: the kernel
            refuses them, so they are not counted.
        connections_active: Connection pairs currently open.
        upstream_failures: Accepted connections whose dial to the upstream failed (the
            client's connection was then reset).
        bytes_upstream: Bytes forwarded client -> upstream.
        bytes_downstream: Bytes forwarded upstream -> client.
        bytes_discarded: Bytes swallowed by a blackhole.
        resets: Connections the proxy aborted with RST (``reset_all``, a reset cut).
        closes: Connections the proxy closed with FIN (``close_all``, a close cut).
        cuts: Connections ended by ``cut_after``.
        refusing: Whether ``refuse()`` is in force (no listening socket).
    """

    connections_accepted: int = 0
    connections_refused: int = 0
    connections_active: int = 0
    upstream_failures: int = 0
    bytes_upstream: int = 0
    bytes_downstream: int = 0
    bytes_discarded: int = 0
    resets: int = 0
    closes: int = 0
    cuts: int = 0
    refusing: bool = False


class ChaosProxy:
    """A fault-injecting TCP proxy listening on 127.0.0.1.

    Example::

        async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
            async with websockets.asyncio.client.connect(proxy.url_for("/")) as ws:
                proxy.blackhole()          # pings now go unanswered, no FIN, no RST
                ...
                proxy.heal()

    Every fault method is synchronous and takes effect at once for new and existing
    connections. Leaving ``async with`` aborts every connection, closes the listening socket
    and awaits every task the proxy started.

    Args:
        upstream_host: Host to forward to.
        upstream_port: Port to forward to.
        listen_host: Must be ``"127.0.0.1"``.
        listen_port: Port to listen on; 0 picks a free one (kept across ``refuse``/``heal``).
        connect_timeout: Seconds allowed for each dial to the upstream.
        rng: Random source for latency jitter (pass a seeded one for repeatable runs).

    Raises:
        ValueError: A bad host, port or timeout (the message names the parameter).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = LOOPBACK,
        listen_port: int = 0,
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(upstream_host, str) or not upstream_host:
            raise ValueError(f"upstream_host must be a non-empty str, got {upstream_host!r}")
        upstream = (upstream_host, check_port(upstream_port, "upstream_port", allow_zero=False))
        self._host = check_loopback(listen_host, "listen_host")
        self._port = check_port(listen_port, "listen_port")
        self._fwd = Forwarder(
            upstream,
            connect_timeout=check_positive(connect_timeout, "connect_timeout"),
            rng=rng or random.Random(),
        )
        self._drop_reset: bool | None = None  # accept_and_close mode: None = off
        self._tg: TaskGroup | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> ChaosProxy:
        if self._tg is not None:
            raise RuntimeError("ChaosProxy is already running")
        self._closing = False
        sock = self._bind()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self._start_serving(sock)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._closing = True
        self._close_listener()
        for pair in list(self._fwd.pairs):
            pair.tear_down(reset=False)
        tg, self._tg = self._tg, None
        tg.cancel_scope.cancel()
        return await tg.__aexit__(exc_type, exc, tb)

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._sock = sock
        return sock

    async def _start_serving(self, sock: socket.socket) -> None:
        # Runs without yielding until the server accepts: a refuse() in between is seen here.
        if sock is not self._sock or sock.fileno() == -1:
            return
        self._server = await asyncio.start_server(self._on_accept, sock=sock, limit=CHUNK_SIZE)

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        sock, self._sock = self._sock, None
        if server is not None:
            server.close()
        if sock is not None:
            sock.close()

    # --- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the proxy listens on (always ``"127.0.0.1"``)."""
        return self._host

    @property
    def port(self) -> int:
        """The port the proxy listens on (stable across ``refuse()``/``heal()``)."""
        return self._port

    def url_for(self, path: str = "/", scheme: str = "ws") -> str:
        """Return ``"<scheme>://127.0.0.1:<port><path>"`` for a client to dial through the proxy."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        return f"{scheme}://{self._host}:{self._port}{path}"

    # --- faults ---------------------------------------------------------------------------

    def _sides(self, direction: Direction) -> tuple[Side, ...]:
        if direction == "both":
            return SIDES
        if direction in SIDES:
            return (direction,)
        raise ValueError(f"direction must be 'both', 'upstream' or 'downstream', got {direction!r}")

    def _apply(self, direction: Direction, change: Callable[[Faults], None]) -> None:
        for side in self._sides(direction):
            change(self._fwd.faults[side])
        self._fwd.changed.notify()

    def latency(self, seconds: float, jitter: float = 0.0, direction: Direction = "both") -> None:
        """Delay every chunk by ``seconds`` plus a uniform extra in ``[0, jitter]``.

        Chunks never overtake each other; the new delay applies to chunks still queued too.
        At most :data:`QUEUE_CHUNKS` chunks are in flight per direction (then reading stops).

        Raises:
            ValueError: ``seconds`` or ``jitter`` negative or not finite, or a bad direction.
        """
        check_non_negative(seconds, "seconds")
        check_non_negative(jitter, "jitter")

        def change(f: Faults) -> None:
            f.latency, f.jitter = float(seconds), float(jitter)

        self._apply(direction, change)

    def blackhole(self, direction: Direction = "both") -> None:
        """Forward nothing and keep both sockets open: a silent peer (no FIN, no RST).

        Data arriving meanwhile is read and discarded (counted in ``bytes_discarded``); an
        EOF or reset from a side is held back until the blackhole is lifted.
        """

        def change(f: Faults) -> None:
            f.blackhole = True

        self._apply(direction, change)

    def bandwidth(self, bytes_per_second: float, direction: Direction = "both") -> None:
        """Limit throughput to ``bytes_per_second`` per connection and direction.

        Raises:
            ValueError: ``bytes_per_second`` not a finite number > 0, or a bad direction.
        """
        check_positive(bytes_per_second, "bytes_per_second")

        def change(f: Faults) -> None:
            f.bandwidth = float(bytes_per_second)

        self._apply(direction, change)

    def cut_after(self, nbytes: int, direction: Direction = "both", *, reset: bool = True) -> None:
        """Drop each connection once ``nbytes`` more bytes were forwarded in ``direction``.

        Bytes are counted per connection from this call (from the start for new
        connections); exactly ``nbytes`` bytes get through, then both sides are reset (RST),
        or closed with FIN when ``reset`` is False. With ``"both"``, each direction counts
        on its own.

        Raises:
            ValueError: ``nbytes`` not an int >= 0, or a bad direction.
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        sides = self._sides(direction)
        for pair in self._fwd.pairs:
            for side in sides:
                pair.pumps[side].cut_count = 0

        def change(f: Faults) -> None:
            f.cut_after, f.cut_reset = nbytes, reset

        self._apply(direction, change)

    def reset_all(self) -> int:
        """Abort every current connection with RST on both sides; return how many."""
        count = sum(pair.tear_down(reset=True) for pair in list(self._fwd.pairs))
        self._fwd.counters.resets += count
        self._fwd.stats_changed.notify()
        return count

    def close_all(self) -> int:
        """Close every current connection with FIN on both sides; return how many."""
        count = sum(pair.tear_down(reset=False) for pair in list(self._fwd.pairs))
        self._fwd.counters.closes += count
        self._fwd.stats_changed.notify()
        return count

    def refuse(self) -> None:
        """Refuse new connections: a dial fails with ConnectionRefusedError (ECONNREFUSED).

        The listening socket is closed (connections still waiting in its backlog are
        reset); existing connections are left alone. ``heal()`` listens again on the same
        port.
        """
        self._close_listener()
        self._fwd.stats_changed.notify()

    def accept_and_close(self, *, reset: bool = False) -> None:
        """Accept every new connection and drop it at once (a flapping upstream).

        The client sees its TCP dial succeed, then EOF (FIN), or a reset with ``reset=True``,
        before any byte arrives: a WebSocket handshake fails. Counted in
        ``connections_refused``.
        """
        self._drop_reset = reset

    def heal(self) -> None:
        """Clear every fault: listen again if refusing, forward everything again at full speed."""
        self._drop_reset = None
        for f in self._fwd.faults.values():
            f.latency = f.jitter = 0.0
            f.blackhole = False
            f.bandwidth = f.cut_after = None
        if self._sock is None and self._tg is not None and not self._closing:
            self._tg.start_soon(self._start_serving, self._bind())
        self._fwd.changed.notify()
        self._fwd.stats_changed.notify()

    # --- observing ------------------------------------------------------------------------

    @property
    def stats(self) -> ProxyStats:
        """A frozen snapshot of the counters."""
        c = self._fwd.counters
        return ProxyStats(
            connections_accepted=c.accepted,
            connections_refused=c.refused,
            connections_active=len(self._fwd.pairs),
            upstream_failures=c.upstream_failures,
            bytes_upstream=c.bytes["upstream"],
            bytes_downstream=c.bytes["downstream"],
            bytes_discarded=c.discarded,
            resets=c.resets,
            closes=c.closes,
            cuts=c.cuts,
            refusing=self._sock is None,
        )

    async def wait_until(
        self,
        predicate: Callable[[ProxyStats], bool],
        timeout: float | None = 5.0,
    ) -> ProxyStats:
        """Wait until ``predicate(stats)`` holds (woken on every counter change).

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        await self._fwd.stats_changed.wait_until(lambda: predicate(self.stats), timeout)
        return self.stats

    async def wait_for_connections(
        self,
        n: int,
        timeout: float | None = 5.0,
    ) -> ProxyStats:
        """Wait until at least ``n`` connections were accepted in total.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        return await self.wait_until(lambda s: s.connections_accepted >= n, timeout)

    async def wait_for_active(
        self,
        n: int,
        timeout: float | None = 5.0,
    ) -> ProxyStats:
        """Wait until exactly ``n`` connection pairs are open (e.g. 0 after a close).

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        return await self.wait_until(lambda s: s.connections_active == n, timeout)

    def __repr__(self) -> str:
        host, port = self._fwd.upstream
        return f"ChaosProxy({self._host}:{self._port} -> {host}:{port}, {self.stats})"

    # --- accepting ------------------------------------------------------------------------

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._fwd.counters.accepted += 1
        if self._closing or self._tg is None:
            reset_writer(writer)
        elif self._drop_reset is not None:
            self._fwd.counters.refused += 1
            (reset_writer if self._drop_reset else close_writer)(writer)
        else:
            pair = Pair(writer)
            self._fwd.pairs.add(pair)
            self._tg.start_soon(self._fwd.serve, pair, reader)
        self._fwd.stats_changed.notify()
