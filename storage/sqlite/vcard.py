"""vCards (XEP-0054, :class:`storage.api.VCardStore`)."""

from __future__ import annotations


class VCardMixin:
    """One vCard per user, over the engine."""

    async def get_vcard(self, host: str, username: str) -> str | None:
        row = await self._one("SELECT vcard FROM vcards WHERE host = ? AND username = ?",
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
