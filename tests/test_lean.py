"""Idle connections hold no more than they need: the notifier's event, the outbound buffer's
deque and the dead-letter deque exist only once used, and behave the same."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util

import anyio
import pytest

from resilient_conn import ConnectionState, DeadLetterReason, ResilientConnection
from resilient_conn._core.notify import Deadline, Notifier
from resilient_conn.connection.buffer import OutboundBuffer
from resilient_conn.connection.metrics import ConnectionStats
from resilient_conn.testing import FakeClock, ScriptedServer

pytestmark = pytest.mark.anyio


async def test_notifier_holds_no_event_until_someone_waits() -> None:
    """notify() with nobody waiting allocates nothing; a waiter is woken by the next notify
    and re-checking a predicate works as before."""
    notifier = Notifier()
    notifier.notify()
    assert notifier._waiters is None
    state = {"n": 0}
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            await notifier.wait_until(lambda: state["n"] == 2, timeout=5)

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert notifier._waiters is not None
        state["n"] = 1
        notifier.notify()
        await anyio.wait_all_tasks_blocked()
        state["n"] = 2
        notifier.notify()
    assert notifier._waiters is None


async def test_a_cancelled_waiter_leaves_the_others_waiting_and_nothing_behind() -> None:
    """Cancelling one waiter (a timeout, a cancelled task) neither wakes nor fails the other
    waiters, and takes its future out of the notifier; the next notify wakes the rest."""
    notifier = Notifier()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await notifier.wait()
        woken.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 1)
        tg.start_soon(waiter, 2)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(TimeoutError):
            await notifier.wait_until(lambda: False, timeout=0.01)
        waiters = notifier._waiters
        assert waiters is not None
        assert len(waiters) == 2  # the timed-out waiter's future is gone
        tg.start_soon(waiter, 3)
        await anyio.wait_all_tasks_blocked()
        cancelled = asyncio.get_running_loop().create_task(notifier.wait())
        await anyio.wait_all_tasks_blocked()
        assert len(waiters) == 4
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert len(waiters) == 3
        assert woken == []
        notifier.notify()
    assert sorted(woken) == [1, 2, 3]
    assert notifier._waiters is None


@pytest.mark.parametrize("timeout", [0.2, 1.05])  # a timer of its own; a shared one
async def test_wait_connected_keeps_one_deadline_however_often_it_is_woken(
    timeout: float,
) -> None:
    """wait_connected(timeout) raises TimeoutError once ``timeout`` has passed in all (never
    before), though the connection's state keeps changing meanwhile (each change wakes it to
    re-check; none restarts the clock), and leaves no waiter behind."""
    conn = ResilientConnection("ws://127.0.0.1:9/")  # never started: no network
    loop = asyncio.get_running_loop()
    wakes = 0

    async def churn() -> None:
        nonlocal wakes
        while True:
            await anyio.sleep(0.002)
            conn._changed.notify()
            wakes += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(churn)
        started = loop.time()
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await conn.wait_connected(timeout)
        assert loop.time() >= started + timeout
        tg.cancel_scope.cancel()
    assert wakes >= 5
    assert conn._changed._waiters is None
    with pytest.raises(TimeoutError):
        await conn.wait_connected(0)


async def test_deadlines_of_a_second_or_more_share_their_timers() -> None:
    """Two hundred waits with a 5 s deadline started together hold at most two loop timers
    (due at the next tenth of a second), not two hundred; a wait that ends takes its deadline
    out, and once all have ended no timer is left pending and none fires."""
    from resilient_conn._core import notify

    loop = asyncio.get_running_loop()
    notifier = Notifier()
    deadlines = [Deadline(notifier, 5.0) for _ in range(200)]
    groups = notify._GROUPS[loop]
    assert 1 <= len(groups) <= 2
    assert sum(len(g.members) for g in groups.values()) == 200
    handles = [g.handle for g in groups.values()]
    for deadline in deadlines:
        deadline.cancel()
    assert groups == {}
    assert all(h is not None and h.cancelled() for h in handles)
    assert not any(d.passed for d in deadlines)
    short = Deadline(notifier, 0.01)  # under a second: a timer of its own, exact
    with anyio.fail_after(5):
        await notifier.wait()
    assert short.passed
    assert groups == {}


def test_outbound_buffer_makes_its_deque_on_first_append_and_drops_it_when_drained() -> None:
    """An empty buffer holds no deque; FIFO order and byte accounting are unchanged."""
    buf = OutboundBuffer(10, 1000)
    assert buf._items == ()
    assert len(buf) == 0
    assert not buf
    assert buf.make_room(5) == []
    assert buf.expire(100.0, 1.0) == []
    buf.append("a", 1, 0.0)
    buf.appendleft("b", 2, 0.0)
    assert [m for m, _, _ in buf.drain()] == ["b", "a"]
    assert buf._items == ()
    assert buf.nbytes == 0
    buf.append("c", 1, 0.0)
    assert buf.popleft()[0] == "c"


def test_dead_letters_are_made_on_first_use_and_bounded() -> None:
    """A connection that never dead-letters holds no deque; once used it keeps at most
    dead_letter_capacity and conn.dead_letters is that deque."""
    conn = ResilientConnection("ws://127.0.0.1:1/", dead_letter_capacity=2)
    outbox = conn._outbox
    assert outbox._dead is None
    assert list(conn.dead_letters) == []
    for i in range(3):
        outbox.dead_letter(f"m{i}", DeadLetterReason.CLOSED)
    assert [d.message for d in conn.dead_letters] == ["m1", "m2"]
    assert conn.dead_letters is outbox.dead_letters


async def test_a_connection_that_never_buffers_makes_no_outbox(transport: str) -> None:
    """A consumer that only receives holds no outbox (buffer, overflow policy, dead letters):
    not while connecting, connected, reporting health, reconnecting or closing. The first send
    while down makes it; that message is buffered, then delivered in order after the next
    connect, and reported in health while it waits."""
    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, transport=transport, stable_after=0.2)
        async with conn:
            await conn.wait_connected(5)
            snap = conn.snapshot()
            assert (snap.buffered, snap.buffered_bytes, conn.buffered) == (0, 0, 0)
            generation = conn.generation
            await server.close_all(1001, "bye")
            await conn._changed.wait_until(
                lambda: conn.generation > generation and conn._live, timeout=10
            )
            assert conn._box is None
            await server.stop()
            await conn._changed.wait_until(lambda: not conn.is_connected, timeout=10)
            await conn.send("first")
            await conn.send("second")
            assert conn._box is not None
            assert conn.buffered == 2
            assert conn.snapshot().buffered_bytes == len("first") + len("second")
            await server.start()
            await server.wait_for_messages(2, timeout=10)
            assert server.messages[-2:] == ["first", "second"]
        assert conn.state is ConnectionState.CLOSED
        assert list(conn.dead_letters) == []

    idle = ResilientConnection("ws://127.0.0.1:1/")
    await idle.aclose()  # closing one that never started or buffered makes none either
    assert idle._box is None


def test_counter_dicts_are_made_on_first_use_and_read_as_before() -> None:
    """ConnectionStats holds no failures / dead_letters dict until one is counted or read;
    counts() (what health snapshots use) copies them without making them; reading an unused
    one gives an empty dict, which then counts as usual; other attributes still fail."""
    stats = ConnectionStats()
    assert stats.counts() == ({}, {})
    assert "failures={}" in repr(stats)
    assert "dead_letters={}" in repr(stats)
    assert (stats._failures, stats._dead_letters) == (None, None)  # nor by counts() or repr
    stats.count_failure("refused")
    stats.count_failure("refused")
    assert stats.failures == {"refused": 2}
    assert stats.counts() == ({"refused": 2}, {})
    assert stats._dead_letters is None
    assert stats.dead_letters == {}  # read: made now, and it is the one counted into
    stats.count_dead_letter("closed")
    assert stats.dead_letters == {"closed": 1}
    assert stats.counts()[1] is not stats.dead_letters  # a copy
    stats.failures = {"lost": 1}  # still assignable, as a plain field was
    assert stats.counts()[0] == {"lost": 1}
    with pytest.raises(AttributeError, match="nope"):
        stats.nope  # type: ignore[attr-defined]  # noqa: B018
    conn = ResilientConnection("ws://127.0.0.1:1/")
    snap = conn.snapshot()
    assert (snap.stats["failures"], snap.stats["dead_letters"], snap.dead_letters) == ({}, {}, 0)
    assert conn.stats.counts() == ({}, {})
    assert conn.stats._failures is None


def test_counters_stay_on_the_fast_attribute_path() -> None:
    """ConnectionStats keeps CPython's generic attribute access, which the interpreter
    specialises: a class with __getattr__ (or its own __getattribute__) sends every counter
    add on the message path through a Python-level hook (measured: about 2 % of the picows
    callback style's throughput). So laziness lives in properties, not in a hook."""
    assert not hasattr(ConnectionStats, "__getattr__")
    assert ConnectionStats.__getattribute__ is object.__getattribute__
    assert ConnectionStats.__setattr__ is object.__setattr__
    stats = ConnectionStats()
    stats.messages_in += 1
    stats.bytes_out += 64
    assert (stats.messages_in, stats.bytes_out) == (1, 64)


def test_debug_enabled_follows_the_structlog_level() -> None:
    """debug_enabled() follows where events go: the stdlib logger's level while structlog is
    unconfigured, the application's structlog filter once configured; a logger that cannot
    tell counts as enabled."""
    import logging

    import structlog

    from resilient_conn._core.log import debug_enabled, get_logger

    was_configured, old = structlog.is_configured(), structlog.get_config()
    stdlib = logging.getLogger("resilient_conn")
    level = stdlib.level
    try:
        structlog.reset_defaults()  # unconfigured: events go to the stdlib logger
        stdlib.setLevel(logging.DEBUG)
        assert debug_enabled(get_logger(connection="x"))
        stdlib.setLevel(logging.INFO)
        assert not debug_enabled(get_logger(connection="x"))
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        assert not debug_enabled(get_logger(connection="x"))
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
        assert debug_enabled(get_logger(connection="x"))
    finally:
        stdlib.setLevel(level)
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**old)
    assert debug_enabled(object())


