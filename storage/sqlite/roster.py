"""Rosters and pending inbound subscription requests (RFC 6121,
:class:`storage.api.RosterStore`)."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from ..api import Decide, RosterEntry, RosterFull, RosterItem
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

    async def update_roster(self, host: str, username: str, contacts: Iterable[str],
                            decide: Decide, *, max_items: int | None = None
                            ) -> tuple[Any, list[tuple[str, RosterItem | None, int]]]:
        """Read, decide and write as one atomic write (see ``storage/api.py``).

        *decide* first runs here, on the entries as last committed; the write
        then reads the entries again inside its transaction and, if any of
        them is not exactly what *decide* saw (a change committed meanwhile),
        runs *decide* again there, on what the transaction holds. Either way
        what is written was decided on the entries it replaces. The writer's
        thread, on the path of every commit, does no deciding in the common
        case: with it deciding every change, the 2,000-contact migration
        spent more time waiting for commits. A decision that changes nothing
        writes nothing: it was made on one committed snapshot, which is then
        the whole of its transaction."""
        contacts = tuple(dict.fromkeys(contacts))
        key = (host, username)

        def read(db):
            return [_one(db, _ENTRY_QUERY, (*key, jid)) for jid in contacts]
        seen = await (self._read(read) if len(contacts) == 1 else self._snapshot(read))
        plan = _plan_roster_change(contacts, seen, decide)     # raises: nothing is written
        result, changed, _, _, requests = plan
        if not changed and not requests:
            return result, []               # e.g. most subscription stanzas of a move

        def write(db):
            rows = read(db)
            result, changed, added, removed, requests = \
                plan if rows == seen else _plan_roster_change(contacts, rows, decide)
            if max_items is not None and added > removed:
                (count,) = _one(db, "SELECT COUNT(*) FROM roster_items "
                                    "WHERE host = ? AND username = ?", key)
                if count + added - removed > max_items:
                    raise RosterFull(max_items)
            written = []
            if changed:
                (last,) = _one(db, "INSERT INTO roster_versions (host, username, version) "
                                   "VALUES (?, ?, ?) ON CONFLICT (host, username) DO UPDATE "
                                   "SET version = version + excluded.version RETURNING version",
                               (*key, len(changed)))
                for version, (jid, item) in enumerate(changed, last - len(changed) + 1):
                    _write_roster_change(db, host, username, jid, item, None)
                    written.append((jid, item, version))
            for jid, stanza in requests.items():
                _write_roster_change(db, host, username, jid, _UNCHANGED,
                                     False if stanza is None else stanza)
            return result, written
        return await self._write(write)

    async def save_roster_change(self, host: str, username: str, jid: str,
                                 item: RosterItem | None, *,
                                 pending_in: str | bool | None = None) -> int:
        def write(db):
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


#: what the roster holds about one contact: the item's columns, then the pending request
_ENTRY_QUERY = (
    "SELECT i.jid, i.name, i.subscription, i.ask, i.approved, i.groups, p.stanza "
    "FROM (SELECT ? AS host, ? AS username, ? AS jid) AS k "
    "LEFT JOIN roster_items AS i "
    "ON i.host = k.host AND i.username = k.username AND i.jid = k.jid "
    "LEFT JOIN roster_pending_in AS p "
    "ON p.host = k.host AND p.username = k.username AND p.jid = k.jid")

def _plan_roster_change(contacts: tuple[str, ...], rows: list, decide: Decide):
    """*decide* on the entries in *rows* (``_ENTRY_QUERY``'s, one per contact):
    (result, [(jid, item or None)] changed, items added, items removed,
    requests to write)."""
    entries = {jid: RosterEntry(jid, _item(row[:6]) if row[0] is not None else None, row[6])
               for jid, row in zip(contacts, rows)}
    decision = decide(entries)
    if decision is None:
        return None, [], 0, 0, {}
    changed, added, removed = [], 0, 0
    for jid, item in decision.items.items():
        entry = entries.get(jid)
        if entry is None:
            raise ValueError(f"decide changed {jid}, a contact it was not given")
        if item is None:
            if entry.item is None:
                continue                              # removing what is not there
            removed += 1
        elif entry.item is None:
            added += 1
        changed.append((jid, item))
    if not entries.keys() >= decision.requests.keys():
        raise ValueError("decide changed the request of a contact it was not given")
    return decision.result, changed, added, removed, decision.requests


#: _write_roster_change's *item* when only the pending request changes
_UNCHANGED = object()


def _write_roster_change(db, host: str, username: str, jid: str, item,
                         pending_in: str | bool | None) -> None:
    """Store *item* (None deletes it, ``_UNCHANGED`` leaves it) and, if
    *pending_in* is given, store that request (str) or drop it (False)."""
    if item is None:
        db.execute("DELETE FROM roster_items WHERE host = ? AND username = ? AND jid = ?",
                   (host, username, jid))
    elif item is not _UNCHANGED:
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
