"""Fresh stream epochs, for both ends of an acknowledged stream (internal)."""

from __future__ import annotations

import secrets

__all__ = ["new_epoch"]


def new_epoch() -> str:
    """A fresh random epoch (16 hex digits)."""
    return secrets.token_hex(8)
