"""The SQLite engine: connections, group commit, reads and life cycle: writes through aiosqlite's thread,
reads by key on the event loop's thread.

Choices, deliberately:

* WAL journal, so readers never wait for the writer and the command-line tools
  (``xferd adduser`` …) can work beside a running server.
* ``synchronous = FULL`` by default: a commit is on disk before we answer, so
  neither ``kill -9`` nor a power cut loses an acknowledged change. ``normal``
  can be configured (survives a process crash, may lose the last commits on
  power loss). ``tests/integration/test_crash.py`` SIGKILLs the server and
  ``xferd import`` in the middle of writes and checks this.
* One connection writes, on aiosqlite's thread, so the event loop never waits
  for the disk. Each write method is one function handed to that thread
  whole (:meth:`SQLiteStorage._write`), not one statement at a time: a
  hand-over costs two thread wake-ups — ~30 µs of CPU on a quiet machine,
  far more when the loop and the thread fight for the GIL on a busy one —
  against ~5 µs for a statement. Per statement, they were most of the
  server's CPU in the migration benchmark (issue 8).
* Group commit: the writes queued while the thread is busy go over together,
  each inside its own ``SAVEPOINT`` of one transaction (an error undoes only
  its own work), and one ``COMMIT`` — one fsync — acknowledges them all: one
  hand-over per batch. A write method returns only once that COMMIT is done.
* Reads by key run right on the event loop's thread, on a second, read-only
  connection with the standard ``sqlite3`` module: a few rows out of the page
  cache take microseconds, less than any hand-over. In WAL mode a reader
  never waits for the writer, and each read sees what was committed last.
* The schema is a list of migrations; ``PRAGMA user_version`` says how many are
  applied. Each migration runs in its own transaction. Every per-user table
  references ``accounts`` with ``ON DELETE CASCADE`` so deleting an account
  deletes all its data in one statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Callable, TypeVar

import aiosqlite

from ..api import StorageError
from .schema import MIGRATIONS, SYNCHRONOUS_MODES

log = logging.getLogger("xferd.storage")
T = TypeVar("T")

class Engine:
    """What every feature store builds on: the connections, :meth:`_write`
    (group commit) and the reads (:meth:`_one`, :meth:`_all`, :meth:`_snapshot`)."""

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "full"):
        if synchronous not in SYNCHRONOUS_MODES:
            raise StorageError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: sqlite3.Connection | None = None      # on the event loop's thread
        self._queue: list[tuple[Callable, asyncio.Future]] = []   # writes for the next batch
        self._flusher: asyncio.Task | None = None
        #: how many COMMITs acknowledged how many writes (for the tests and the log)
        self.commits = self.committed_writes = 0

    # -- life cycle -----------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._on_writer_thread(self._set_up)
            await self._on_writer_thread(self._migrate)
            self._reader = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
            self._set_up(self._reader)
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, (sqlite3.Error, ValueError)):
                raise StorageError(f"cannot open {self.path}: {exc}") from exc
            raise

    def _set_up(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self, db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise StorageError(
                f"{self.path} has schema version {version}, this xferd knows "
                f"{len(MIGRATIONS)}: it was written by a newer xferd")
        for number in range(version + 1, len(MIGRATIONS) + 1):
            log.info("storage: migrating %s to schema version %d", self.path, number)
            script = (f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\n"
                      f"PRAGMA user_version = {number};\nCOMMIT;")
            try:
                db.executescript(script)
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if os.name == "posix":
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)     # credentials live here

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.close()
        self._reader = self._writer = None

    async def schema_version(self) -> int:
        return self._one("PRAGMA user_version")[0]

    # -- writes: one hand-over and one COMMIT per batch (group commit) ----------------------
    async def _on_writer_thread(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn(connection, *args)`` on the writer's thread.

        aiosqlite has no public call for this: its public methods hand over
        one statement at a time. ``Connection._execute`` is the queue those
        methods use themselves, unchanged since aiosqlite 0.11; pyproject
        pins the versions, and ``tests/integration/test_storage.py`` fails
        first if a release changes it."""
        if self._writer is None:
            raise StorageError(f"{self.path} is closed")
        writer = self._writer
        return await writer._execute(lambda: fn(writer._conn, *args))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` as one atomic write; return what it returns once committed.

        An exception undoes all of ``fn``'s work and is raised here. A caller
        cancelled meanwhile does not cut the write short: once queued it is
        done, or not, whole."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((fn, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Hand the queued writes over as one batch — one transaction, one
        COMMIT — and again for those queued meanwhile, until none are left.
        The writes of one loop turn go together, and under load, all those
        that came while the last batch was being written and synced."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                outcomes = await self._on_writer_thread(self._write_batch,
                                                        [fn for fn, _ in batch])
            except BaseException as exc:        # closed under us, or shutting down
                outcomes = [(False, StorageError(f"write interrupted: {exc!r}"))] * len(batch)
                if not isinstance(exc, Exception):
                    self._settle(batch, outcomes)
                    raise
            self._settle(batch, outcomes)

    def _settle(self, batch, outcomes) -> None:
        written = sum(ok for ok, _ in outcomes)
        if written:
            self.commits += 1
            self.committed_writes += written
        for (_, done), (ok, value) in zip(batch, outcomes):
            if done.done():
                continue                        # its caller gave up waiting
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

    def _write_batch(self, db: sqlite3.Connection, fns: list[Callable]) -> list[tuple]:
        """On the writer's thread: each ``fn(db)`` inside its own SAVEPOINT of
        one transaction, then COMMIT. Returns ``(True, result)`` or ``(False,
        exception)`` per write; a write is reported done only if the COMMIT
        that holds it succeeded."""
        db.execute("BEGIN IMMEDIATE")
        try:
            return self._write_each(db, fns)
        except BaseException:
            if db.in_transaction:               # never leave the writer inside a transaction
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_each(db: sqlite3.Connection, fns: list[Callable]) -> list[tuple]:
        outcomes: list[tuple] = []
        for fn in fns:
            db.execute("SAVEPOINT write")
            try:
                result = fn(db)
                db.execute("RELEASE write")
            except Exception as exc:
                outcomes.append((False, exc))
                if not db.in_transaction:
                    # SQLite gave up the whole transaction (disk full, I/O error):
                    # what the batch wrote before is gone too, and nothing more is tried
                    lost = StorageError(f"not committed: {exc!r}")
                    return [(False, lost if ok else value) for ok, value in outcomes] + \
                        [(False, lost)] * (len(fns) - len(outcomes))
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
            else:
                outcomes.append((True, result))
        try:
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            failed = StorageError(f"not committed: {exc!r}")
            return [(False, failed if ok else value) for ok, value in outcomes]
        return outcomes

    # -- reads --------------------------------------------------------------------------------
    def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Reads that must agree with each other: ``fn(db)`` inside one read
        transaction (WAL gives it a consistent snapshot)."""
        db = self._reader
        db.execute("BEGIN")
        try:
            return fn(db)
        finally:
            db.execute("COMMIT")

    def _one(self, sql: str, params=()):
        return _one(self._reader, sql, params)

    def _all(self, sql: str, params=()):
        return _all(self._reader, sql, params)

def _one(db, sql: str, params=()):
    rows = db.execute(sql, params).fetchall()      # to the end: the statement is done
    return rows[0] if rows else None

def _all(db, sql: str, params=()):
    return db.execute(sql, params).fetchall()
