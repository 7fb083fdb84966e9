"""Closing a connection: the closer, and ``aclose()`` that waits for it from anywhere.

``aclose()`` starts one closer task per connection (:meth:`Closing._close`) and waits for it.
The closer's every wait is bounded, so it ends in ``CLOSED`` within ``drain_timeout +
close_timeout``: it stops the supervisor (which may finish a buffered write within the drain
budget, then has its transport aborted), flushes the buffer until the drain deadline, closes
with 1000 within ``close_timeout`` (then aborts), dead-letters what is left, sets ``CLOSED``,
and gives hooks a second to finish.

Because the closer is a task of its own, nothing cancelled around ``aclose()`` can leave the
connection half closed: a cancelled caller waits (shielded) for the bounded close to end, then
its cancellation goes on; a second ``aclose()`` waits for the same closer. Where the caller is
part of what the closer stops (``on_open``, or a task inside the supervisor), waiting would be
waiting for itself: there the close starts, and the caller is cancelled with the supervisor.
A hook (or a task a hook spawned) waits until the connection is ``CLOSED``, not for the hooks
to finish, which would be itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

import anyio
from websockets.exceptions import ConcurrencyError, ConnectionClosed

from .._core.hooks import IN_HOOK, HookSet
from ..adapters.base import Transport
from ..adapters.deadlines import close_within
from ._supervisor import ON_OPEN, SUPERVISOR, Supervising, describe
from .buffer import DeadLetterReason

__all__ = ["Closing", "in_supervisor"]


def in_supervisor(conn: Supervising) -> bool:
    """True in the supervisor of ``conn`` and the tasks it runs (``on_open``, keepalive).

    Such a task is stopped by the connection's close, so it must not wait for that close.
    """
    return SUPERVISOR.get() is conn._changed


def _fresh_context() -> contextvars.Context:
    """The caller's context without the supervisor's marks (the closer is nobody's child)."""
    ctx = contextvars.copy_context()
    ctx.run(SUPERVISOR.set, None)
    ctx.run(ON_OPEN.set, None)
    ctx.run(IN_HOOK.set, None)
    return ctx


class Closing(Supervising):
    """The closing half of ``ResilientConnection`` (its fields are set by ``__init__``)."""

    __slots__ = ()  # the fields are ResilientConnection's slots

    _closer: asyncio.Task[None] | None
    _closed_event: asyncio.Event | None

    async def _aclose(self) -> None:
        """Start the closer once, and wait for it as the caller's place allows."""
        closer = self._closer
        if closer is None:
            self._closed_event = asyncio.Event()
            # CLOSING now, before anything else runs: no dial starts after aclose() was called
            step = self._decisions.close(started=self._supervisor is not None)
            self._closing = True
            self._apply(step)
            self._wake()  # receivers and blocked senders see the close now
            closer = self._closer = asyncio.get_running_loop().create_task(
                self._close(), name=f"resilient_conn.close[{self.name}]", context=_fresh_context()
            )
            closer.add_done_callback(self._closer_ended)
        if IN_HOOK.get() is not None:  # a hook: wait for CLOSED, not for the hooks to finish
            assert self._closed_event is not None
            waited: asyncio.Future[Any] = asyncio.ensure_future(self._closed_event.wait())
        else:
            waited = closer
        inside = SUPERVISOR.get() is self._changed and IN_HOOK.get() is None
        try:
            await asyncio.shield(waited)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if waited.cancelled() and (me is None or not me.cancelling()):
                return  # the closer itself was cancelled: it ended everything at once
            if not inside:  # finish the (bounded) close before the cancellation goes on
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({waited})
            raise
        finally:
            if waited is not closer:
                waited.cancel()

    async def _close_transport(self, ws: Transport) -> None:
        """Close with 1000 within ``close_timeout`` (then abort), discarding unread frames.

        A consumer that stopped reading leaves frames queued; past ``max_queue`` websockets
        stops reading the socket, so the server's close frame would never be seen and the
        close would wait out ``close_timeout``. Reading (and dropping, counted) what is left
        lets the closing handshake finish at once.
        """
        unread = 0

        async def discard() -> None:
            nonlocal unread
            with contextlib.suppress(ConnectionClosed, ConcurrencyError):
                while True:  # ConcurrencyError: a consumer's recv() is reading anyway
                    await ws.recv()
                    unread += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(discard)
            clean = await close_within(ws, 1000, "client closing", self.options.close_timeout)
            tg.cancel_scope.cancel()
        if unread:
            self._log.info("resilient_conn.unread_at_close", messages=unread)
        if not clean:
            self._log.warning(
                "resilient_conn.close_aborted", close_timeout=self.options.close_timeout
            )

    async def _stop_supervisor(self, budget: float) -> None:
        """Stop the supervisor, aborting its transport if it takes longer than ``budget``.

        The supervisor may be finishing a buffered write (shielded); past the budget the
        abort ends whatever it still waits for at once. With a shared coordinator it is
        stopped through its cancel scope (the coordinator's shielded sections finish first).
        Without one it holds no scope while idle, so it is stopped with ``Task.cancel()``,
        unless it is in its own shielded section (``_holding``: after a transport ended,
        waiting for its helper tasks, bounded): from there it returns by itself at its next
        decision, which says stop once closing.
        """
        task = self._supervisor
        if task is None:
            if not self._parked:
                return
            # no task while the transport serves: take it over, in a task of its own so that
            # a flush write it waits for gets the same budget as a running supervisor's
            task = asyncio.get_running_loop().create_task(self._leave_parked())
        elif self._scope is not None:
            self._scope.cancel()
        elif not self._holding:
            task.cancel()
        with anyio.move_on_after(budget):
            await asyncio.wait({task})
        if not task.done():
            ws = self._ws
            if ws is not None:
                ws.abort()
            with anyio.move_on_after(self.options.close_timeout):
                await asyncio.wait({task})
        if not task.done():  # an on_open that ignores cancellation: do not wait for it
            self._log.error("resilient_conn.supervisor_stuck", waited=budget)
            task.cancel()
        self._supervisor = None
        if self._parked:  # resumed after parking, but cancelled before it ran a line
            await self._leave_parked()
        if not task.done():
            return
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._log.error("resilient_conn.supervisor_error", error=describe(error))

    async def _close(self) -> None:
        """The closer (its own task; see ``aclose``): ``CLOSED`` in bounded time.

        Within ``drain_timeout + close_timeout``: every message delivered or dead-lettered,
        every socket closed, every task ended. Should the closer itself be cancelled (the
        event loop shutting down), even before its first step, it still ends there at once,
        ungracefully (:meth:`_closer_ended`): the transport is aborted, the supervisor and
        hooks cancelled, the buffer dead-lettered.
        """
        drain_until = anyio.current_time() + self.options.drain_timeout
        await self._stop_supervisor(self.options.drain_timeout)
        ws = self._ws
        self._live = False
        if ws is not None:
            if self._opened and self._box is not None:
                await self._box.flush(ws, until=drain_until)
            await self._close_transport(ws)
        self._ws = None
        self._finish_close()
        for hooks in self._hook_sets():
            await hooks.aclose(grace=1.0)
        self._log.info("resilient_conn.closed", dead_letters=sum(self.stats.counts()[1].values()))

    def _hook_sets(self) -> list[HookSet[Any]]:
        """The state-change and dead-letter hook sets that were ever made."""
        box = self._box
        hooks = (self._state_hooks, None if box is None else box._hooks)
        return [h for h in hooks if h is not None]

    def _finish_close(self) -> None:
        """Dead-letter what is left and enter ``CLOSED`` (if not ``FAILED``)."""
        if self._box is not None:
            self._box.dead_letter_all(DeadLetterReason.CLOSED, None)
        self._apply(self._decisions.closed())
        self._wake()
        if self._closed_event is not None:
            self._closed_event.set()

    def _closer_ended(self, closer: asyncio.Task[None]) -> None:
        """The closer ended without finishing: end everything at once.

        Cancelled (even before its first step: an event loop shutting down), or a bug.
        """
        if closer.cancelled() or closer.exception() is not None:
            self._close_now()

    def _close_now(self) -> None:
        """The closer was cancelled: end everything at once, without waiting for anything."""
        ws, self._ws = self._ws, None
        self._live = False
        if ws is not None:
            ws.abort()
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
        if self._parked:
            self._leave_parked_now()
        if self._closed_event is None or not self._closed_event.is_set():
            self._finish_close()
        for hooks in self._hook_sets():
            hooks.cancel()
        self._log.warning("resilient_conn.close_cancelled")
