"""Notifier: event-driven waits on some state, woken whenever its owner changes it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections.abc import Callable

import anyio

__all__ = ["Deadline", "Notifier"]


class Notifier:
    """Lets tasks wait until a condition on some state holds, woken on every change.

    The owner calls :meth:`notify` whenever the watched state changes; waiters re-check
    their predicate then. No polling, no sleeping. Each waiter parks on a future of its own,
    held in a list that exists only while someone waits: an idle owner holds nothing and a
    notify with no waiter allocates nothing. (A future per waiter, not one shared: cancelling
    a task cancels the future it waits on, which must not wake, or fail, the others.)
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    def notify(self) -> None:
        """Wake every waiter so it re-checks its condition.

        Callable from anywhere on the loop's thread, in a task or a loop callback, and
        outside any loop when nobody waits.
        """
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    async def wait(self) -> None:
        """Wait for the next :meth:`notify`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = [future]
        else:
            waiters.append(future)
        try:
            await future
        finally:
            # cancelled: leave nothing behind (unless a notify took the list meanwhile)
            waiters = self._waiters
            if waiters is not None and (future.cancelled() or not future.done()):
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    self._waiters = None

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float | None,
    ) -> None:
        """Return once ``predicate()`` is true.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        with anyio.fail_after(timeout):
            while not predicate():
                await self.wait()


class Deadline:
    """One loop timer for a whole wait on a :class:`Notifier`, however often it wakes.

    Once ``timeout`` seconds have passed, :attr:`passed` is True and the notifier is notified
    (its waiters re-check, the one with this deadline sees it passed). Call :meth:`cancel`
    when the wait ends. Deadlines of a second or more share timers: each is due at the next
    tenth of a second on the loop's clock at or after ``timeout`` (never early, at most 0.1 s
    late), so a thousand connections waiting at once hold a handful of timer handles, not a
    thousand (each a handle and a context the loop keeps until its time, cancelled or not).
    """

    __slots__ = ("_group", "_notifier", "passed")

    def __init__(self, notifier: Notifier, timeout: float) -> None:
        self.passed = False
        self._notifier = notifier
        loop = asyncio.get_running_loop()
        due = loop.time() + timeout
        groups = _groups(loop) if timeout >= _SHARED_FROM else None
        if groups is None:
            self._group: _Group | asyncio.TimerHandle = loop.call_at(due, self)
            return
        when = math.ceil(due / _GRAIN) * _GRAIN
        group = groups.get(when)
        if group is None:
            group = groups[when] = _Group(groups, when)
            group.handle = loop.call_at(when, group)
        group.members.append(self)
        self._group = group

    def __call__(self) -> None:  # its own timer's callback (a short timeout)
        self.passed = True
        self._notifier.notify()

    def cancel(self) -> None:
        """Stop waiting for it (the wait is over): its timer, or its place in a shared one."""
        group = self._group
        if isinstance(group, asyncio.TimerHandle):
            group.cancel()
        else:
            group.leave(self)


_SHARED_FROM = 1.0  # timeouts from a second up share timers ...
_GRAIN = 0.1  # ... due at the next tenth of a second
_GROUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Group]] = (
    weakref.WeakKeyDictionary()
)


def _groups(loop: asyncio.AbstractEventLoop) -> dict[float, _Group] | None:
    """The loop's shared deadlines by due time; None for a loop that takes no weak reference."""
    try:
        groups = _GROUPS.get(loop)
        if groups is None:
            groups = _GROUPS[loop] = {}
    except TypeError:
        return None
    return groups


class _Group:
    """The deadlines due at one instant: one timer fires them all."""

    __slots__ = ("groups", "handle", "members", "when")

    def __init__(self, groups: dict[float, _Group], when: float) -> None:
        self.groups = groups
        self.when = when
        self.members: list[Deadline] = []
        self.handle: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        self.groups.pop(self.when, None)
        members, self.members = self.members, []
        for deadline in members:
            deadline()

    def leave(self, deadline: Deadline) -> None:
        members = self.members
        try:
            members.remove(deadline)
        except ValueError:  # fired already
            return
        if not members and self.groups.get(self.when) is self:
            del self.groups[self.when]
            if self.handle is not None:
                self.handle.cancel()
