"""Offline messages (XEP-0160, :class:`storage.api.OfflineStore`)."""

from __future__ import annotations

import time

from ..api import OfflineMessage
from .engine import _all, _one

_BY_USER = "FROM offline_messages WHERE host = ? AND username = ?"


class OfflineMixin:
    """Messages kept for users who are offline, over the engine."""

    async def store_offline(self, host: str, username: str, stanza: str, *, quota: int,
                            max_bytes: int | None = None) -> bool:
        size = len(stanza.encode())

        def write(db):
            (count,) = _one(db, f"SELECT COUNT(*) {_BY_USER}", (host, username))
            if count >= quota:
                return False
            if max_bytes is not None:
                # kept by triggers (schema version 6): summing the stanzas instead
                # read all of them, ~4 ms for 10 MB, at every message stored
                row = _one(db, "SELECT bytes FROM offline_usage WHERE host = ? AND "
                               "username = ?", (host, username))
                if (row[0] if row else 0) + size > max_bytes:
                    return False
            db.execute("INSERT INTO offline_messages (host, username, stanza, stored_at) "
                       "VALUES (?, ?, ?, ?)", (host, username, stanza, time.time()))
            return True
        return await self._write(write)

    async def get_offline(self, host: str, username: str) -> list[OfflineMessage]:
        rows = await self._all(f"SELECT id, stanza, stored_at {_BY_USER} ORDER BY id",
                               (host, username))
        return [OfflineMessage(*row) for row in rows]

    async def get_offline_page(self, host: str, username: str, *, after: int = 0,
                               max_count: int = 256,
                               max_bytes: int = 1024 * 1024) -> list[OfflineMessage]:
        def read(db):
            # first the sizes (no text leaves SQLite), then only the rows that fit
            sizes = _all(db, f"SELECT id, LENGTH(CAST(stanza AS BLOB)) {_BY_USER} "
                             "AND id > ? ORDER BY id LIMIT ?",
                         (host, username, after, max_count))
            if not sizes:
                return []
            total, last = 0, sizes[0][0]
            for id_, size in sizes:
                if total and total + size > max_bytes:
                    break
                total, last = total + size, id_
            return _all(db, f"SELECT id, stanza, stored_at {_BY_USER} AND id > ? AND id <= ? "
                            "ORDER BY id", (host, username, after, last))
        rows = await self._snapshot(read)
        return [OfflineMessage(*row) for row in rows]

    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None:
        def write(db):
            db.executemany("DELETE FROM offline_messages WHERE host = ? AND username = ? "
                           "AND id = ?", [(host, username, i) for i in ids])
        await self._write(write)
