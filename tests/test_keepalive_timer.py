"""The timer-driven Keepalive on both adapters: round trips reported, a silent peer declared
dead once, nothing running between pings or after the transport ends or it is stopped."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from resilient_conn.adapters.base import DialOptions, Transport, get_adapter
from resilient_conn.adapters.keepalive import Keepalive
from resilient_conn.testing import ChaosProxy, ScriptedServer

pytestmark = pytest.mark.anyio
OPTIONS = DialOptions(open_timeout=2, close_timeout=1, max_size=1 << 20, max_queue=16)


async def _open(name: str, url: str) -> Transport:
    return await get_adapter(name, {"compression": None}).connect(url, None, OPTIONS)


def _keepalive_tasks() -> set[asyncio.Task[object]]:
    return {
        t
        for t in asyncio.all_tasks()
        if t.get_name() == "resilient_conn.keepalive_ping" and not t.done()
    }


async def test_round_trips_are_reported_and_no_task_waits_between_pings(transport: str) -> None:
    """Three pongs give three round trips; after each, the next ping is a timer, not a task."""
    rtts: list[float] = []
    alive = asyncio.Event()
    dead: list[str] = []
    async with ScriptedServer() as server:
        ws = await _open(transport, server.url)

        def on_alive(rtt: float) -> None:
            rtts.append(rtt)
            alive.set()

        ka = Keepalive(ws, 0.01, 1.0, on_alive=on_alive, on_dead=lambda r, e: dead.append(r))
        ka.start()
        with anyio.fail_after(5):
            while len(rtts) < 3:
                alive.clear()
                await alive.wait()
                await asyncio.sleep(0)  # let the finished round trip's task end
                assert _keepalive_tasks() == set()
        await ka.aclose()
        assert not ka.running
        await ws.close()
    assert dead == []
    assert all(rtt >= 0 for rtt in rtts)


async def test_a_silent_peer_is_declared_dead_once(transport: str) -> None:
    """With the peer blackholed, on_dead("ping_timeout") is called exactly once and the
    keepalive stops by itself."""
    dead: list[tuple[str, BaseException]] = []
    got_dead = asyncio.Event()
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        ws = await _open(transport, proxy.url_for("/"))
        proxy.blackhole()

        def on_dead(reason: str, error: BaseException) -> None:
            dead.append((reason, error))
            got_dead.set()
            ws.abort()

        ka = Keepalive(ws, 0.01, 0.2, on_alive=lambda rtt: None, on_dead=on_dead)
        ka.start()
        with anyio.fail_after(5):
            await got_dead.wait()
            await ws.wait_closed()
        assert not ka.running
        assert [(r, type(e)) for r, e in dead] == [("ping_timeout", TimeoutError)]


async def test_a_transport_that_closes_ends_the_keepalive_quietly(transport: str) -> None:
    """When the timer fires on a transport the server has closed, the ping fails quietly:
    no on_dead, no new timer, no task left."""
    dead: list[str] = []
    async with ScriptedServer() as server:
        ws = await _open(transport, server.url)
        ka = Keepalive(
            ws, 60.0, 1.0, on_alive=lambda rtt: None, on_dead=lambda r, e: dead.append(r)
        )
        ka.start()
        await server.close_all(1001, "bye")
        with anyio.fail_after(5):
            await ws.wait_closed()
        assert ka._handle is not None
        ka._handle.cancel()
        ka._fire()  # what the timer would do 60 s from now
        task = ka._task
        assert task is not None
        await task
        assert not ka.running
        assert dead == []


async def test_aclose_with_a_ping_in_flight_leaves_no_task(transport: str) -> None:
    """Stopping while a ping waits for its pong (peer blackholed) cancels and awaits it."""
    async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
        ws = await _open(transport, proxy.url_for("/"))
        proxy.blackhole()
        pinged = asyncio.Event()

        class Spy:
            """The transport, with an event set when a ping has been sent."""

            is_open = True

            async def ping(self) -> object:
                pong = await ws.ping()
                pinged.set()
                return pong

        spy: Transport = Spy()  # type: ignore[assignment]
        ka = Keepalive(spy, 0.001, 30.0, on_alive=lambda rtt: None, on_dead=lambda r, e: None)
        ka.start()
        with anyio.fail_after(5):
            await pinged.wait()
        assert len(_keepalive_tasks()) == 1  # waiting for a pong that never comes
        await ka.aclose()
        assert _keepalive_tasks() == set()
        ws.abort()
        await ws.wait_closed()


def test_bad_interval_or_timeout_is_refused() -> None:
    """A zero or negative interval/timeout is a ValueError at construction."""
    with pytest.raises(ValueError, match="interval and timeout"):
        Keepalive(None, 0, 1, on_alive=lambda r: None, on_dead=lambda r, e: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval and timeout"):
        Keepalive(None, 1, -1, on_alive=lambda r: None, on_dead=lambda r, e: None)  # type: ignore[arg-type]
