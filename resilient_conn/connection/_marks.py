"""Marks the supervisor leaves on its tasks, and how errors are described in logs and health.

Split from :mod:`._supervisor` (which re-exports them) to keep that module one read long.
"""

from __future__ import annotations

import contextvars
import functools

from .._core.log import redact_text

__all__ = ["ON_OPEN", "SUPERVISOR", "describe", "supervisor_task_name"]

# Set inside the supervisor's own tasks: aclose() from there would wait for itself. The value
# is the connection's own Notifier (an object it holds anyway: no int is made per connection).
SUPERVISOR: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "resilient_conn_supervisor", default=None
)

# Sends made from inside on_open (or a task it spawned while that transport is current) go
# straight to the new transport, ahead of what is buffered: (connection id, generation).
ON_OPEN: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "resilient_conn_on_open", default=None
)


def describe(error: BaseException) -> str:
    """``"TypeName: message"``, redacted: short enough for logs and health reports."""
    text = str(error)
    name = type(error).__name__
    return redact_text(f"{name}: {text}" if text else name)


@functools.lru_cache(maxsize=256)
def supervisor_task_name(name: str) -> str:
    """The supervisor task's name for connection ``name``: one string per name, shared."""
    return f"resilient_conn.supervisor[{name}]"
