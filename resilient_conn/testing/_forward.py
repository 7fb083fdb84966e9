"""The per-connection machinery behind :class:`~resilient_conn.testing.ChaosProxy`.

A :class:`Forwarder` holds what every proxied connection shares: the faults in force per
direction, the counters, the open :class:`Pair` s and the notifiers that wake waiting writers
and ``wait_until`` callers. For each accepted client it dials the upstream and runs two pumps
(client -> upstream, upstream -> client); a pump reads chunks into a bounded queue
(backpressure) and writes them out under the faults: latency and jitter, blackhole, bandwidth,
``cut_after``.

The proxy (listening, accepting, switching faults, stats snapshots) is in :mod:`.chaos`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._net import Notifier, close_writer, reset_writer

__all__ = ["CHUNK_SIZE", "QUEUE_CHUNKS", "SIDES", "Counters", "Faults", "Forwarder", "Pair", "Side"]

Side = Literal["upstream", "downstream"]
"""One direction: ``"upstream"`` is client -> server, ``"downstream"`` server -> client."""
SIDES: tuple[Side, Side] = ("upstream", "downstream")

CHUNK_SIZE = 65536
"""Bytes read from a socket at a time."""
QUEUE_CHUNKS = 16
"""Chunks held per connection and direction between reading and writing (the in-flight
window under latency or a bandwidth limit); when full, the proxy stops reading (backpressure)."""
_BANDWIDTH_SLICES_PER_SECOND = 20
_CLOSE_GRACE = 0.5


@dataclass(slots=True)
class Faults:
    """The faults in force for one direction."""

    latency: float = 0.0
    jitter: float = 0.0
    blackhole: bool = False
    bandwidth: float | None = None
    cut_after: int | None = None
    cut_reset: bool = True


@dataclass(slots=True)
class Counters:
    """The proxy's running totals (``ProxyStats`` is their snapshot)."""

    accepted: int = 0
    refused: int = 0
    upstream_failures: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {"upstream": 0, "downstream": 0})
    discarded: int = 0
    resets: int = 0
    closes: int = 0
    cuts: int = 0


@dataclass(slots=True)
class Chunk:
    """Bytes read from one side, when they arrived, and their share of the jitter."""

    data: bytes
    arrived: float
    jitter_fraction: float


_EOF = "eof"
_RESET = "reset"
_Item = Chunk | str


class Pump:
    """Per connection and direction: what was forwarded since the last ``cut_after``."""

    __slots__ = ("cut_count", "next_free")

    def __init__(self) -> None:
        self.cut_count = 0
        self.next_free = 0.0


class Pair:
    """One proxied connection: the client side, the upstream side, and their scope.

    A pair is made in the listener's accept callback, a loop callback that runs outside any
    task: nothing there may ask anyio (or sniffio) which event loop is running, so the cancel
    scope is made later, by :meth:`Forwarder.serve` in the pair's own task.
    """

    __slots__ = ("client", "pumps", "scope", "torn", "upstream")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.scope: anyio.CancelScope | None = None  # made by serve(), inside a task
        self.torn = False
        self.pumps = {"upstream": Pump(), "downstream": Pump()}

    def writers(self) -> Iterator[asyncio.StreamWriter]:
        yield self.client
        if self.upstream is not None:
            yield self.upstream

    def tear_down(self, *, reset: bool) -> bool:
        """Reset (RST) or close (FIN) both sides now; False if already torn down."""
        if self.torn:
            return False
        self.torn = True
        for writer in self.writers():
            if reset:
                reset_writer(writer)
            else:
                close_writer(writer)
        if self.scope is not None:
            self.scope.cancel()
        return True


