"""What a channel and its driver need of the client that owns them (a small protocol).

:class:`~resilient_conn.realtime.client.RealtimeClient` owns its channels, their driver and the
outbox; they call back into it. Naming the client's class would make the modules import each
other, so they name this protocol instead and the client, one layer up, satisfies it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import anyio.abc

    from .._core.clock import Clock
    from ._machine import Action
    from ._outbox import Outbox, Push
    from .protocol import RefCounter

__all__ = ["ClientHost"]


class ClientHost(Protocol):
    """The client's side of the channel machinery (all private to the realtime package)."""

    push_timeout: float
    stats: Counter[str]
    _refs: RefCounter
    _outbox: Outbox
    _clock: Clock
    _tg: anyio.abc.TaskGroup | None
    _token: str | None
    _log: Any
    _channels: dict[str, Any]

    def _register(self, ch: Any) -> None:
        """Register ``ch`` as a channel that should be joined."""
        ...

    def _failure_reason(self) -> str | None:
        """Why the client cannot join (failed or closed), or None."""
        ...

    async def _refresh_token(self) -> str | None:
        """Evaluate the access token source again; the token to join with."""
        ...

    async def _run(self, ch: Any, actions: list[Action]) -> None:
        """Carry out a channel's actions."""
        ...

    async def _send_push(self, ch: Any, push: Push) -> None:
        """Send one push of ``ch``."""
        ...
