"""The SQLite engine under every feature store: connections, group commit,
reads and life cycle. Only public APIs: the standard ``sqlite3``, ``threading``
and ``queue`` modules and ``loop.call_soon_threadsafe``, on threads this
engine owns (:class:`Worker`).

Choices, deliberately:

* WAL journal, so readers do not wait for the writer and the command-line
  tools (``xferd adduser`` …) can work beside a running server.
* ``synchronous = FULL`` by default: a commit is on disk before we answer, so
  neither ``kill -9`` nor a power cut loses an acknowledged change. ``normal``
  can be configured (survives a process crash, may lose the last commits on
  power loss). ``tests/integration/test_crash.py`` SIGKILLs the server and
  ``xferd import`` in the middle of writes and checks this.
* One connection writes, on a thread of its own (:class:`Worker`), so the
  event loop never waits for the disk or for a lock. Each write method is
  one function handed to that thread whole (:meth:`Engine._write`), not one
  statement at a time: a hand-over costs two thread wake-ups — ~25 µs of CPU
  on a quiet machine, far more when the loop and the thread fight for the
  GIL on a busy one — against ~5 µs for a statement. Per statement, they
  were most of the server's CPU in the migration benchmark, and aiosqlite's
  public API hands over one statement per call (running a function on its
  thread needs its private ``Connection._execute``): that is why the writer
  is a plain ``sqlite3`` connection on our own thread, and xferd no longer
  depends on aiosqlite.
  :class:`Worker` is a thread and a ``queue.SimpleQueue``, not a one-worker
  ``ThreadPoolExecutor`` with ``loop.run_in_executor``: measured over 20,000
  sequential hand-overs, the executor took ~48 µs of CPU each, aiosqlite's
  private call and this worker ~25 µs; in the 2,000-contact XEP-0283 move
  (``scripts/bench --scenarios migration``) the executor cost the servers
  ~9 % more CPU, the worker nothing measurable.
* Group commit: the writes queued while the thread is busy go over together,
  each inside its own ``SAVEPOINT`` of one transaction (an error undoes only
  its own work), and one ``COMMIT`` — one fsync — acknowledges them all: one
  hand-over per batch. A write method returns only once that COMMIT is done.
* Reads first try the event loop's thread, on a read-only connection with
  ``busy_timeout = 0``: a few rows out of the page cache take microseconds,
  less than any hand-over, and in WAL mode a reader normally never waits.
  When it would have to — SQLite answers SQLITE_BUSY/LOCKED: another process
  runs WAL recovery, or holds an exclusive lock on the file, … —
  the read is done again on a reader thread of our own, on a third
  connection with the real busy timeout, and awaited: one lock stall no
  longer freezes every connection of the server
  (``tests/integration/test_storage_stall.py``). ``slow_reads`` counts them.
  Not covered: a read that finds every WAL read-mark lock taken by another
  process is retried inside SQLite (up to ~10 s, then SQLITE_PROTOCOL)
  whatever the busy timeout; SQLite itself only holds them all for an instant.
* The schema and its migrations are in ``schema.py``.
* Private files whatever the umask: the database (SCRAM keys, rosters,
  messages) is created with mode 0600 before SQLite opens it, in a directory
  made 0700, and SQLite gives its ``-wal`` and ``-shm`` the database's mode
  when it creates them (``os_unix.c``: robust_open with the main file's
  permissions) — so none of them is ever readable by others, even for an
  instant. An older database readable by others is made private (with a
  warning) when opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from ..api import StorageError, StorageFull
from .schema import SYNCHRONOUS_MODES, migrate, set_up

log = logging.getLogger("xferd.storage")
T = TypeVar("T")

#: how long the writer and the off-loop reader wait for a lock (milliseconds)
BUSY_TIMEOUT_MS = 10000
#: primary result codes that mean "would have to wait for a lock"
_WAIT_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
#: … and "no room to write": SQLITE_FULL (the disk is full, ENOSPC, or the
#: database reached max_page_count) and SQLITE_IOERR (a write failed: EFBIG
#: past a file size limit, EDQUOT past a quota, EIO)
_NO_ROOM_CODES = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
#: seconds between two warnings about a full disk in the log
_FULL_WARNING_EVERY = 10.0


def would_wait(exc: BaseException) -> bool:
    """Did SQLite refuse because another connection holds a lock (BUSY/LOCKED,
    extended codes included)?"""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and \
        (code & 0xFF) in _WAIT_CODES


def out_of_room(exc: BaseException) -> bool:
    """Did a write fail for want of room (or of a working disk), not because
    of what it wrote? Then the same write may succeed later."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and \
        (code & 0xFF) in _NO_ROOM_CODES


