"""The outbound buffer: bounded, FIFO, nothing lost without a record (pure, no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_conn.connection.buffer import OutboundBuffer, message_size

messages = st.one_of(st.text(max_size=20), st.binary(max_size=20))


@given(
    st.lists(messages, max_size=60),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=80),
)
def test_drop_oldest_keeps_bounds_and_order(
    items: list[str | bytes], max_messages: int, max_bytes: int
) -> None:
    """With make_room before each append, the buffer never exceeds its count or byte bounds,
    keeps FIFO order, and every message is either still buffered or was returned as evicted."""
    buf = OutboundBuffer(max_messages, max_bytes)
    evicted: list[str | bytes] = []
    rejected: list[str | bytes] = []
    for now, item in enumerate(items):
        size = message_size(item)
        if not buf.can_ever_fit(size):
            rejected.append(item)
            continue
        evicted.extend(m for m, _, _ in buf.make_room(size))
        buf.append(item, size, float(now))
        assert len(buf) <= max_messages
        assert buf.nbytes <= max_bytes
    kept = [m for m, _, _ in buf.drain()]
    accepted = [m for m in items if message_size(m) <= max_bytes]
    assert evicted + kept == accepted
    assert len(rejected) + len(accepted) == len(items)
    assert buf.nbytes == 0


def test_expire_removes_only_old_messages_at_the_front() -> None:
    """expire() returns the messages older than the TTL, oldest first, and keeps the rest."""
    buf = OutboundBuffer(10, 1000)
    for t, m in enumerate(["a", "b", "c"]):
        buf.append(m, 1, float(t))
    expired = buf.expire(now=2.5, ttl=1.0)
    assert [m for m, _, _ in expired] == ["a", "b"]
    assert [m for m, _, _ in buf.drain()] == ["c"]


def test_appendleft_puts_a_message_back_first() -> None:
    """A message a flush could not send goes back to the front, ahead of newer ones."""
    buf = OutboundBuffer(10, 1000)
    buf.append("b", 1, 0.0)
    buf.appendleft("a", 1, 0.0)
    assert buf.peek()[0] == "a"
    assert buf.nbytes == 2


def test_message_size_counts_utf8_bytes() -> None:
    """Text counts as its UTF-8 size, so byte limits hold for non-ASCII text too."""
    assert message_size("abc") == 3
    assert message_size("é") == 2
    assert message_size(b"\x00\x01") == 2


@pytest.mark.parametrize(("count", "nbytes"), [(0, 10), (10, 0)])
def test_bad_capacity_is_rejected(count: int, nbytes: int) -> None:
    """A capacity of zero messages or zero bytes is an error, not a buffer that drops all."""
    with pytest.raises(ValueError, match="must be >= 1"):
        OutboundBuffer(count, nbytes)
