"""Adapters: how a supervisor opens a link and keeps it alive.

- :mod:`resilient_conn.adapters.websocket`: plain WebSocket (dial, keepalive that aborts a dead
  peer). :class:`~resilient_conn.ResilientConnection` uses it.
- The Phoenix / Supabase Realtime adapter lives in :mod:`resilient_conn.realtime`; it is built
  on top of a ``ResilientConnection`` and adds channels, checked heartbeats and rejoin.
"""
