"""Private XML storage (XEP-0049, :class:`storage.api.PrivateStore`)."""

from __future__ import annotations

from typing import Mapping


class PrivateMixin:
    """One XML fragment per (user, key), over the engine."""

    async def get_private(self, host: str, username: str, key: str) -> str | None:
        row = await self._one("SELECT payload FROM private_xml WHERE host = ? AND "
                              "username = ? AND key = ?", (host, username, key))
        return row[0] if row else None

    async def set_private(self, host: str, username: str, fragments: Mapping[str, str]) -> None:
        def write(db):
            db.executemany("INSERT OR REPLACE INTO private_xml (host, username, key, "
                           "payload) VALUES (?, ?, ?, ?)",
                           [(host, username, k, v) for k, v in fragments.items()])
        await self._write(write)
