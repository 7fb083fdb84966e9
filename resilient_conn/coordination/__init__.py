"""Recovery coordinators: one circuit, one probe and one reconnect ramp per upstream.

Many connections to one upstream share a :class:`RecoveryCoordinator`; while the upstream is
down they share one circuit and one probe, and when the probe gets through they come back
through a token bucket (the *ramp*) instead of a stampede or N private backoffs. Its state
sits behind :class:`CoordinatorStore`: :class:`LocalStore` (one process, the default) or
:class:`RedisStore` (a fleet of processes, failing open to local state).

The interface a supervisor uses around each dial::

    coordinator = RecoveryCoordinator("feed")             # or RecoveryCoordinator.for_url(url)

    async with coordinator.permit(conn_name, on_wait=cb) as permit:
        # Entering waits, without polling, until the dial is admitted:
        #   - circuit OPEN: sleeps until the open time ends (then one caller gets the probe);
        #   - HALF_OPEN, probe held elsewhere: woken when the probe's outcome is stored
        #     (at the latest when its lease expires);
        #   - ramp on: sleeps until the token-bucket slot reserved for this caller.
        # cb(reason, seconds) is called (sync) each time a wait with a new reason starts,
        # e.g. "circuit open, waiting for the probe time", "circuit open, probe held by
        # another connection", "waiting for reconnect ramp": put it in the state change.
        permit.kind      # DialKind.PROBE | DialKind.RAMP | DialKind.NORMAL
        permit.reason    # why it waited ("" if it did not), permit.waited: seconds
        ws = await dial(...)
        permit.dialed()                       # handshake done: frees one of the
                                              # settings.max_dialing in-flight slots
        await permit.succeeded(stable=False)  # optional: first round trip on a PROBE
        ...                                     # (closes the circuit, starts the ramp)
        await permit.succeeded()              # connection stayed up stable_after
        await permit.failed(exc)              # refused, or died before stable_after
    # Leaving without an outcome releases the probe lease; an Exception escaping the block
    # counts as failed(exc); cancellation never counts. Outcomes after succeeded() (stable)
    # are ignored, so the supervisor may keep the block open for the connection's life.

    coordinator.snapshot()   # CoordinatorSnapshot: phase, probe, ramp, store health (no I/O)

``ResilientConnection(url, coordinator=...)`` does exactly this around every dial (see
``resilient_conn/connection/_gate.py``): the wait reasons become its state change reasons,
a probe dial pings once right after the handshake (``succeeded(stable=False)``), the stable
timer reports ``succeeded()``, and a dial or transport that fails is ``failed()``. If the
probe's own connection dies before proving stable, the circuit re-opens at once, for longer
(an upstream that accepts and drops costs one dial per open period).

The decisions are pure functions in :mod:`resilient_conn.coordination.decide`, tested with
hypothesis; the stores apply them atomically (Redis: a compare-and-set Lua script).
"""

from __future__ import annotations

from .coordinator import (
    CoordinatorSnapshot,
    Permit,
    RecoveryCoordinator,
    WaitCallback,
    reset_default_coordinators,
)
from .decide import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_MAX_DIALING,
    DEFAULT_MAX_OPEN,
    DEFAULT_OPEN_MULTIPLIER,
    DEFAULT_OPEN_TIME,
    DEFAULT_PROBE_TTL,
    DEFAULT_RAMP_BURST,
    DEFAULT_RAMP_HOLD,
    DEFAULT_RAMP_RATE,
    REASON_DIALING,
    REASON_OPEN,
    REASON_PROBE_HELD,
    REASON_RAMP,
    Admission,
    DialKind,
    Phase,
    RecoverySettings,
    UpstreamState,
)
from .redis_store import RedisStore
from .store import CoordinatorStore, LocalStore, StoreHealth, Transition

__all__ = (
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_MAX_DIALING",
    "DEFAULT_MAX_OPEN",
    "DEFAULT_OPEN_MULTIPLIER",
    "DEFAULT_OPEN_TIME",
    "DEFAULT_PROBE_TTL",
    "DEFAULT_RAMP_BURST",
    "DEFAULT_RAMP_HOLD",
    "DEFAULT_RAMP_RATE",
    "REASON_DIALING",
    "REASON_OPEN",
    "REASON_PROBE_HELD",
    "REASON_RAMP",
    "Admission",
    "CoordinatorSnapshot",
    "CoordinatorStore",
    "DialKind",
    "LocalStore",
    "Permit",
    "Phase",
    "RecoverySettings",
    "RecoveryCoordinator",
    "RedisStore",
    "StoreHealth",
    "Transition",
    "UpstreamState",
    "WaitCallback",
    "reset_default_coordinators",
)
