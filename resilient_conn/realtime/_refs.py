"""Refs and reply matching, without I/O: the per-socket ref counter and the reply table.

Re-exported by :mod:`resilient_conn.realtime.protocol`; see ``PHOENIX-PROTOCOL.md`` section 3.
Nothing here reads a clock: deadlines are passed in as numbers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["RefCounter", "ReplyTable"]


class RefCounter:
    """The per-socket ref counter: ``"1"``, ``"2"``, ... shared by heartbeats, joins, pushes.

    It is never reset on reconnect, so a late reply from an old transport can never match a
    push made on the new one.
    """

    __slots__ = ("_n",)

    def __init__(self, start: int = 0) -> None:
        self._n = start

    def next(self) -> str:
        """Return a fresh ref."""
        self._n += 1
        return str(self._n)

    @property
    def last(self) -> str | None:
        """The most recent ref handed out, or ``None``."""
        return str(self._n) if self._n else None


T = TypeVar("T")


class ReplyTable(Generic[T]):
    """Pending pushes keyed by ref, each with a deadline (pure; ``now`` is passed in).

    Items are whatever the caller wants to resolve (a future, a push record). ``pop`` removes
    an item when its reply arrives; ``expire`` removes and returns the items whose deadline
    has passed, oldest deadline first.
    """

    __slots__ = ("_heap", "_items")

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, T]] = {}
        self._heap: list[tuple[float, str]] = []

    def add(self, ref: str, item: T, deadline: float) -> None:
        """Register ``item`` under ``ref``, to expire at ``deadline``.

        Raises:
            ValueError: ``ref`` is already pending.
        """
        if ref in self._items:
            raise ValueError(f"ref {ref!r} is already pending")
        self._items[ref] = (deadline, item)
        heapq.heappush(self._heap, (deadline, ref))

    def pop(self, ref: str | None) -> T | None:
        """Remove and return the item pending under ``ref`` (``None`` if there is none)."""
        if ref is None:
            return None
        entry = self._items.pop(ref, None)
        return None if entry is None else entry[1]

    def expire(self, now: float) -> list[T]:
        """Remove and return every item whose deadline is ``<= now``."""
        out: list[T] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, ref = heapq.heappop(self._heap)
            entry = self._items.get(ref)
            if entry is not None and entry[0] == deadline:
                del self._items[ref]
                out.append(entry[1])
        self._compact()
        return out

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or ``None`` when nothing is pending."""
        while self._heap:
            deadline, ref = self._heap[0]
            entry = self._items.get(ref)
            if entry is not None and entry[0] == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def drain(self) -> list[T]:
        """Remove and return every pending item."""
        items = [item for _, item in self._items.values()]
        self._items.clear()
        self._heap.clear()
        return items

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._items) + 16:
            self._heap = [(d, r) for r, (d, _) in self._items.items()]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, ref: object) -> bool:
        return ref in self._items

    def __iter__(self) -> Iterator[T]:
        return iter([item for _, item in self._items.values()])
