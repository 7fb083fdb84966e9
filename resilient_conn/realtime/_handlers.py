"""A channel's ``on()`` handlers: sync ones inline, async ones through one bounded queue each.

A flood of inbound messages must cost bounded memory, and a slow handler must slow only
itself. So an async handler never gets a task per message: each handler has its own queue of
pending calls (``queue_size`` long) and at most ``concurrency`` worker tasks (default ONE,
which awaits them in order).
When a handler's queue is full the ``overflow`` policy drops a call (``drop_oldest``, the
default, keeps the freshest messages; ``drop_newest`` keeps the backlog) and counts it; the
reader, the other handlers and the other channels never wait for it. A sync handler runs
inline in the reader (keep it quick). A handler that raises, or an async one that overruns
``timeout``, is logged (rate-limited per handler and error type) and counted; the next message
is delivered as usual.

Workers run in the client's task group, so none outlives the client; calls still queued when
it closes are dropped (their coroutines closed, never left un-awaited).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import anyio.abc

from .._core.errors import ConfigError
from .._core.log import redact_text
from ..resilience.config import check_int
from ._ratelog import RateLimitedLog

__all__ = ["HANDLER_OVERFLOW", "HandlerOverflow", "HandlerSet"]

HandlerOverflow = Literal["drop_oldest", "drop_newest"]
"""What a full handler queue drops: the oldest queued call, or the new one."""
HANDLER_OVERFLOW: tuple[str, ...] = ("drop_oldest", "drop_newest")


class _Handler:
    __slots__ = ("callback", "dropped", "name", "queue", "running")

    def __init__(self, callback: Callable[[Any], Any]) -> None:
        self.callback = callback
        self.name = getattr(callback, "__qualname__", None) or repr(callback)
        self.queue: deque[Awaitable[Any]] = deque()
        self.running = 0  # workers
        self.dropped = 0


class HandlerSet:
    """The handlers of one channel.

    Args:
        topic: The channel's topic (for log lines).
        queue_size: Bound of each async handler's queue of pending calls (>= 1).
        overflow: ``"drop_oldest"`` or ``"drop_newest"``.
        timeout: Longest one async call may run before it is cancelled (None: no limit).
        concurrency: Workers per async handler (1 keeps its calls in arrival order).
        task_group: Returns the task group workers run in (None when the client is not
            running: async calls are then dropped and counted).
        log: The client's structlog logger.
        stats: The client's counters (``handler_dropped``, ``handler_errors``).

    Raises:
        ConfigError: A bad ``queue_size``, ``overflow`` or ``timeout``.
    """

    def __init__(
        self,
        topic: str,
        *,
        queue_size: int,
        overflow: str,
        timeout: float | None,
        task_group: Callable[[], anyio.abc.TaskGroup | None],
        concurrency: int = 1,
        log: Any,
        stats: Any,
    ) -> None:
        check_int(queue_size, "handler_queue_size", 1)
        if overflow not in HANDLER_OVERFLOW:
            raise ConfigError(
                f"handler_overflow must be one of {', '.join(HANDLER_OVERFLOW)}, got {overflow!r}"
            )
        check_int(concurrency, "handler_concurrency", 1)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ConfigError(f"handler_timeout must be a number > 0 or None, got {timeout!r}")
        self._topic = topic
        self.queue_size = queue_size
        self.overflow = overflow
        self.timeout = timeout
        self.concurrency = concurrency
        self._task_group = task_group
        self._stats = stats
        self._handlers: list[_Handler] = []
        self._active: set[_Handler] = set()
        self._errors = RateLimitedLog(log, "resilient_conn.realtime.handler_failed")
        self._drops = RateLimitedLog(log, "resilient_conn.realtime.handler_overflow")
        self.dropped = 0
        """Async calls dropped because a handler's queue was full (or the client stopped)."""
        self.errors = 0
        """Handler calls that raised or timed out."""

    def add(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Register ``callback``; return a handle that removes it (its queued calls still run)."""
        if not callable(callback):
            raise TypeError(f"handler must be callable, got {callback!r}")
        handler = _Handler(callback)
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    def __len__(self) -> int:
        return len(self._handlers)

    @property
    def pending(self) -> int:
        """Async calls queued or running, over every handler (removed ones included)."""
        return sum(len(h.queue) + h.running for h in self._all())

    def emit(self, message: Any) -> None:
        """Call every handler with ``message``: sync ones now, async ones queued."""
        for handler in tuple(self._handlers):
            try:
                result = handler.callback(message)
            except Exception as exc:
                self._failed(handler, exc)
                continue
            if inspect.isawaitable(result):
                self._enqueue(handler, result)

    def _enqueue(self, handler: _Handler, call: Awaitable[Any]) -> None:
        if len(handler.queue) >= self.queue_size:
            if self.overflow == "drop_newest":
                self._drop(handler, call, "queue full")
                return
            self._drop(handler, handler.queue.popleft(), "queue full")
        handler.queue.append(call)
        if handler.running >= self.concurrency:
            return
        tg = self._task_group()
        if tg is None:
            while handler.queue:
                self._drop(handler, handler.queue.popleft(), "client not running")
            return
        handler.running += 1
        self._active.add(handler)
        tg.start_soon(self._worker, handler, name=f"handler[{self._topic}]:{handler.name}")

    async def _worker(self, handler: _Handler) -> None:
        try:
            while handler.queue:
                call = handler.queue.popleft()
                try:
                    if self.timeout is None:
                        await call
                    else:
                        with anyio.move_on_after(self.timeout) as scope:
                            await call
                        if scope.cancelled_caught:
                            self._failed(handler, TimeoutError(f"ran over {self.timeout}s"))
                except Exception as exc:
                    self._failed(handler, exc)
        finally:
            handler.running -= 1
            if not handler.queue and not handler.running:
                self._active.discard(handler)

    def _drop(self, handler: _Handler, call: Awaitable[Any], why: str) -> None:
        if inspect.iscoroutine(call):
            call.close()
        handler.dropped += 1
        self.dropped += 1
        self._stats["handler_dropped"] += 1
        self._drops.warn(
            handler.name,
            _now(),
            topic=self._topic,
            handler=handler.name,
            reason=why,
            dropped=handler.dropped,
            queue_size=self.queue_size,
            overflow=self.overflow,
        )

    def _failed(self, handler: _Handler, exc: BaseException) -> None:
        self.errors += 1
        self._stats["handler_errors"] += 1
        self._errors.warn(
            f"{handler.name}:{type(exc).__name__}",
            _now(),
            topic=self._topic,
            handler=handler.name,
            error=redact_text(repr(exc))[:300],
        )

    def _all(self) -> list[_Handler]:
        # Handlers removed while calls were queued keep draining: count and close them too.
        return self._handlers + [h for h in self._active if h not in self._handlers]

    async def aclose(self) -> None:
        """Drop every queued call (closing its coroutine); called once workers have ended."""
        for handler in self._all():
            while handler.queue:
                call = handler.queue.popleft()
                if inspect.iscoroutine(call):
                    call.close()
            handler.running = 0
        self._active.clear()


def _now() -> float:
    try:
        return anyio.current_time()
    except Exception:  # no event loop (a sync emit from a test)
        return 0.0
