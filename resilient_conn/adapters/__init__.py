"""Adapters: how a supervisor opens a link and keeps it alive.

- :mod:`resilient_conn.adapters.base`: the ``Transport`` protocol the supervisor speaks, the
  ``Adapter`` protocol that dials one, ``DialOptions``, and ``get_adapter(name, options)``.
- :mod:`resilient_conn.adapters.websocket`: websockets (the default; dial, keepalive).
- :mod:`resilient_conn.adapters.picows`: picows (``resilient-conn[picows]``,
  ``transport="picows"``).
- :mod:`resilient_conn.adapters.keepalive`: keepalive on a loop timer (no task while idle).
- The Phoenix / Supabase Realtime adapter lives in :mod:`resilient_conn.realtime`; it is built
  on top of a ``ResilientConnection`` and adds channels, checked heartbeats and rejoin.
"""
