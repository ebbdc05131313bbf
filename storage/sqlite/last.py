"""Last activity (XEP-0012, :class:`storage.api.LastActivityStore`)."""

from __future__ import annotations

from ..api import LastActivity


class LastActivityMixin:
    """Each user's last logout, over the engine: one row per user, replaced
    by one statement (its own transaction); deleted with the account."""

    async def get_last_activity(self, host: str, username: str) -> LastActivity | None:
        row = await self._one("SELECT logout_at, status FROM last_activity "
                              "WHERE host = ? AND username = ?", (host, username))
        return LastActivity(*row) if row else None

    async def set_last_activity(self, host: str, username: str,
                                activity: LastActivity) -> bool:
        def write(db):
            # only for an account that exists: one deleted while its last
            # session was closing leaves nothing behind (and no foreign-key error)
            cursor = db.execute(
                "INSERT OR REPLACE INTO last_activity (host, username, logout_at, status) "
                "SELECT host, username, ?, ? FROM accounts WHERE host = ? AND username = ?",
                (activity.logout_at, activity.status, host, username))
            return cursor.rowcount == 1
        return await self._write(write)
