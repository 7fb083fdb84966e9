"""The RealtimeClient's own tasks, and its close: once, bounded, safe to cancel.

The client's tasks (reader, heartbeat, channel timers) live in one task group, held open by a
runner task of its own rather than by the task that entered ``async with``. So the client can
be closed from any task: the close runs in a closer task of its own, started once; a caller
cancelled while it waits waits (shielded) for that bounded close before its cancellation goes
on, and a second ``aclose()`` waits for the same closer. A caller that is one of the tasks the
close stops (the reader running a handler, the heartbeat, a timer, the connection's
supervisor running ``on_open``) does not wait for it, which would be waiting for itself: the
close starts and that caller is cancelled with the rest.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

from .._core.hooks import IN_HOOK

__all__ = ["ClientTasks"]

TaskFunction = Callable[[], Coroutine[Any, Any, None]]

INSIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "resilient_conn_realtime_client", default=None
)
"""Set (to the id of the :class:`ClientTasks`) in the runner: its tasks inherit it."""


class ClientTasks:
    """The task group of one client and the single close of that client.

    Args:
        name: Names the runner and closer tasks.
        log: The client's bound logger.
    """

    __slots__ = ("_closer", "_log", "_name", "_runner", "_tg")

    def __init__(self, name: str, log: object) -> None:
        self._name = name
        self._log = log
        self._runner: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran (a client runs once)."""
        return self._runner is not None or self._closer is not None

    async def start(self, *functions: TaskFunction) -> anyio.abc.TaskGroup:
        """Start the runner with ``functions`` as its first tasks; return its task group."""
        ready: asyncio.Future[anyio.abc.TaskGroup] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.get_running_loop().create_task(
            self._run(functions, ready), name=f"resilient_conn.realtime[{self._name}]"
        )
        return await ready

    async def _run(
        self,
        functions: tuple[TaskFunction, ...],
        ready: asyncio.Future[anyio.abc.TaskGroup],
    ) -> None:
        INSIDE.set(id(self))
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for function in functions:
                    tg.start_soon(function)
                ready.set_result(tg)
                await anyio.sleep_forever()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            self._tg = None
            if not ready.done():  # stopped before it ran its tasks
                ready.cancel()

    async def close_once(self, shutdown: TaskFunction, *, inside: bool) -> None:
        """Run ``shutdown`` once, in a closer task, and wait for it as the caller may.

        Args:
            shutdown: The client's close (it calls :meth:`stop` and :meth:`wait`).
            inside: The caller is a task the close stops for another reason (the connection's
                supervisor); tasks of this runner are recognised without it.
        """
        closer = self._closer
        if closer is not None and closer.cancelled():
            closer = None  # the last close was cancelled itself (loop shutdown): close again
        if closer is None:
            ctx = contextvars.copy_context()
            ctx.run(INSIDE.set, None)
            ctx.run(IN_HOOK.set, None)
            closer = self._closer = asyncio.get_running_loop().create_task(
                shutdown(), name=f"resilient_conn.realtime.close[{self._name}]", context=ctx
            )
        own = inside or INSIDE.get() == id(self)
        try:
            await asyncio.shield(closer)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if closer.cancelled() and (me is None or not me.cancelling()):
                await self.close_once(shutdown, inside=inside)  # finish what it started
                return
            if not own:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({closer})
            raise

    def stop(self) -> None:
        """Cancel every task of the runner."""
        tg, runner = self._tg, self._runner
        if tg is not None:
            tg.cancel_scope.cancel()
        elif runner is not None and not runner.done():
            runner.cancel()  # not running its task group yet

    async def wait(self) -> None:
        """Wait until the runner ended; re-raise what made it fail, if anything did."""
        runner = self._runner
        if runner is None:
            return
        await asyncio.wait({runner})
        if not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]
