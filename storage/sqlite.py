"""SQLite storage with a versioned schema: writes through aiosqlite's thread,
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
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import aiosqlite

from server.xmpp.sasl import ScramCredentials

from .api import (Decide, OfflineMessage, PepItem, PepNode, RosterEntry, RosterFull,
                  RosterItem, StorageError, Transfer, TransferContact, UserData)

log = logging.getLogger("xferd.storage")
T = TypeVar("T")

#: Each entry moves the schema one version up. Never edit a released entry;
#: append a new one.
MIGRATIONS: list[str] = [
    # 1: accounts and their SCRAM credentials
    """
    CREATE TABLE accounts (
        host        TEXT NOT NULL,
        username    TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (host, username)
    ) WITHOUT ROWID;
    CREATE TABLE scram_credentials (
        host        TEXT NOT NULL,
        username    TEXT NOT NULL,
        mechanism   TEXT NOT NULL,
        salt        BLOB NOT NULL,
        iterations  INTEGER NOT NULL,
        stored_key  BLOB NOT NULL,
        server_key  BLOB NOT NULL,
        PRIMARY KEY (host, username, mechanism),
        FOREIGN KEY (host, username) REFERENCES accounts (host, username)
            ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
    # 2: the instant messaging core (RFC 6121, XEP-0160/0049/0054/0163/0191)
    """
    CREATE TABLE roster_versions (
        host TEXT NOT NULL, username TEXT NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE roster_items (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        name TEXT,
        subscription TEXT NOT NULL DEFAULT 'none'
            CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask INTEGER NOT NULL DEFAULT 0,
        approved INTEGER NOT NULL DEFAULT 0,
        groups TEXT NOT NULL DEFAULT '[]',          -- JSON list of group names
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE roster_pending_in (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        stanza TEXT NOT NULL,                        -- the whole <presence type='subscribe'/>
        received_at REAL NOT NULL,
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE offline_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host TEXT NOT NULL, username TEXT NOT NULL,
        stanza TEXT NOT NULL, stored_at REAL NOT NULL,
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    );
    CREATE INDEX offline_by_user ON offline_messages (host, username, id);
    CREATE TABLE private_xml (
        host TEXT NOT NULL, username TEXT NOT NULL,
        key TEXT NOT NULL,                           -- {namespace}name
        payload TEXT NOT NULL,
        PRIMARY KEY (host, username, key),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE vcards (
        host TEXT NOT NULL, username TEXT NOT NULL, vcard TEXT NOT NULL,
        PRIMARY KEY (host, username),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE pep_nodes (
        host TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL,
        access_model TEXT NOT NULL, max_items INTEGER NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',           -- JSON of other pubsub# fields
        PRIMARY KEY (host, username, node),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE pep_items (
        host TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL,
        item_id TEXT NOT NULL, payload TEXT NOT NULL,
        published_at REAL NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (host, username, node, item_id),
        FOREIGN KEY (host, username, node) REFERENCES pep_nodes ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE blocklist (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
    # 3: tombstones of deleted accounts that had moved (XEP-0283 §4.3 <gone/>)
    """
    CREATE TABLE tombstones (
        host TEXT NOT NULL, username TEXT NOT NULL,
        moved_to TEXT NOT NULL,                      -- the new bare JID
        deleted_at REAL NOT NULL,
        PRIMARY KEY (host, username)
    ) WITHOUT ROWID;
    """,
    # 4: XEP-0015 account transfer jobs (old server) and authorisations (new server)
    """
    CREATE TABLE transfers (
        host TEXT NOT NULL, username TEXT NOT NULL,
        new_jid TEXT NOT NULL,
        state TEXT NOT NULL,                         -- see server/xmpp/transfer.py
        requester TEXT,                              -- full JID that asked, for the answer
        request_id TEXT,
        detail TEXT,                                 -- error condition or note
        updated_at REAL NOT NULL,
        PRIMARY KEY (host, username)
    ) WITHOUT ROWID;
    CREATE TABLE transfer_contacts (
        host TEXT NOT NULL, username TEXT NOT NULL, jid TEXT NOT NULL,
        item TEXT NOT NULL,                          -- JSON of the roster item snapshot
        status TEXT NOT NULL,                        -- pending | ok | failed | skipped
        condition TEXT,
        PRIMARY KEY (host, username, jid),
        FOREIGN KEY (host, username) REFERENCES transfers ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE TABLE transfer_approvals (
        host TEXT NOT NULL, username TEXT NOT NULL,  -- the new account
        old_jid TEXT NOT NULL,
        state TEXT NOT NULL,                         -- preauthorized | approved | consumed
        expires_at REAL NOT NULL,
        PRIMARY KEY (host, username, old_jid),
        FOREIGN KEY (host, username) REFERENCES accounts ON DELETE CASCADE
    ) WITHOUT ROWID;
    """,
]

SYNCHRONOUS_MODES = ("full", "normal")


class SQLiteStorage:
    """The shipped :class:`storage.api.Storage` implementation."""

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

    # -- accounts -------------------------------------------------------------
    async def create_user(self, host: str, username: str,
                          credentials: Mapping[str, ScramCredentials]) -> bool:
        def write(db):
            if _one(db, "SELECT 1 FROM tombstones WHERE host = ? AND username = ?",
                    (host, username)):
                return False                    # the name of a moved account stays taken
            cur = db.execute(
                "INSERT OR IGNORE INTO accounts (host, username, created_at) VALUES (?, ?, ?)",
                (host, username, time.time()))
            if cur.rowcount == 0:
                return False
            _store_credentials(db, host, username, credentials)
            return True
        return await self._write(write)

    async def user_exists(self, host: str, username: str) -> bool:
        row = self._one(
            "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username))
        return row is not None

    async def get_credentials(self, host: str, username: str,
                              mechanism: str) -> ScramCredentials | None:
        row = self._one(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials "
            "WHERE host = ? AND username = ? AND mechanism = ?", (host, username, mechanism))
        if row is None:
            return None
        salt, iterations, stored_key, server_key = row
        return ScramCredentials(mechanism, bytes(salt), iterations,
                                bytes(stored_key), bytes(server_key))

    async def set_credentials(self, host: str, username: str,
                              credentials: Mapping[str, ScramCredentials]) -> bool:
        def write(db):
            cur = db.execute(
                "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username))
            if cur.fetchone() is None:
                return False
            db.execute("DELETE FROM scram_credentials WHERE host = ? AND username = ?",
                       (host, username))
            _store_credentials(db, host, username, credentials)
            return True
        return await self._write(write)

    async def delete_user(self, host: str, username: str, *,
                          tombstone: str | None = None) -> bool:
        def write(db):
            cur = db.execute("DELETE FROM accounts WHERE host = ? AND username = ?",
                             (host, username))
            if cur.rowcount and tombstone:
                db.execute("INSERT OR REPLACE INTO tombstones (host, username, moved_to, "
                           "deleted_at) VALUES (?, ?, ?, ?)",
                           (host, username, tombstone, time.time()))
            return cur.rowcount > 0
        return await self._write(write)

    async def get_tombstone(self, host: str, username: str) -> str | None:
        row = self._one("SELECT moved_to FROM tombstones WHERE host = ? AND "
                        "username = ?", (host, username))
        return row[0] if row else None

    async def list_users(self, host: str) -> list[str]:
        rows = self._all(
            "SELECT username FROM accounts WHERE host = ? ORDER BY username", (host,))
        return [row[0] for row in rows]


    # -- rosters (RFC 6121) --------------------------------------------------------
    async def get_roster(self, host: str, username: str) -> tuple[int, dict[str, RosterItem]]:
        # version and items in one statement: one snapshot (read at every login)
        rows = self._all(
            "SELECT version, NULL, NULL, NULL, NULL, NULL, NULL FROM roster_versions "
            "WHERE host = ? AND username = ? UNION ALL "
            f"SELECT NULL, {_ITEM_COLUMNS} FROM roster_items WHERE host = ? AND username = ? "
            "ORDER BY 2", (host, username, host, username))
        version = rows[0][0] if rows and rows[0][1] is None else 0
        return version, {r[1]: _item(r[1:]) for r in rows if r[1] is not None}

    async def get_roster_item(self, host: str, username: str, jid: str) -> RosterItem | None:
        row = self._one(f"SELECT {_ITEM_COLUMNS} FROM roster_items "
                        "WHERE host = ? AND username = ? AND jid = ?",
                        (host, username, jid))
        return _item(row) if row else None

    async def update_roster(self, host: str, username: str, contacts: Iterable[str],
                            decide: Decide, *, max_items: int | None = None
                            ) -> tuple[Any, list[tuple[str, RosterItem | None, int]]]:
        """Read, decide and write as one atomic write (see ``storage/api.py``).

        *decide* first runs here, on the entries as last committed; the write
        then reads the entries again inside its transaction and, if any of
        them is not exactly what *decide* saw (a change committed meanwhile),
        runs *decide* again there, on what the transaction holds. Either way
        what is written was decided on the entries it replaces. The writer's
        thread, on the path of every commit, does no deciding in the common
        case: with it deciding every change, the 2,000-contact migration
        spent more time waiting for commits."""
        contacts = tuple(dict.fromkeys(contacts))
        key = (host, username)
        seen = [self._one(_ENTRY_QUERY, (*key, jid)) for jid in contacts]
        plan = _plan_roster_change(contacts, seen, decide)     # raises: nothing is written

        def write(db):
            rows = [_one(db, _ENTRY_QUERY, (*key, jid)) for jid in contacts]
            result, changed, added, removed, requests = \
                plan if rows == seen else _plan_roster_change(contacts, rows, decide)
            if max_items is not None and added > removed:
                (count,) = _one(db, "SELECT COUNT(*) FROM roster_items "
                                    "WHERE host = ? AND username = ?", key)
                if count + added - removed > max_items:
                    raise RosterFull(max_items)
            written = []
            if changed:
                (last,) = _one(db, "INSERT INTO roster_versions (host, username, version) "
                                   "VALUES (?, ?, ?) ON CONFLICT (host, username) DO UPDATE "
                                   "SET version = version + excluded.version RETURNING version",
                               (*key, len(changed)))
                for version, (jid, item) in enumerate(changed, last - len(changed) + 1):
                    _write_roster_change(db, host, username, jid, item, None)
                    written.append((jid, item, version))
            for jid, stanza in requests.items():
                _write_roster_change(db, host, username, jid, _UNCHANGED,
                                     False if stanza is None else stanza)
            return result, written
        return await self._write(write)

    async def save_roster_change(self, host: str, username: str, jid: str,
                                 item: RosterItem | None, *,
                                 pending_in: str | bool | None = None) -> int:
        def write(db):
            _write_roster_change(db, host, username, jid, item, pending_in)
            row = _one(db, "INSERT INTO roster_versions (host, username, version) "
                           "VALUES (?, ?, 1) ON CONFLICT (host, username) "
                           "DO UPDATE SET version = version + 1 RETURNING version",
                       (host, username))
            return row[0]
        return await self._write(write)

    async def get_pending_in(self, host: str, username: str) -> dict[str, str]:
        rows = self._all("SELECT jid, stanza FROM roster_pending_in WHERE host = ? "
                         "AND username = ? ORDER BY received_at", (host, username))
        return {jid: stanza for jid, stanza in rows}

    async def get_pending_request(self, host: str, username: str, jid: str) -> str | None:
        row = self._one("SELECT stanza FROM roster_pending_in WHERE host = ? "
                        "AND username = ? AND jid = ?", (host, username, jid))
        return row[0] if row else None

    # -- offline messages (XEP-0160) ---------------------------------------------------
    async def store_offline(self, host: str, username: str, stanza: str, *, quota: int) -> bool:
        def write(db):
            (count,) = _one(db, "SELECT COUNT(*) FROM offline_messages WHERE host = ? "
                                "AND username = ?", (host, username))
            if count >= quota:
                return False
            db.execute("INSERT INTO offline_messages (host, username, stanza, stored_at) "
                       "VALUES (?, ?, ?, ?)", (host, username, stanza, time.time()))
            return True
        return await self._write(write)

    async def get_offline(self, host: str, username: str) -> list[OfflineMessage]:
        rows = self._all("SELECT id, stanza, stored_at FROM offline_messages "
                         "WHERE host = ? AND username = ? ORDER BY id",
                         (host, username))
        return [OfflineMessage(*row) for row in rows]

    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None:
        def write(db):
            db.executemany("DELETE FROM offline_messages WHERE host = ? AND username = ? "
                           "AND id = ?", [(host, username, i) for i in ids])
        await self._write(write)

    # -- private XML (XEP-0049) and vCards (XEP-0054) ----------------------------------------
    async def get_private(self, host: str, username: str, key: str) -> str | None:
        row = self._one("SELECT payload FROM private_xml WHERE host = ? AND "
                        "username = ? AND key = ?", (host, username, key))
        return row[0] if row else None

    async def set_private(self, host: str, username: str, fragments: Mapping[str, str]) -> None:
        def write(db):
            db.executemany("INSERT OR REPLACE INTO private_xml (host, username, key, "
                           "payload) VALUES (?, ?, ?, ?)",
                           [(host, username, k, v) for k, v in fragments.items()])
        await self._write(write)

    async def get_vcard(self, host: str, username: str) -> str | None:
        row = self._one("SELECT vcard FROM vcards WHERE host = ? AND username = ?",
                        (host, username))
        return row[0] if row else None

    async def set_vcard(self, host: str, username: str, vcard: str | None) -> None:
        def write(db):
            if vcard is None:
                db.execute("DELETE FROM vcards WHERE host = ? AND username = ?",
                           (host, username))
            else:
                db.execute("INSERT OR REPLACE INTO vcards (host, username, vcard) "
                           "VALUES (?, ?, ?)", (host, username, vcard))
        await self._write(write)

    # -- PEP (XEP-0163) -------------------------------------------------------------------------
    async def get_pep_node(self, host: str, username: str, node: str) -> PepNode | None:
        row = self._one("SELECT node, access_model, max_items, config FROM pep_nodes "
                        "WHERE host = ? AND username = ? AND node = ?",
                        (host, username, node))
        return _node(row) if row else None

    async def list_pep_nodes(self, host: str, username: str) -> list[PepNode]:
        rows = self._all("SELECT node, access_model, max_items, config FROM pep_nodes "
                         "WHERE host = ? AND username = ? ORDER BY node",
                         (host, username))
        return [_node(r) for r in rows]

    async def save_pep_node(self, host: str, username: str, node: PepNode) -> None:
        def write(db):
            _upsert_node(db, host, username, node)
            _trim_items(db, host, username, node)
        await self._write(write)

    async def delete_pep_node(self, host: str, username: str, node: str) -> bool:
        def write(db):
            cur = db.execute("DELETE FROM pep_nodes WHERE host = ? AND username = ? "
                             "AND node = ?", (host, username, node))
            return cur.rowcount > 0
        return await self._write(write)

    async def publish_pep_item(self, host: str, username: str, node: PepNode,
                               item: PepItem) -> None:
        def write(db):
            exists = _one(db, "SELECT 1 FROM pep_nodes WHERE host = ? AND username = ? "
                              "AND node = ?", (host, username, node.node))
            if not exists:
                _upsert_node(db, host, username, node)
            (seq,) = _one(db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE "
                              "host = ? AND username = ? AND node = ?",
                              (host, username, node.node))
            db.execute("INSERT OR REPLACE INTO pep_items (host, username, node, item_id, "
                       "payload, published_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (host, username, node.node, item.id, item.payload,
                        item.published_at or time.time(), seq))
            _trim_items(db, host, username, node)
        await self._write(write)

    async def retract_pep_item(self, host: str, username: str, node: str, item_id: str) -> bool:
        def write(db):
            cur = db.execute("DELETE FROM pep_items WHERE host = ? AND username = ? AND "
                             "node = ? AND item_id = ?", (host, username, node, item_id))
            return cur.rowcount > 0
        return await self._write(write)

    async def get_pep_items(self, host: str, username: str, node: str,
                            ids: list[str] | None = None,
                            max_items: int | None = None) -> list[PepItem]:
        rows = self._all("SELECT item_id, payload, published_at FROM pep_items "
                         "WHERE host = ? AND username = ? AND node = ? "
                         "ORDER BY seq DESC", (host, username, node))
        items = [PepItem(*row) for row in rows]
        if ids is not None:
            wanted = set(ids)
            items = [i for i in items if i.id in wanted]
        return items[:max_items] if max_items is not None else items

    # -- whole accounts (XEP-0227 export/import, storage/pie.py) ---------------------------
    async def export_user(self, host: str, username: str) -> UserData | None:
        key = (host, username)
        where = "WHERE host = ? AND username = ?"

        def read(db):
            if not _one(db, f"SELECT 1 FROM accounts {where}", key):
                return None
            data = UserData()
            for mech, salt, iterations, stored_key, server_key in _all(
                    db, "SELECT mechanism, salt, iterations, stored_key, server_key FROM "
                        f"scram_credentials {where} ORDER BY mechanism", key):
                data.credentials[mech] = ScramCredentials(mech, bytes(salt), iterations,
                                                          bytes(stored_key), bytes(server_key))
            data.roster = [_item(r) for r in _all(
                db, f"SELECT {_ITEM_COLUMNS} FROM roster_items {where} ORDER BY jid", key)]
            data.pending_in = {jid: stanza for jid, stanza in _all(
                db, f"SELECT jid, stanza FROM roster_pending_in {where} "
                    "ORDER BY received_at, jid", key)}
            data.offline = [(stanza, at) for stanza, at in _all(
                db, f"SELECT stanza, stored_at FROM offline_messages {where} ORDER BY id", key)]
            data.private = {k: v for k, v in _all(
                db, f"SELECT key, payload FROM private_xml {where} ORDER BY key", key)}
            row = _one(db, f"SELECT vcard FROM vcards {where}", key)
            data.vcard = row[0] if row else None
            for row in _all(db, "SELECT node, access_model, max_items, config FROM "
                                f"pep_nodes {where} ORDER BY node", key):
                items = [PepItem(*r) for r in _all(
                    db, "SELECT item_id, payload, published_at FROM pep_items "
                        f"{where} AND node = ? ORDER BY seq", (*key, row[0]))]
                data.pep.append((_node(row), items))
            data.blocked = [jid for jid, in _all(
                db, f"SELECT jid FROM blocklist {where} ORDER BY jid", key)]
            return data
        return self._snapshot(read)

    async def import_user(self, host: str, username: str, data: UserData) -> bool:
        """Create the account with all its data in one transaction.

        A batch statement per table (``executemany``), and the whole account
        is one hand-over to the writer's thread: a 10,000-user import is
        bound by the disk, not by per-statement overhead.
        """
        now = time.time()

        def write(db):
            cur = db.execute(
                "INSERT INTO accounts (host, username, created_at) SELECT ?, ?, ? WHERE NOT "
                "EXISTS (SELECT 1 FROM tombstones WHERE host = ? AND username = ?) "
                "ON CONFLICT DO NOTHING", (host, username, now, host, username))
            if cur.rowcount == 0:
                return False                  # exists, or deleted after moving (tombstone)
            _store_credentials(db, host, username, data.credentials)
            db.executemany(
                "INSERT OR REPLACE INTO roster_items (host, username, jid, name, subscription, "
                "ask, approved, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(host, username, item.jid, item.name, item.subscription, int(item.ask),
                  int(item.approved), json.dumps(list(item.groups))) for item in data.roster])
            if data.roster:
                db.execute("INSERT INTO roster_versions (host, username, version) "
                           "VALUES (?, ?, 1)", (host, username))
            # received_at only orders the requests: keep the exported order
            db.executemany(
                "INSERT OR REPLACE INTO roster_pending_in (host, username, jid, stanza, "
                "received_at) VALUES (?, ?, ?, ?, ?)",
                [(host, username, jid, stanza, now + i / 1000)
                 for i, (jid, stanza) in enumerate(data.pending_in.items())])
            db.executemany(
                "INSERT INTO offline_messages (host, username, stanza, stored_at) "
                "VALUES (?, ?, ?, ?)", [(host, username, s, at) for s, at in data.offline])
            db.executemany(
                "INSERT OR REPLACE INTO private_xml (host, username, key, payload) "
                "VALUES (?, ?, ?, ?)", [(host, username, k, v) for k, v in data.private.items()])
            if data.vcard is not None:
                db.execute("INSERT INTO vcards (host, username, vcard) VALUES (?, ?, ?)",
                           (host, username, data.vcard))
            db.executemany("INSERT OR IGNORE INTO blocklist (host, username, jid) "
                           "VALUES (?, ?, ?)", [(host, username, j) for j in data.blocked])
            for node, items in data.pep:
                _upsert_node(db, host, username, node)
                db.executemany(
                    "INSERT OR REPLACE INTO pep_items (host, username, node, item_id, payload, "
                    "published_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(host, username, node.node, item.id, item.payload,
                      item.published_at or now, seq) for seq, item in enumerate(items, 1)])
                _trim_items(db, host, username, node)
            return True
        return await self._write(write)

    # -- account transfer (XEP-0015) ------------------------------------------------------------
    async def get_transfer(self, host: str, username: str) -> Transfer | None:
        row = self._one("SELECT new_jid, state, requester, request_id, detail, "
                        "updated_at FROM transfers WHERE host = ? AND username = ?",
                        (host, username))
        if row is None:
            return None
        contacts = self._all("SELECT jid, item, status, condition FROM "
                             "transfer_contacts WHERE host = ? AND username = ? "
                             "ORDER BY jid", (host, username))
        return Transfer(host, username, *row,
                        contacts={jid: TransferContact(jid, item_from_json(item), status, cond)
                                  for jid, item, status, cond in contacts})

    async def list_transfers(self, states: tuple[str, ...]) -> list[tuple[str, str]]:
        marks = ",".join("?" * len(states))
        return [tuple(r) for r in self._all(
            f"SELECT host, username FROM transfers WHERE state IN ({marks})", states)]

    async def save_transfer(self, transfer: Transfer, *, contacts: bool = False) -> None:
        """Store the job's state (and, with *contacts*, replace its contact list)."""
        def write(db):
            # an upsert, not INSERT OR REPLACE: a replace deletes the row first,
            # and the delete would cascade to the job's contacts
            db.execute("INSERT INTO transfers (host, username, new_jid, state, "
                       "requester, request_id, detail, updated_at) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, username) DO UPDATE "
                       "SET new_jid = excluded.new_jid, state = excluded.state, "
                       "requester = excluded.requester, request_id = excluded.request_id, "
                       "detail = excluded.detail, updated_at = excluded.updated_at",
                       (transfer.host, transfer.username, transfer.new_jid, transfer.state,
                        transfer.requester, transfer.request_id, transfer.detail,
                        time.time()))
            if contacts:
                db.execute("DELETE FROM transfer_contacts WHERE host = ? AND username = ?",
                           (transfer.host, transfer.username))
                db.executemany(
                    "INSERT INTO transfer_contacts (host, username, jid, item, status, "
                    "condition) VALUES (?, ?, ?, ?, ?, ?)",
                    [(transfer.host, transfer.username, c.jid, item_to_json(c.item), c.status,
                      c.condition) for c in transfer.contacts.values()])
        await self._write(write)

    async def save_transfer_contact(self, host: str, username: str,
                                    contact: TransferContact) -> None:
        def write(db):
            db.execute("UPDATE transfer_contacts SET status = ?, condition = ? WHERE "
                       "host = ? AND username = ? AND jid = ?",
                       (contact.status, contact.condition, host, username, contact.jid))
        await self._write(write)

    async def get_transfer_approval(self, host: str, username: str,
                                    old_jid: str) -> tuple[str, float] | None:
        row = self._one("SELECT state, expires_at FROM transfer_approvals WHERE "
                        "host = ? AND username = ? AND old_jid = ?",
                        (host, username, old_jid))
        return (row[0], row[1]) if row else None

    async def list_transfer_approvals(self, host: str, username: str) -> list[tuple[str, str, float]]:
        return [tuple(r) for r in self._all(
            "SELECT old_jid, state, expires_at FROM transfer_approvals WHERE host = ? AND "
            "username = ? ORDER BY old_jid", (host, username))]

    async def set_transfer_approval(self, host: str, username: str, old_jid: str,
                                    state: str | None, expires_at: float = 0.0) -> None:
        def write(db):
            if state is None:
                db.execute("DELETE FROM transfer_approvals WHERE host = ? AND "
                           "username = ? AND old_jid = ?", (host, username, old_jid))
            else:
                db.execute("INSERT OR REPLACE INTO transfer_approvals (host, username, "
                           "old_jid, state, expires_at) VALUES (?, ?, ?, ?, ?)",
                           (host, username, old_jid, state, expires_at))
        await self._write(write)

    # -- blocking (XEP-0191) --------------------------------------------------------------------
    async def get_blocklist(self, host: str, username: str) -> list[str]:
        rows = self._all("SELECT jid FROM blocklist WHERE host = ? AND username = ? "
                         "ORDER BY jid", (host, username))
        return [r[0] for r in rows]

    async def set_blocked(self, host: str, username: str, jids: list[str], blocked: bool) -> None:
        def write(db):
            if blocked:
                db.executemany("INSERT OR IGNORE INTO blocklist (host, username, jid) "
                               "VALUES (?, ?, ?)", [(host, username, j) for j in jids])
            elif jids:
                db.executemany("DELETE FROM blocklist WHERE host = ? AND username = ? "
                               "AND jid = ?", [(host, username, j) for j in jids])
            else:
                db.execute("DELETE FROM blocklist WHERE host = ? AND username = ?",
                           (host, username))
        await self._write(write)


_ITEM_COLUMNS = "jid, name, subscription, ask, approved, groups"


def item_to_json(item: RosterItem) -> str:
    return json.dumps({"jid": item.jid, "name": item.name, "subscription": item.subscription,
                       "ask": item.ask, "approved": item.approved, "groups": list(item.groups)})


def item_from_json(text: str) -> RosterItem:
    data = json.loads(text)
    return RosterItem(data["jid"], data.get("name"), data.get("subscription", "none"),
                      bool(data.get("ask")), bool(data.get("approved")),
                      tuple(data.get("groups", ())))


#: what the roster holds about one contact: the item's columns, then the pending request
_ENTRY_QUERY = (
    "SELECT i.jid, i.name, i.subscription, i.ask, i.approved, i.groups, p.stanza "
    "FROM (SELECT ? AS host, ? AS username, ? AS jid) AS k "
    "LEFT JOIN roster_items AS i "
    "ON i.host = k.host AND i.username = k.username AND i.jid = k.jid "
    "LEFT JOIN roster_pending_in AS p "
    "ON p.host = k.host AND p.username = k.username AND p.jid = k.jid")

def _plan_roster_change(contacts: tuple[str, ...], rows: list, decide: Decide):
    """*decide* on the entries in *rows* (``_ENTRY_QUERY``'s, one per contact):
    (result, [(jid, item or None)] changed, items added, items removed,
    requests to write)."""
    entries = {jid: RosterEntry(jid, _item(row[:6]) if row[0] is not None else None, row[6])
               for jid, row in zip(contacts, rows)}
    decision = decide(entries)
    if decision is None:
        return None, [], 0, 0, {}
    changed, added, removed = [], 0, 0
    for jid, item in decision.items.items():
        entry = entries.get(jid)
        if entry is None:
            raise ValueError(f"decide changed {jid}, a contact it was not given")
        if item is None:
            if entry.item is None:
                continue                              # removing what is not there
            removed += 1
        elif entry.item is None:
            added += 1
        changed.append((jid, item))
    if not entries.keys() >= decision.requests.keys():
        raise ValueError("decide changed the request of a contact it was not given")
    return decision.result, changed, added, removed, decision.requests


#: _write_roster_change's *item* when only the pending request changes
_UNCHANGED = object()


def _write_roster_change(db, host: str, username: str, jid: str, item,
                         pending_in: str | bool | None) -> None:
    """Store *item* (None deletes it, ``_UNCHANGED`` leaves it) and, if
    *pending_in* is given, store that request (str) or drop it (False)."""
    if item is None:
        db.execute("DELETE FROM roster_items WHERE host = ? AND username = ? AND jid = ?",
                   (host, username, jid))
    elif item is not _UNCHANGED:
        db.execute(
            "INSERT OR REPLACE INTO roster_items (host, username, jid, name, subscription, "
            "ask, approved, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (host, username, jid, item.name, item.subscription, int(item.ask),
             int(item.approved), json.dumps(list(item.groups))))
    if pending_in is False:
        db.execute("DELETE FROM roster_pending_in WHERE host = ? AND username = ? "
                   "AND jid = ?", (host, username, jid))
    elif isinstance(pending_in, str):
        db.execute("INSERT OR REPLACE INTO roster_pending_in (host, username, jid, "
                   "stanza, received_at) VALUES (?, ?, ?, ?, ?)",
                   (host, username, jid, pending_in, time.time()))


def _item(row) -> RosterItem:
    jid, name, subscription, ask, approved, groups = row
    return RosterItem(jid, name, subscription, bool(ask), bool(approved),
                      tuple(json.loads(groups)))


def _node(row) -> PepNode:
    node, access_model, max_items, config = row
    return PepNode(node, access_model, max_items, json.loads(config))


def _upsert_node(db, host: str, username: str, node: PepNode) -> None:
    db.execute("INSERT INTO pep_nodes (host, username, node, access_model, max_items, "
               "config) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host, username, node) DO "
               "UPDATE SET access_model = excluded.access_model, "
               "max_items = excluded.max_items, config = excluded.config",
               (host, username, node.node, node.access_model, node.max_items,
                json.dumps(node.config)))


def _trim_items(db, host: str, username: str, node: PepNode) -> None:
    db.execute("DELETE FROM pep_items WHERE host = ? AND username = ? AND node = ? AND "
               "seq NOT IN (SELECT seq FROM pep_items WHERE host = ? AND username = ? "
               "AND node = ? ORDER BY seq DESC LIMIT ?)",
               (host, username, node.node, host, username, node.node, node.max_items))


def _one(db, sql: str, params=()):
    rows = db.execute(sql, params).fetchall()      # to the end: the statement is done
    return rows[0] if rows else None


def _all(db, sql: str, params=()):
    return db.execute(sql, params).fetchall()


def _store_credentials(db, host: str, username: str,
                       credentials: Mapping[str, ScramCredentials]) -> None:
    for mechanism, creds in credentials.items():
        if creds.mechanism != mechanism:
            raise ValueError(f"credentials for {creds.mechanism} filed under {mechanism}")
    db.executemany(
        "INSERT INTO scram_credentials (host, username, mechanism, salt, iterations, "
        "stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(host, username, mechanism, creds.salt, creds.iterations, creds.stored_key,
          creds.server_key) for mechanism, creds in credentials.items()])
