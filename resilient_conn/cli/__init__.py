"""The command line (``resilient-conn demo | connect | check``) and the demo's private parts."""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
