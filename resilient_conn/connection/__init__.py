"""The supervisor: one logical connection over many transports.

``ResilientConnection`` (the loop that carries out decisions), its pure decision logic, the
states and their transition table, settings, the outbound buffer and dead letters, counters
and the connection's health report.
"""

from __future__ import annotations

from .buffer import DeadLetter, DeadLetterReason, Overflow
from .connection import ResilientConnection
from .events import ConnectionState, StateChange
from .metrics import ConnectionSnapshot, ConnectionStats
from .options import ConnectionOptions
from .report import HealthReport, HealthStatus, evaluate

__all__ = [
    "ConnectionOptions",
    "ConnectionSnapshot",
    "ConnectionState",
    "ConnectionStats",
    "DeadLetter",
    "DeadLetterReason",
    "HealthReport",
    "HealthStatus",
    "Overflow",
    "ResilientConnection",
    "StateChange",
    "evaluate",
]
