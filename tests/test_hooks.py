"""Isolated hook dispatch: raising, hanging and never-started async hooks."""

from __future__ import annotations

import asyncio

import pytest

from resilient_conn._core.hooks import HookSet

pytestmark = pytest.mark.anyio


async def test_aclose_right_after_emit_leaves_no_unawaited_coroutine() -> None:
    """Closing before an async hook's task started cancels it cleanly: no 'never awaited'
    warning (warnings are errors here) and nothing left pending."""
    hooks: HookSet[int] = HookSet("test")
    seen: list[int] = []

    async def hook(event: int) -> None:
        seen.append(event)

    hooks.add(hook)
    hooks.emit(1)
    await hooks.aclose()
    assert hooks.pending == 0
    assert seen == []


async def test_raising_and_hanging_hooks_are_isolated() -> None:
    """A sync hook that raises and an async hook that outlives the timeout do not stop the
    other hooks from receiving the event."""
    hooks: HookSet[int] = HookSet("test", timeout=0.05)
    seen: list[int] = []
    never = asyncio.Event()

    def broken(event: int) -> None:
        raise RuntimeError("bug")

    async def hangs(event: int) -> None:
        await never.wait()

    hooks.add(broken)
    hooks.add(hangs)
    hooks.add(seen.append)
    hooks.emit(7)
    assert seen == [7]
    await hooks.aclose(grace=1.0)  # the hanging hook is cut off by its own timeout
    assert hooks.pending == 0


def test_non_callable_is_rejected() -> None:
    """Registering something that is not callable is a TypeError at once."""
    hooks: HookSet[int] = HookSet("test")
    with pytest.raises(TypeError, match="callable"):
        hooks.add(3)  # type: ignore[arg-type]
