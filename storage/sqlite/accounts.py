"""Accounts and their SCRAM credentials (:class:`storage.api.AccountStore`)."""

from __future__ import annotations

import time
from typing import Mapping

from server.xmpp.sasl import ScramCredentials

from .engine import _one


class AccountsMixin:
    """Accounts, credentials and tombstones, over the engine."""

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
        row = await self._one(
            "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username))
        return row is not None

    async def get_credentials(self, host: str, username: str,
                              mechanism: str) -> ScramCredentials | None:
        row = await self._one(
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

    async def replace_credentials(self, host: str, username: str,
                                  expected: Mapping[str, ScramCredentials],
                                  credentials: Mapping[str, ScramCredentials]) -> bool:
        def write(db):
            rows = db.execute(
                "SELECT mechanism, salt, iterations, stored_key, server_key FROM "
                "scram_credentials WHERE host = ? AND username = ?", (host, username))
            now = {mech: ScramCredentials(mech, bytes(salt), iterations, bytes(stored),
                                          bytes(server))
                   for mech, salt, iterations, stored, server in rows}
            if not now or now != dict(expected):
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
        row = await self._one("SELECT moved_to FROM tombstones WHERE host = ? AND "
                              "username = ?", (host, username))
        return row[0] if row else None

    async def list_users(self, host: str) -> list[str]:
        rows = await self._all(
            "SELECT username FROM accounts WHERE host = ? ORDER BY username", (host,))
        return [row[0] for row in rows]


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