def _library_tasks() -> list[str]:
    """Names of the coroutines of every pending task the library (not its test servers) runs."""
    names = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = "" if code is None else code.co_filename
        ours = "/resilient_conn/" in filename and "/resilient_conn/testing/" not in filename
        if ours and not task.done():
            names.append(code.co_name)  # type: ignore[union-attr]
    return sorted(names)


@pytest.mark.parametrize(
    "transport",
    [
        "websockets",
        pytest.param(
            "picows",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("picows") is None, reason="picows not installed"
            ),
        ),
    ],
)
async def test_an_idle_connected_connection_holds_no_task(transport: str) -> None:
    """Three idle connected connections with keepalive on hold no task at all: keepalive and
    the flap guard's stable timer are loop timers, on_open + flush is no task when there is
    nothing to flush, no task group lives per transport, and the supervisor parks on its
    transport's end (a callback, not a suspended task). Checked while the stable timer is
    pending and again after it fired (the connection proved stable); each connection still
    reconnects when its server goes away, then parks again."""
    async with ScriptedServer() as server:
        conns = [
            ResilientConnection(
                server.url, transport=transport, ping_interval=20, stable_after=0.3
            )
            for _ in range(3)
        ]
        async with contextlib.AsyncExitStack() as stack:
            for conn in conns:
                await stack.enter_async_context(conn)
            for conn in conns:
                await conn.wait_connected(5)
            await anyio.wait_all_tasks_blocked()
            assert not any(conn._stable for conn in conns)  # the stable timer is pending
            assert _library_tasks() == []
            assert all(conn._parked and conn._supervisor is None for conn in conns)
            for conn in conns:
                await conn._changed.wait_until(lambda c=conn: c._stable, timeout=10)
            await anyio.wait_all_tasks_blocked()
            assert _library_tasks() == []
            assert all(conn.state is ConnectionState.CONNECTED for conn in conns)
            generations = [conn.generation for conn in conns]
            await server.close_all(1001, "bye")
            for conn, generation in zip(conns, generations, strict=True):
                await conn._changed.wait_until(
                    lambda c=conn, g=generation: c.generation > g and c._live, timeout=10
                )
            await anyio.wait_all_tasks_blocked()
            assert _library_tasks() == []