def _failed_write(exc: Exception, lost: bool = False) -> Exception:
    """What the caller of a failed write gets: :class:`StorageFull` if there
    was no room (the stanza handler's caller answers it), else the error
    itself (a write that was wrong), or if *lost*, a StorageError saying the
    write was undone with its batch."""
    if out_of_room(exc):
        full = StorageFull(f"not written: {exc}")
        full.__cause__ = exc
        return full
    return StorageError(f"not committed: {exc!r}") if lost else exc


class Worker:
    """A thread that runs the calls handed to it, in order, for the event loop.

    :meth:`call` queues ``fn(*args)`` and returns an asyncio future for its
    outcome; the thread sets it through ``loop.call_soon_threadsafe``. A call
    whose caller was cancelled still runs whole (only its outcome is
    dropped). :meth:`stop` lets the calls queued before it finish, then ends
    the thread.
    """

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        # a daemon: a store never closed must not keep the process alive; one
        # that is closed waits for its thread (stop)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., T], *args) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        self._calls.put((done, fn, args))
        return done

    async def stop(self) -> None:
        stopped = asyncio.get_running_loop().create_future()
        self._calls.put((stopped, None, ()))
        await stopped

    def _run(self) -> None:
        while True:
            done, fn, args = self._calls.get()
            if fn is None:
                _hand_back(done, True, None)
                return
            try:
                outcome = True, fn(*args)
            except BaseException as exc:        # handed to the caller, like a result
                outcome = False, exc
            _hand_back(done, *outcome)


def _hand_back(done: asyncio.Future, ok: bool, value) -> None:
    with contextlib.suppress(RuntimeError):     # the loop is closed: nobody is waiting
        done.get_loop().call_soon_threadsafe(_settle_future, done, ok, value)


def _settle_future(done: asyncio.Future, ok: bool, value) -> None:
    if done.done():                             # its caller was cancelled
        return
    if ok:
        done.set_result(value)
    else:
        done.set_exception(value)


