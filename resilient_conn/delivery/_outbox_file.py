"""The outbox file: its schema, opening it, its cross-process lock, payload columns (internal).

Shared by :class:`~resilient_conn.delivery.DurableOutbox` (the live store, in its writer
thread) and the offline tools (:func:`~resilient_conn.delivery.read_dead_letters`...).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from .._core.errors import ResilientConnError

__all__ = [
    "FORMAT",
    "SCHEMA",
    "OutboxError",
    "connect",
    "decode_payload",
    "encode_payload",
    "lock",
    "open_existing",
]

FORMAT = "1"
"""The file format this version writes (``meta.format``)."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, is_binary INTEGER NOT NULL, payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, is_binary INTEGER NOT NULL,
    payload BLOB NOT NULL, reason TEXT NOT NULL, enqueued_at REAL, at REAL NOT NULL,
    error TEXT);
"""


class OutboxError(ResilientConnError):
    """A durable outbox cannot be used (locked by another process, wrong session, bad file)."""


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open (or create) the outbox file in WAL mode; raise OutboxError if it is not one."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        stored = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise OutboxError(f"{path}: not a usable outbox file ({exc})") from exc
    if stored is None:
        db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
    elif stored[0] != FORMAT:
        db.close()
        raise OutboxError(f"{path}: outbox format {stored[0]!r}, this version reads {FORMAT!r}")
    return db


def lock(path: Path) -> Any:
    """Take the file's exclusive lock (a sidecar ``.lock``), or raise OutboxError."""
    handle = open(f"{path}.lock", "a+")  # noqa: SIM115 - held until close
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise OutboxError(
            f"{path} is in use by another process (one writer per outbox file)"
        ) from None
    return handle


def decode_payload(is_binary: int, payload: bytes | str) -> str | bytes:
    """A message as stored (``is_binary``, ``payload`` columns) back to str or bytes."""
    if is_binary:
        return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    return payload.decode("utf-8") if isinstance(payload, bytes) else payload


def encode_payload(message: str | bytes) -> tuple[int, bytes | str]:
    """A message as its ``is_binary`` and ``payload`` columns."""
    return (1, message) if isinstance(message, bytes) else (0, message)


def open_existing(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open an outbox file that must exist already (the offline tools)."""
    p = Path(path)
    if not p.is_file():
        raise OutboxError(f"{p}: no such outbox file")
    return connect(p, "normal")