class Forwarder:
    """Serves proxied connection pairs under the faults in force, and counts what happens.

    Args:
        upstream: ``(host, port)`` to dial for each pair.
        connect_timeout: Seconds allowed for each dial.
        rng: Random source for latency jitter.
    """

    __slots__ = (
        "changed",
        "connect_timeout",
        "counters",
        "faults",
        "pairs",
        "rng",
        "stats_changed",
        "upstream",
    )

    def __init__(
        self, upstream: tuple[str, int], *, connect_timeout: float, rng: random.Random
    ) -> None:
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self.rng = rng
        self.faults = {"upstream": Faults(), "downstream": Faults()}
        self.counters = Counters()
        self.pairs: set[Pair] = set()
        self.changed = Notifier()  # faults changed: wake waiting writers
        self.stats_changed = Notifier()

    async def serve(self, pair: Pair, client_reader: asyncio.StreamReader) -> None:
        """Dial the upstream for ``pair``, then pump both directions until they end.

        A failed dial resets the client. Either way both sockets end up closed and the pair
        leaves :attr:`pairs`.
        """
        pair.scope = anyio.CancelScope()
        try:
            with pair.scope:
                if pair.torn:  # torn down before its task ran
                    return
                try:
                    with anyio.fail_after(self.connect_timeout):
                        up_reader, pair.upstream = await asyncio.open_connection(
                            *self.upstream, limit=CHUNK_SIZE
                        )
                except (OSError, TimeoutError):
                    self.counters.upstream_failures += 1
                    pair.tear_down(reset=True)
                    return
                async with anyio.create_task_group() as tg:
                    self._start_pump(tg, pair, "upstream", client_reader, pair.upstream)
                    self._start_pump(tg, pair, "downstream", up_reader, pair.client)
        finally:
            if pair.upstream is not None and pair.torn and not pair.upstream.is_closing():
                reset_writer(pair.upstream)  # torn down while dialing
            pair.torn = True
            with anyio.CancelScope(shield=True):
                for writer in pair.writers():
                    await _finish(writer)
            self.pairs.discard(pair)
            self.stats_changed.notify()

    def _start_pump(
        self,
        tg: TaskGroup,
        pair: Pair,
        side: Side,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        send, receive = anyio.create_memory_object_stream[_Item](QUEUE_CHUNKS)
        tg.start_soon(self._read_side, side, reader, send)
        tg.start_soon(self._write_side, pair, side, writer, receive)

    async def _read_side(
        self, side: Side, reader: asyncio.StreamReader, send: MemoryObjectSendStream[_Item]
    ) -> None:
        faults = self.faults[side]
        async with send:
            while True:
                try:
                    data = await reader.read(CHUNK_SIZE)
                except OSError:
                    await send.send(_RESET)
                    return
                if not data:
                    await send.send(_EOF)
                    return
                if faults.blackhole:
                    self._discard(len(data))
                    continue
                await send.send(Chunk(data, anyio.current_time(), self.rng.random()))

    async def _write_side(
        self,
        pair: Pair,
        side: Side,
        writer: asyncio.StreamWriter,
        receive: MemoryObjectReceiveStream[_Item],
    ) -> None:
        faults = self.faults[side]
        pump = pair.pumps[side]
        dead = False
        async with receive:
            async for item in receive:
                if isinstance(item, str):
                    while faults.blackhole:  # a blackhole loses FIN/RST until healed
                        await self.changed.wait()
                    if item == _RESET:
                        reset_writer(writer)
                    elif not dead and writer.can_write_eof():
                        with contextlib.suppress(OSError, RuntimeError):
                            writer.write_eof()
                    return
                if dead:
                    continue
                await self._wait_latency(faults, item)
                try:
                    await self._forward(pair, side, faults, pump, writer, item.data)
                except (OSError, RuntimeError):
                    dead = True  # that side is gone; its reader will report it

    def _discard(self, nbytes: int) -> None:
        self.counters.discarded += nbytes
        self.stats_changed.notify()

    async def _wait_latency(self, faults: Faults, item: Chunk) -> None:
        while True:
            due = item.arrived + faults.latency + item.jitter_fraction * faults.jitter
            remaining = due - anyio.current_time()
            if remaining <= 0:
                return
            with anyio.move_on_after(remaining):
                await self.changed.wait()

    async def _forward(
        self,
        pair: Pair,
        side: Side,
        faults: Faults,
        pump: Pump,
        writer: asyncio.StreamWriter,
        data: bytes,
    ) -> None:
        view = memoryview(data)
        while view:
            if faults.blackhole:
                self._discard(len(view))
                return
            piece = view
            if faults.bandwidth is not None:
                rate = faults.bandwidth
                piece = view[: max(1, int(rate / _BANDWIDTH_SLICES_PER_SECOND))]
                pump.next_free = max(pump.next_free, anyio.current_time()) + len(piece) / rate
                await anyio.sleep(pump.next_free - anyio.current_time())
            cut = faults.cut_after is not None and pump.cut_count + len(piece) >= faults.cut_after
            if cut:
                assert faults.cut_after is not None
                piece = piece[: faults.cut_after - pump.cut_count]
            if piece:
                writer.write(piece)
                await writer.drain()
                pump.cut_count += len(piece)
                self.counters.bytes[side] += len(piece)
                self.stats_changed.notify()
            if cut:
                if pair.tear_down(reset=faults.cut_reset):
                    self.counters.cuts += 1
                    if faults.cut_reset:
                        self.counters.resets += 1
                    else:
                        self.counters.closes += 1
                return
            view = view[len(piece) :]


async def _finish(writer: asyncio.StreamWriter) -> None:
    """Make sure ``writer``'s socket is closed: close, wait briefly for the flush, abort."""
    close_writer(writer)
    with anyio.move_on_after(_CLOSE_GRACE), contextlib.suppress(Exception):
        await writer.wait_closed()
    writer.transport.abort()  # no-op once closed; drops what a stuck peer never read