def make_private(path: Path) -> None:
    """The database file at *path* and its directory, private (module docstring):
    created empty with mode 0600 if missing (SQLite takes an empty file for a
    new database); an existing one, and its -wal/-shm, narrowed to 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, 0o600)            # whatever the umask took away
        os.close(fd)
        return
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = name.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            log.warning("storage: %s was readable by others (mode %o): made private (0600)",
                        name, mode)
            os.chmod(name, 0o600)


class Engine:
    """What every feature store builds on: the connections, :meth:`_write`
    (group commit) and the reads (:meth:`_one`, :meth:`_all`, :meth:`_snapshot`)."""

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "full",
                 max_size: int = 0):
        if synchronous not in SYNCHRONOUS_MODES:
            raise StorageError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = Path(path)
        self.synchronous = synchronous
        #: bytes the database file may grow to (0: as far as the disk allows)
        self.max_size = max_size
        self._full_warned_at: float | None = None
        self._writer: sqlite3.Connection | None = None     # on the writer thread only
        self._reader: sqlite3.Connection | None = None     # on the event loop's thread
        self._waiter: sqlite3.Connection | None = None     # on the reader thread only
        self._write_thread: Worker | None = None
        self._read_thread: Worker | None = None
        self._queue: list[tuple[Callable, asyncio.Future]] = []   # writes for the next batch
        self._flusher: asyncio.Task | None = None
        #: how many COMMITs acknowledged how many writes (for the tests and the log)
        self.commits = self.committed_writes = 0
        #: reads that met a lock on the loop's thread and were done on the reader thread
        self.slow_reads = 0

    # -- life cycle -----------------------------------------------------------
    async def open(self) -> None:
        make_private(self.path)
        try:
            self._write_thread = Worker("xferd-sqlite-write")
            self._read_thread = Worker("xferd-sqlite-read")
            self._writer = await self._write_thread.call(self._connect)
            await self._on_writer_thread(set_up, self.synchronous, BUSY_TIMEOUT_MS)
            await self._on_writer_thread(migrate, self.path)
            if self.max_size:
                await self._on_writer_thread(_cap_size, self.max_size)
            # set up off the loop too: a lock held by someone else must not stall start-up
            self._reader, self._waiter = await self._read_thread.call(self._open_readers)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, (sqlite3.Error, ValueError)):
                raise StorageError(f"cannot open {self.path}: {exc}") from exc
            raise

    def _connect(self) -> sqlite3.Connection:
        # autocommit: the engine says BEGIN/COMMIT itself. check_same_thread is
        # off because a connection is opened on one thread and used on another;
        # each is still used by one thread at a time (see the attributes).
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def _open_readers(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        readers = []
        try:
            for timeout in (0, BUSY_TIMEOUT_MS):
                db = self._connect()
                readers.append(db)
                set_up(db, self.synchronous, BUSY_TIMEOUT_MS)
                db.execute(f"PRAGMA busy_timeout = {timeout}")
                db.execute("PRAGMA query_only = ON")
        except BaseException:
            for db in readers:
                db.close()
            raise
        return readers[0], readers[1]

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()
        writer, self._writer = self._writer, None
        waiter, self._waiter = self._waiter, None
        threads = ((writer, self._write_thread), (waiter, self._read_thread))
        self._write_thread = self._read_thread = None
        for db, thread in threads:
            if thread is None:
                continue
            try:
                if db is not None:
                    # on its own thread, once what that thread is still doing is done
                    with contextlib.suppress(Exception):
                        await thread.call(db.close)
            finally:
                await thread.stop()

    async def schema_version(self) -> int:
        return (await self._one("PRAGMA user_version"))[0]

    # -- writes: one hand-over and one COMMIT per batch (group commit) ----------------------
    async def _on_writer_thread(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn(connection, *args)`` on the writer's thread: one hand-over."""
        if self._writer is None:
            raise StorageError(f"{self.path} is closed")
        return await self._write_thread.call(fn, self._writer, *args)

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
                failed = _failed_write(exc) if out_of_room(exc) else \
                    StorageError(f"write interrupted: {exc!r}")
                outcomes = [(False, failed)] * len(batch)
                if not isinstance(exc, Exception):
                    self._settle(batch, outcomes)
                    raise
            self._settle(batch, outcomes)

    def _settle(self, batch, outcomes) -> None:
        written = sum(ok for ok, _ in outcomes)
        if written:
            self.commits += 1
            self.committed_writes += written
        full = next((value for ok, value in outcomes if isinstance(value, StorageFull)), None)
        if full is not None:
            self._warn_full(full)
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
                outcomes.append((False, _failed_write(exc)))
                if not db.in_transaction:
                    # SQLite gave up the whole transaction (disk full, I/O error):
                    # what the batch wrote before is gone too, and nothing more is tried
                    lost = _failed_write(exc, lost=True)
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
            failed = _failed_write(exc, lost=True)
            return [(False, failed if ok else value) for ok, value in outcomes]
        return outcomes

    def _warn_full(self, full: StorageFull) -> None:
        """Tell the administrator, at most every _FULL_WARNING_EVERY seconds."""
        now = time.monotonic()
        if self._full_warned_at is None or now - self._full_warned_at >= _FULL_WARNING_EVERY:
            self._full_warned_at = now
            log.warning("storage: writes to %s are refused (%s); each is answered with "
                        "<resource-constraint/> until there is room", self.path, full.__cause__)

    # -- reads --------------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args) -> T:
        """``fn(db, *args)`` on the loop's thread if no lock is in the way,
        else on the reader thread, waiting for the lock there (see the module
        docstring). *fn* must only read: it may run twice."""
        if self._reader is None:
            raise StorageError(f"{self.path} is closed")
        try:
            return fn(self._reader, *args)
        except sqlite3.OperationalError as exc:
            if not would_wait(exc):
                raise
        if self._waiter is None:
            raise StorageError(f"{self.path} is closed")
        self.slow_reads += 1
        log.debug("storage: a read met a lock; waiting for it off the event loop")
        return await self._read_thread.call(fn, self._waiter, *args)

    async def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Reads that must agree with each other: ``fn(db)`` inside one read
        transaction (WAL gives it a consistent snapshot)."""
        return await self._read(_in_read_transaction, fn)

    async def _one(self, sql: str, params=()):
        return await self._read(_one, sql, params)

    async def _all(self, sql: str, params=()):
        return await self._read(_all, sql, params)


def _in_read_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN")
    try:
        result = fn(db)
    except BaseException:
        if db.in_transaction:                   # never leave a reader on an old snapshot
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _one(db, sql: str, params=()):
    rows = db.execute(sql, params).fetchall()      # to the end: the statement is done
    return rows[0] if rows else None


def _all(db, sql: str, params=()):
    return db.execute(sql, params).fetchall()


def _cap_size(db: sqlite3.Connection, max_size: int) -> None:
    """Let the database file grow to *max_size* bytes; past that a write fails
    as on a full disk (SQLITE_FULL). The writer's setting only: readers never
    grow the file."""
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.execute(f"PRAGMA max_page_count = {max(1, max_size // page_size)}")
