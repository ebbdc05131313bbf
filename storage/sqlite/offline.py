"""Offline messages (XEP-0160, :class:`storage.api.OfflineStore`)."""

from __future__ import annotations

import time

from ..api import OfflineMessage
from .engine import _one


class OfflineMixin:
    """Messages kept for users who are offline, over the engine."""

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
        rows = await self._all("SELECT id, stanza, stored_at FROM offline_messages "
                               "WHERE host = ? AND username = ? ORDER BY id",
                               (host, username))
        return [OfflineMessage(*row) for row in rows]

    async def delete_offline(self, host: str, username: str, ids: list[int]) -> None:
        def write(db):
            db.executemany("DELETE FROM offline_messages WHERE host = ? AND username = ? "
                           "AND id = ?", [(host, username, i) for i in ids])
        await self._write(write)