async def test_a_supervisor_with_a_helper_running_awaits_the_transports_future() -> None:
    """While a helper task of the supervisor runs beside the watch (here the stable timer,
    a task on a fake clock), the supervisor does not park: it is suspended in one coroutine
    frame (the loop itself) awaiting the future its transport's serve() returned, with no
    coroutine of serve()'s own and no per-transport watch frame. The connection still
    notices the server going away."""
    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, ping_interval=20, clock=FakeClock())
        async with conn:
            await conn.wait_connected(5)
            await anyio.wait_all_tasks_blocked()
            assert not conn._parked
            assert conn._supervisor is not None
            coro = conn._supervisor.get_coro()
            assert coro.cr_code.co_name == "_supervise"  # type: ignore[union-attr]
            assert type(coro.cr_await).__name__ == "FutureIter"  # type: ignore[union-attr]
            ws = conn._ws
            served = ws._served  # type: ignore[attr-defined]
            assert isinstance(served, asyncio.Future)
            assert not served.done()
            assert "step" not in coro.cr_frame.f_locals  # type: ignore[union-attr]
            await server.close_all(1001, "bye")
            await conn._changed.wait_until(lambda: not conn.is_connected, timeout=10)
            assert served.done()


async def test_connections_with_equal_settings_share_their_immutable_parts() -> None:
    """Connections with equal settings share one ConnectionOptions, one DialOptions (with its
    adapter) and, per name, one bound logger; a different setting or a pass-through argument
    other than compression gets its own, and each connection still runs with its own values."""
    a = ResilientConnection("ws://127.0.0.1:1/", compression=None)
    b = ResilientConnection("ws://127.0.0.1:1/", compression=None)
    assert a.options is b.options
    assert a._dial_options is b._dial_options
    assert a._log is b._log
    other = ResilientConnection("ws://127.0.0.1:1/", compression=None, ping_interval=5)
    assert other.options is not a.options
    assert other.options.ping_interval == 5
    assert a.options.ping_interval == 20
    deflate = ResilientConnection("ws://127.0.0.1:1/", compression="deflate")
    assert deflate._dial_options is not a._dial_options
    assert deflate._dial_options.extra["compression"] == "deflate"
    agent = ResilientConnection("ws://127.0.0.1:1/", compression=None, user_agent_header="x/1")
    again = ResilientConnection("ws://127.0.0.1:1/", compression=None, user_agent_header="x/1")
    assert agent._dial_options is not again._dial_options
    assert agent._dial_options.extra["user_agent_header"] == "x/1"
    named = ResilientConnection("ws://127.0.0.1:1/", name="feed")
    assert named._log is not a._log
    assert named.name == "feed"
    assert a.name == "127.0.0.1"


