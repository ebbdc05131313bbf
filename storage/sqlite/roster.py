"""Rosters and pending inbound subscription requests (RFC 6121,
:class:`storage.api.RosterStore`)."""

from __future__ import annotations

import json
import time

from ..api import RosterItem
from .engine import _one


class RosterMixin:
    """Roster items, roster versions and pending-in requests, over the engine."""

    async def get_roster(self, host: str, username: str) -> tuple[int, dict[str, RosterItem]]:
        # version and items in one statement: one snapshot (read at every login)
        rows = await self._all(
            "SELECT version, NULL, NULL, NULL, NULL, NULL, NULL FROM roster_versions "
            "WHERE host = ? AND username = ? UNION ALL "
            f"SELECT NULL, {_ITEM_COLUMNS} FROM roster_items WHERE host = ? AND username = ? "
            "ORDER BY 2", (host, username, host, username))
        version = rows[0][0] if rows and rows[0][1] is None else 0
        return version, {r[1]: _item(r[1:]) for r in rows if r[1] is not None}

    async def get_roster_item(self, host: str, username: str, jid: str) -> RosterItem | None:
        row = await self._one(f"SELECT {_ITEM_COLUMNS} FROM roster_items "
                              "WHERE host = ? AND username = ? AND jid = ?",
                              (host, username, jid))
        return _item(row) if row else None

    async def count_roster_items(self, host: str, username: str) -> int:
        (count,) = await self._one("SELECT COUNT(*) FROM roster_items "
                                   "WHERE host = ? AND username = ?", (host, username))
        return count

    async def save_roster_change(self, host: str, username: str, jid: str,
                                 item: RosterItem | None, *,
                                 pending_in: str | bool | None = None) -> int:
        return await self.save_roster_changes(host, username, [(jid, item, pending_in)])

    async def save_roster_changes(self, host: str, username: str,
                                  changes: list[tuple[str, RosterItem | None, str | bool | None]]
                                  ) -> int:
        def write(db):
            for jid, item, pending_in in changes:
                _write_roster_change(db, host, username, jid, item, pending_in)
            row = _one(db, "INSERT INTO roster_versions (host, username, version) "
                           "VALUES (?, ?, 1) ON CONFLICT (host, username) "
                           "DO UPDATE SET version = version + 1 RETURNING version",
                       (host, username))
            return row[0]
        return await self._write(write)

    async def get_pending_in(self, host: str, username: str) -> dict[str, str]:
        rows = await self._all("SELECT jid, stanza FROM roster_pending_in WHERE host = ? "
                               "AND username = ? ORDER BY received_at", (host, username))
        return {jid: stanza for jid, stanza in rows}

    async def get_pending_request(self, host: str, username: str, jid: str) -> str | None:
        row = await self._one("SELECT stanza FROM roster_pending_in WHERE host = ? "
                              "AND username = ? AND jid = ?", (host, username, jid))
        return row[0] if row else None


_ITEM_COLUMNS = "jid, name, subscription, ask, approved, groups"


def _write_roster_change(db, host: str, username: str, jid: str,
                         item: RosterItem | None, pending_in: str | bool | None) -> None:
    if item is None:
        db.execute("DELETE FROM roster_items WHERE host = ? AND username = ? AND jid = ?",
                   (host, username, jid))
    else:
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
