"""Private XML storage (XEP-0049, :class:`storage.api.PrivateStore`)."""

from __future__ import annotations

from typing import Mapping

from ..api import QuotaExceeded
from .engine import _one


class PrivateMixin:
    """One XML fragment per (user, key), over the engine."""

    async def get_private(self, host: str, username: str, key: str) -> str | None:
        row = await self._one("SELECT payload FROM private_xml WHERE host = ? AND "
                              "username = ? AND key = ?", (host, username, key))
        return row[0] if row else None

    async def set_private(self, host: str, username: str, fragments: Mapping[str, str], *,
                          max_fragments: int | None = None,
                          max_bytes: int | None = None) -> None:
        def write(db):
            db.executemany("INSERT OR REPLACE INTO private_xml (host, username, key, "
                           "payload) VALUES (?, ?, ?, ?)",
                           [(host, username, k, v) for k, v in fragments.items()])
            if max_fragments is None and max_bytes is None:
                return
            # counted after the write, inside its transaction: replaced fragments
            # count once, and concurrent sets cannot both see room
            count, size = _one(db, "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(payload AS "
                                   "BLOB))), 0) FROM private_xml WHERE host = ? AND "
                                   "username = ?", (host, username))
            if max_fragments is not None and count > max_fragments:
                raise QuotaExceeded("private_max_fragments", max_fragments)
            if max_bytes is not None and size > max_bytes:
                raise QuotaExceeded("private_max_bytes", max_bytes)
        await self._write(write)