async def test_connection_fields_are_slots_yet_attributes_can_still_be_added() -> None:
    """The connection's fields live in slots (no per-instance dict is made for them), while a
    subclass or a test can still set attributes of its own (a dict made on first use)."""

    class Mine(ResilientConnection):
        pass

    conn = ResilientConnection("ws://127.0.0.1:1/")
    assert conn.__dict__ == {}  # every field is a slot
    conn.extra_note = "mine"  # type: ignore[attr-defined]
    assert conn.extra_note == "mine"  # type: ignore[attr-defined]
    sub = Mine("ws://127.0.0.1:1/")
    sub.more = 1  # type: ignore[attr-defined]
    assert sub.state is ConnectionState.IDLE
    assert sub.more == 1


def test_hook_set_copies_on_change() -> None:
    """A hook set without callbacks shares the empty tuple; a callback that unsubscribes
    during an emit does not stop the others from getting that event, and a callback added
    twice is removed one registration at a time."""
    from resilient_conn._core.hooks import HookSet

    hooks: HookSet[int] = HookSet("test")
    assert hooks._callbacks == ()
    assert hooks._tasks is None
    seen: list[tuple[str, int]] = []
    unsubscribe_first = hooks.add(lambda e: (seen.append(("first", e)), unsubscribe_first()))
    hooks.add(lambda e: seen.append(("second", e)))
    hooks.emit(1)
    hooks.emit(2)
    assert seen == [("first", 1), ("second", 1), ("second", 2)]

    def twice(e: int) -> None:
        seen.append(("twice", e))

    seen.clear()
    drop = hooks.add(twice)
    hooks.add(twice)
    drop()
    hooks.emit(3)
    assert seen == [("second", 3), ("twice", 3)]
    drop()
    drop()  # idempotent once none is left
    hooks.emit(4)
    assert seen[-1] == ("second", 4)
    assert hooks.pending == 0


async def test_a_close_while_the_supervisor_waits_for_its_helpers_lets_them_finish() -> None:
    """Without a coordinator the supervisor holds no cancel scope: aclose() stops it with
    Task.cancel(), but never while it waits (shielded) for the helper tasks of a transport that
    just ended. A close arriving then is left to the supervisor: it lets on_open finish, returns
    by itself (not cancelled) at its next decision without dialing again, and the connection
    ends CLOSED."""
    release = anyio.Event()
    entered = anyio.Event()

    async def on_open(_conn: ResilientConnection) -> None:
        entered.set()
        with anyio.CancelScope(shield=True):  # outlives the end of its transport
            await release.wait()

    async with ScriptedServer() as server:
        conn = ResilientConnection(server.url, on_open=on_open, drain_timeout=10)
        assert conn._scope is None
        conn.start()
        await entered.wait()
        await server.stop()  # the transport ends while on_open still runs
        with anyio.fail_after(5):
            while not conn._holding:
                await anyio.wait_all_tasks_blocked()
        supervisor = conn._supervisor
        assert supervisor is not None
        closer = asyncio.ensure_future(conn.aclose())
        await anyio.wait_all_tasks_blocked()
        assert not closer.done()
        assert conn._holding  # not cancelled: still waiting for on_open
        release.set()
        with anyio.fail_after(10):
            await closer
        assert conn.state is ConnectionState.CLOSED
        assert supervisor.done()
        assert not supervisor.cancelled()
        assert len(server.connections) == 1
