"""Shared fixtures: every async test runs on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import pytest

from tests._transports import TRANSPORTS


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the library is asyncio-native)."""
    return "asyncio"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each adapter in turn (picows where installed): a test taking ``transport`` runs on both."""
    name: str = request.param
    return name
