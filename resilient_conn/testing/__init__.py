"""Fault-injection toolkit: test your code against a misbehaving network and server.

- :class:`ChaosProxy`: a TCP proxy whose faults (latency, blackhole, resets, refused dials,
  bandwidth, cuts) are switched at run time.
- :class:`ScriptedServer`: a WebSocket server (echo by default) that a test scripts: close
  codes, handshake rejections, stalls, restarts on the same port; it records what it saw.
- :class:`FakeClock`: a :class:`~resilient_conn.Clock` that only moves when told to.

Everything listens on 127.0.0.1 only. See ``docs/testing.md``.
"""

from __future__ import annotations

from .chaos import ChaosProxy, Direction, ProxyStats
from .clock import FakeClock
from .phoenix import PhoenixServer
from .servers import ConnectionRecord, Handler, RejectionRecord, ScriptedServer, serve_scripted

__all__ = [
    "ChaosProxy",
    "ConnectionRecord",
    "Direction",
    "FakeClock",
    "Handler",
    "PhoenixServer",
    "ProxyStats",
    "RejectionRecord",
    "ScriptedServer",
    "serve_scripted",
]
