"""Blocklists (XEP-0191, :class:`storage.api.BlockingStore`)."""

from __future__ import annotations


class BlockingMixin:
    """Each user's blocked JIDs, over the engine."""

    async def get_blocklist(self, host: str, username: str) -> list[str]:
        rows = await self._all("SELECT jid FROM blocklist WHERE host = ? AND username = ? "
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
