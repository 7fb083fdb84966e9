"""Idle connections hold no more than they need: the notifier's event, the outbound buffer's
deque and the dead-letter deque exist only once used, and behave the same."""

from __future__ import annotations

import anyio
import pytest

from resilient_conn import DeadLetterReason, ResilientConnection
from resilient_conn._core.notify import Notifier
from resilient_conn.connection.buffer import OutboundBuffer

pytestmark = pytest.mark.anyio


async def test_notifier_holds_no_event_until_someone_waits() -> None:
    """notify() with nobody waiting allocates nothing; a waiter is woken by the next notify
    and re-checking a predicate works as before."""
    notifier = Notifier()
    notifier.notify()
    assert notifier._event is None
    state = {"n": 0}
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            await notifier.wait_until(lambda: state["n"] == 2, timeout=5)

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert notifier._event is not None
        state["n"] = 1
        notifier.notify()
        await anyio.wait_all_tasks_blocked()
        state["n"] = 2
        notifier.notify()
    assert notifier._event is None


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
