"""The transports a fault test runs on: websockets always, picows where it is installed."""

from __future__ import annotations

import importlib.util

import pytest

HAS_PICOWS = importlib.util.find_spec("picows") is not None

TRANSPORTS = [
    "websockets",
    pytest.param(
        "picows", marks=pytest.mark.skipif(not HAS_PICOWS, reason="picows not installed")
    ),
]
"""Parameters for a ``transport`` fixture or ``parametrize``."""
