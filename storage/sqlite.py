"""SQLite storage through aiosqlite, with a versioned schema.

Choices, deliberately:

* WAL journal, so readers never wait for the writer and the command-line tools
  (``xferd adduser`` …) can work beside a running server.
* ``synchronous = FULL`` by default: a commit is on disk before we answer, so
  neither ``kill -9`` nor a power cut loses an acknowledged change. ``normal``
  can be configured (survives a process crash, may lose the last commits on
  power loss).
* One connection writes, behind an asyncio lock, and every write method is one
  ``BEGIN IMMEDIATE … COMMIT`` transaction; another connection reads, so reads
  only ever see committed data.
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
import time
from pathlib import Path
from typing import Mapping

import aiosqlite

from server.xmpp.sasl import ScramCredentials

from .api import StorageError

log = logging.getLogger("xferd.storage")

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
        self._reader: aiosqlite.Connection | None = None
        self._lock = None

    # -- life cycle -----------------------------------------------------------
    async def open(self) -> None:
        self._lock = asyncio.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            await self._migrate()
            self._reader = await self._connect()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, aiosqlite.Error):
                raise StorageError(f"cannot open {self.path}: {exc}") from exc
            raise

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        await db.execute("PRAGMA foreign_keys = ON")
        return db

    async def _migrate(self) -> None:
        async with self._writer.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()
        if version > len(MIGRATIONS):
            raise StorageError(
                f"{self.path} has schema version {version}, this xferd knows "
                f"{len(MIGRATIONS)}: it was written by a newer xferd")
        for number in range(version + 1, len(MIGRATIONS) + 1):
            log.info("storage: migrating %s to schema version %d", self.path, number)
            script = (f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\n"
                      f"PRAGMA user_version = {number};\nCOMMIT;")
            try:
                await self._writer.executescript(script)
            except aiosqlite.Error:
                with contextlib.suppress(aiosqlite.Error):
                    await self._writer.execute("ROLLBACK")
                raise
        if os.name == "posix":
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)     # credentials live here

    async def close(self) -> None:
        for db in (self._reader, self._writer):
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
        self._reader = self._writer = None

    async def schema_version(self) -> int:
        async with self._reader.execute("PRAGMA user_version") as cur:
            return (await cur.fetchone())[0]

    @contextlib.asynccontextmanager
    async def _transaction(self):
        """One atomic write: BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error."""
        async with self._lock:
            db = self._writer
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            else:
                await db.execute("COMMIT")

    async def _fetchone(self, sql: str, params=()):
        async with self._reader.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _fetchall(self, sql: str, params=()):
        async with self._reader.execute(sql, params) as cur:
            return await cur.fetchall()

    # -- accounts -------------------------------------------------------------
    async def create_user(self, host: str, username: str,
                          credentials: Mapping[str, ScramCredentials]) -> bool:
        async with self._transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO accounts (host, username, created_at) VALUES (?, ?, ?)",
                (host, username, time.time()))
            if cur.rowcount == 0:
                return False
            await _store_credentials(db, host, username, credentials)
        return True

    async def user_exists(self, host: str, username: str) -> bool:
        row = await self._fetchone(
            "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username))
        return row is not None

    async def get_credentials(self, host: str, username: str,
                              mechanism: str) -> ScramCredentials | None:
        row = await self._fetchone(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials "
            "WHERE host = ? AND username = ? AND mechanism = ?", (host, username, mechanism))
        if row is None:
            return None
        salt, iterations, stored_key, server_key = row
        return ScramCredentials(mechanism, bytes(salt), iterations,
                                bytes(stored_key), bytes(server_key))

    async def set_credentials(self, host: str, username: str,
                              credentials: Mapping[str, ScramCredentials]) -> bool:
        async with self._transaction() as db:
            cur = await db.execute(
                "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username))
            if await cur.fetchone() is None:
                return False
            await db.execute("DELETE FROM scram_credentials WHERE host = ? AND username = ?",
                             (host, username))
            await _store_credentials(db, host, username, credentials)
        return True

    async def delete_user(self, host: str, username: str) -> bool:
        async with self._transaction() as db:
            cur = await db.execute("DELETE FROM accounts WHERE host = ? AND username = ?",
                                   (host, username))
            return cur.rowcount > 0

    async def list_users(self, host: str) -> list[str]:
        rows = await self._fetchall(
            "SELECT username FROM accounts WHERE host = ? ORDER BY username", (host,))
        return [row[0] for row in rows]


async def _store_credentials(db, host: str, username: str,
                             credentials: Mapping[str, ScramCredentials]) -> None:
    for mechanism, creds in credentials.items():
        if creds.mechanism != mechanism:
            raise ValueError(f"credentials for {creds.mechanism} filed under {mechanism}")
        await db.execute(
            "INSERT INTO scram_credentials (host, username, mechanism, salt, iterations, "
            "stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (host, username, mechanism, creds.salt, creds.iterations,
             creds.stored_key, creds.server_key))
