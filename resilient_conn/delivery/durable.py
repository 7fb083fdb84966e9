"""DurableOutbox: an acknowledged stream's unacknowledged messages and dead letters in SQLite.

One file per named connection (``DurableOutbox.for_connection(directory, name)``), in WAL
mode, written by one thread of its own so the event loop never waits on the disk. ``send()``
returns once its message is committed; concurrent senders share commits (a batch is
everything queued while the previous commit ran), so throughput grows with concurrency while
a lone sender pays one commit per message.

What survives what:

* ``synchronous="normal"`` (default): a committed message survives the process being killed
  (``SIGKILL``, a crash, an OOM kill): WAL pages are in the operating system's cache. A power
  loss may lose the last commits.
* ``synchronous="full"``: every commit is fsynced; it also survives a power loss (slower).

Acks and dead letters are written in the same batches, lazily: after a crash, an acked
message may be re-sent once, and the peer drops it as a duplicate (same epoch, same number).

The file holds: ``meta`` (format, session, epoch, next_seq), ``outbox`` (seq, payload) and
``dead_letters``. :func:`read_dead_letters` and :func:`requeue_dead_letters` inspect and
replay them (``resilient-conn dead-letters PATH``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .._core.errors import ConfigError
from ._outbox_file import OutboxError, connect, decode_payload, encode_payload
from ._outbox_file import lock as lock_file
from ._outbox_offline import (
    OutboxSummary,
    StoredDeadLetter,
    read_dead_letters,
    read_summary,
    requeue_dead_letters,
)
from .envelope import encode_data
from .records import DeliveryDeadLetter
from .state import Pending, payload_size

__all__ = [
    "DurableOutbox",
    "OutboxError",
    "OutboxSummary",
    "Restored",
    "StoredDeadLetter",
    "read_dead_letters",
    "read_summary",
    "requeue_dead_letters",
]

DEFAULT_MAX_DEAD_LETTERS = 100_000
"""Most dead letters a file keeps (the oldest go first)."""

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class Restored:
    """What an outbox file held when it was opened.

    Attributes:
        session: Session identity (stored, or the new one).
        epoch: Stream epoch (stored, or the new one).
        next_seq: Next sequence number to assign.
        entries: Unacknowledged messages, oldest first.
    """

    session: str
    epoch: str
    next_seq: int
    entries: list[Pending]


class DurableOutbox:
    """The SQLite store behind a durable :class:`~resilient_conn.delivery.AckedStream`.

    Give it to one stream (``AckedStream(outbox=DurableOutbox(path))``); the stream opens and
    closes it. One process at a time may use a file (an exclusive lock on ``PATH.lock``);
    :func:`read_dead_letters` may read it meanwhile.

    Args:
        path: The SQLite file (created if missing, with its directory).
        synchronous: ``"normal"`` (survives a killed process) or ``"full"`` (also a power
            loss; every commit is fsynced).
        max_dead_letters: Most dead letters kept in the file (the oldest are deleted).

    Raises:
        ConfigError: A bad argument.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if (
            isinstance(max_dead_letters, bool)
            or not isinstance(max_dead_letters, int)
            or max_dead_letters < 1
        ):
            raise ConfigError(f"max_dead_letters must be an int >= 1, got {max_dead_letters!r}")
        self.path = Path(path)
        """The SQLite file."""
        self.synchronous = synchronous
        self.max_dead_letters = max_dead_letters
        self._ops: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._committed: Callable[[list[Pending]], None] | None = None
        self._failed: Callable[[BaseException], None] | None = None
        self._closed = False
        self.commits = 0
        """Transactions committed so far (each may carry many messages)."""

    @classmethod
    def for_connection(
        cls, directory: str | os.PathLike[str], name: str, **kwargs: Any
    ) -> DurableOutbox:
        """The outbox of connection ``name`` in ``directory``: ``DIRECTORY/NAME.sqlite3``.

        Raises:
            ConfigError: ``name`` is not 1-100 characters of ``A-Z a-z 0-9 . _ -``.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
            raise ConfigError(
                f"name must be 1-100 characters of A-Z a-z 0-9 . _ - (a file name), got {name!r}"
            )
        return cls(Path(directory) / f"{name}.sqlite3", **kwargs)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._thread else "new"
        return f"<DurableOutbox {str(self.path)!r} {state}>"

    # ------------------------------------------------------------------ stream side
    async def open(self, session: str | None, epoch: str) -> Restored:
        """Lock and load the file (in its writer thread); create it if new.

        Args:
            session: The session the stream asks for (None: whatever is stored, or a new
                random one).
            epoch: The epoch to use if the file holds none.

        Raises:
            OutboxError: Locked by another process, another session's file, or not an
                outbox.
        """
        if self._thread is not None or self._closed:
            raise RuntimeError(f"{self!r} can be opened once")
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Restored] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(future, session, epoch), name=f"outbox {self.path.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        try:
            return await future
        except BaseException:  # failed, or cancelled while opening: let the thread go
            self._closed = True
            thread = self._thread
            self._ops.put(("stop", self._loop.create_future()))
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.join, 10.0)
            raise

    def bind(
        self,
        committed: Callable[[list[Pending]], None],
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Have the writer thread report back on the event loop.

        Args:
            committed: Called with the entries of each commit of appends.
            failed: Called with the error if a commit fails (disk full, file removed...).
        """
        self._committed = committed
        self._failed = failed

    def append(self, entry: Pending) -> asyncio.Future[None]:
        """Persist ``entry``; the future completes on the event loop once it is committed."""
        if self._closed or self._loop is None:
            raise OutboxError(f"{self!r} is not open")
        future: asyncio.Future[None] = self._loop.create_future()
        self._ops.put(("append", entry, time.time() - (time.monotonic() - entry.enqueued_at),
                       future))  # fmt: skip
        return future

    def acked(self, upto: int) -> None:
        """Forget every message up to ``upto`` (written with the next batch)."""
        if not self._closed:
            self._ops.put(("acked", upto))

    def dead(self, letters: list[DeliveryDeadLetter]) -> None:
        """Move ``letters`` to the dead letters (written with the next batch)."""
        if not self._closed:
            self._ops.put(("dead", letters, time.time()))

    async def aclose(self) -> None:
        """Write what is queued, commit, close the file and release the lock."""
        thread = self._thread
        if self._closed or thread is None or self._loop is None:
            self._closed = True
            return
        self._closed = True
        done: asyncio.Future[None] = self._loop.create_future()
        self._ops.put(("stop", done))
        with contextlib.suppress(Exception):
            await done
        await anyio.to_thread.run_sync(thread.join, 10.0)

    # ------------------------------------------------------------------ the writer thread
    def _resolve(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        def settle() -> None:
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)

    def _run(self, opened: asyncio.Future[Restored], session: str | None, epoch: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = lock_file(self.path)
        except (OSError, OutboxError) as exc:
            error = exc if isinstance(exc, OutboxError) else OutboxError(f"{self.path}: {exc}")
            self._resolve(opened, None, error)
            return
        db: sqlite3.Connection | None = None
        try:
            db = connect(self.path, self.synchronous)
            restored = self._load(db, session, epoch)
        except Exception as exc:
            if db is not None:
                db.close()
            lock.close()
            error = exc if isinstance(exc, OutboxError) else OutboxError(f"{self.path}: {exc}")
            self._resolve(opened, None, error)
            return
        self._resolve(opened, restored, None)
        try:
            self._serve(db)
        finally:
            db.close()
            lock.close()

    def _load(self, db: sqlite3.Connection, session: str | None, epoch: str) -> Restored:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        stored = meta.get("session")
        if stored is not None and session is not None and stored != session:
            raise OutboxError(f"{self.path} belongs to session {stored!r}, not {session!r}")
        if stored is None:
            import secrets

            stored = session or secrets.token_hex(12)
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('session', ?)", (stored,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (epoch,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', '1')")
            db.execute("COMMIT")
            meta.update(epoch=epoch, next_seq="1")
        rows = db.execute(
            "SELECT seq, is_binary, payload, enqueued_at FROM outbox ORDER BY seq"
        ).fetchall()
        now_wall, now_mono = time.time(), time.monotonic()
        entries = []
        for seq, is_binary, payload, enqueued_at in rows:
            message = decode_payload(is_binary, payload)
            mono = now_mono - max(0.0, now_wall - enqueued_at)
            entries.append(
                Pending(seq, encode_data(seq, message), payload_size(message), mono, True)
            )
        next_seq = int(meta.get("next_seq", "1"))
        if entries:
            next_seq = max(next_seq, entries[-1].seq + 1)
        return Restored(stored, meta["epoch"], next_seq, entries)

    def _serve(self, db: sqlite3.Connection) -> None:
        ops = self._ops
        while True:
            batch = [ops.get()]
            while True:
                try:
                    batch.append(ops.get_nowait())
                except queue.Empty:
                    break
            stop = [op for op in batch if op[0] == "stop"]
            appended: list[Pending] = []
            futures: list[asyncio.Future[None]] = []
            try:
                self._write(db, batch, appended, futures)
                error: BaseException | None = None
            except Exception as exc:
                error = OutboxError(f"{self.path}: commit failed: {exc}")
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
            self._report(futures, error, appended)
            if stop:
                for op in stop:
                    self._resolve(op[1], None, None)
                return

    def _report(
        self,
        futures: list[asyncio.Future[None]],
        error: BaseException | None,
        appended: list[Pending],
    ) -> None:
        """Settle a batch's senders and report the commit (or its failure) to the stream.

        One hop to the event loop per batch, not one per message: each hop writes to the
        loop's wake-up pipe, a system call.
        """
        failed = self._failed if error is not None else None
        committed = self._committed if error is None and appended else None

        def settle() -> None:
            for future in futures:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
            if failed is not None and error is not None:
                failed(error)
            if committed is not None:
                committed(appended)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)

    def _write(
        self,
        db: sqlite3.Connection,
        batch: list[tuple[Any, ...]],
        appended: list[Pending],
        futures: list[asyncio.Future[None]],
    ) -> None:
        rows = []
        dead = False
        db.execute("BEGIN")
        for op in batch:
            kind = op[0]
            if kind == "append":
                entry, wall, future = op[1], op[2], op[3]
                is_binary, payload = encode_payload(entry.payload)
                rows.append((entry.seq, is_binary, payload, wall))
                appended.append(entry)
                futures.append(future)
            else:
                if rows:  # keep the order of appends, acks and dead letters
                    db.executemany("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)", rows)
                    rows = []
                if kind == "acked":
                    db.execute("DELETE FROM outbox WHERE seq <= ?", (op[1],))
                elif kind == "dead":
                    dead = True
                    for letter in op[1]:
                        is_binary, payload = encode_payload(letter.message)
                        if letter.seq:
                            db.execute("DELETE FROM outbox WHERE seq = ?", (letter.seq,))
                        db.execute(
                            "INSERT INTO dead_letters (seq, is_binary, payload, reason, "
                            "enqueued_at, at, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (letter.seq, is_binary, payload, letter.reason.value, None, op[2],
                             letter.error),
                        )  # fmt: skip
        if rows:
            db.executemany("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)", rows)
        if appended:
            db.execute(
                "UPDATE meta SET value = MAX(CAST(value AS INTEGER), ?) WHERE key = 'next_seq'",
                (appended[-1].seq + 1,),
            )
        if dead:
            db.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?",
                (self.max_dead_letters,),
            )
        db.execute("COMMIT")
        self.commits += 1
