"""Reading and replaying an outbox file offline: summary, dead letters, requeue (internal).

What ``resilient-conn dead-letters PATH`` runs. Reading works while a stream uses the file;
requeueing needs the file's lock (stop the streaming process first).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..connection.buffer import DeadLetterReason
from ._outbox_file import OutboxError, decode_payload, open_existing
from ._outbox_file import lock as lock_file

__all__ = [
    "OutboxSummary",
    "StoredDeadLetter",
    "read_dead_letters",
    "read_summary",
    "reason_of",
    "requeue_dead_letters",
]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as kept in an outbox file.

    Attributes:
        id: Row id (what ``requeue_dead_letters`` takes).
        seq: Sequence number it had (0 if it never got one).
        message: The message.
        reason: Why it was given up (a :class:`~resilient_conn.DeadLetterReason` value).
        at: Wall-clock time (``time.time()``) when it was given up.
        error: The error behind it, if any.
    """

    id: int
    seq: int
    message: str | bytes
    reason: str
    at: float
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (binary messages as hex)."""
        binary = isinstance(self.message, bytes)
        return {
            "id": self.id,
            "seq": self.seq,
            "binary": binary,
            "message": self.message.hex() if isinstance(self.message, bytes) else self.message,
            "reason": self.reason,
            "at": self.at,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    """What an outbox file holds.

    Attributes:
        session: Session identity (None for a file never opened by a stream).
        epoch: Stream epoch.
        next_seq: Next sequence number.
        pending: Unacknowledged messages waiting to be (re-)sent.
        dead_letters: Dead letters kept.
    """

    session: str | None
    epoch: str | None
    next_seq: int
    pending: int
    dead_letters: int


def read_summary(path: str | os.PathLike[str]) -> OutboxSummary:
    """What the outbox file at ``path`` holds (it may be in use by a stream).

    Raises:
        OutboxError: No such file, or not an outbox.
    """
    db = open_existing(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        pending = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        dead = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    finally:
        db.close()
    return OutboxSummary(
        meta.get("session"), meta.get("epoch"), int(meta.get("next_seq", "1")), pending, dead
    )


def read_dead_letters(
    path: str | os.PathLike[str], *, limit: int | None = None
) -> list[StoredDeadLetter]:
    """The dead letters in the outbox file at ``path``, oldest first.

    Raises:
        OutboxError: No such file, or not an outbox.
    """
    db = open_existing(path)
    try:
        query = (
            "SELECT id, seq, is_binary, payload, reason, at, error FROM dead_letters ORDER BY id"
        )
        params: tuple[int, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        rows = db.execute(query, params).fetchall()
    finally:
        db.close()
    return [
        StoredDeadLetter(row[0], row[1], decode_payload(row[2], row[3]), row[4], row[5], row[6])
        for row in rows
    ]


def requeue_dead_letters(path: str | os.PathLike[str], ids: Iterable[int] | None = None) -> int:
    """Move dead letters back into the outbox, so the next run of the stream sends them.

    They get new sequence numbers after every pending message (in their original order).
    The file must not be in use (stop the process that streams from it first).

    Args:
        path: The outbox file.
        ids: Which dead letters (their ``id``); None: all of them.

    Returns:
        How many were requeued.

    Raises:
        OutboxError: No such file, not an outbox, in use by a process, or an unknown id.
    """
    p = Path(path)
    db = open_existing(p)
    lock = None
    try:
        lock = lock_file(p)
        wanted = None if ids is None else sorted(set(ids))
        rows = db.execute("SELECT id, is_binary, payload FROM dead_letters ORDER BY id").fetchall()
        if wanted is not None:
            known = {row[0] for row in rows}
            missing = [i for i in wanted if i not in known]
            if missing:
                raise OutboxError(f"{p}: no dead letter with id {missing[0]}")
            rows = [row for row in rows if row[0] in set(wanted)]
        if not rows:
            return 0
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "session" not in meta:
            raise OutboxError(f"{p}: the outbox has no session yet")
        top = db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0] or 0
        next_seq = max(int(meta.get("next_seq", "1")), top + 1)
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        for offset, (row_id, is_binary, payload) in enumerate(rows):
            db.execute(
                "INSERT INTO outbox VALUES (?, ?, ?, ?)",
                (next_seq + offset, is_binary, payload, now),
            )
            db.execute("DELETE FROM dead_letters WHERE id = ?", (row_id,))
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(next_seq + len(rows)),))
        db.execute("COMMIT")
        return len(rows)
    finally:
        db.close()
        if lock is not None:
            lock.close()


def reason_of(value: str) -> DeadLetterReason | None:
    """The :class:`~resilient_conn.DeadLetterReason` named ``value``, if any."""
    try:
        return DeadLetterReason(value)
    except ValueError:
        return None
