"""Message archives (XEP-0313) and archiving preferences (XEP-0441),
:class:`storage.api.ArchiveStore`.

Entries are ordered by ``(timestamp, seq)``; every bound of a query is a
range on one of the indexes of schema version 7 (by time, or by contact then
time), so a page costs a few index steps however large the archive
(``scripts/bench --scenarios archive`` measures a million entries). Ids are
``storage.api.new_archive_id``'s: unpredictable and never reused (XEP-0313 §3.1).
"""

from __future__ import annotations

import json
from typing import AsyncIterator

from ..api import (ArchivedMessage, ArchiveItemNotFound, ArchivePage, ArchivePrefs,
                   ArchiveQuery, new_archive_id)
from .engine import _all, _one

_USER = "host = ? AND username = ?"
_COLUMNS = "id, timestamp, with_jid, stanza, source, source_id, with_resource"
_INSERT_COLUMNS = ("INSERT OR IGNORE INTO archive (host, username, id, timestamp, with_jid, "
                   "with_resource, stanza, source, source_id)")
_INSERT = f"{_INSERT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_SELECT = f"{_INSERT_COLUMNS} SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?"


class ArchiveMixin:
    """Per-user archives and their preferences, over the engine."""

    async def archive_message(self, host: str, username: str,
                              entry: ArchivedMessage) -> bool:
        return await self.archive_messages(host, [(username, entry)]) == 1

    async def archive_messages(self, host: str,
                               entries: list[tuple[str, ArchivedMessage]]) -> int:
        for _, entry in entries:
            entry.id = entry.id or new_archive_id()
        rows = [(*_row(host, username, e), host, username) for username, e in entries]

        def write(db):
            before = db.total_changes
            # one statement for them all; an entry of an account that is gone is skipped
            db.executemany(f"{_INSERT_SELECT} WHERE EXISTS (SELECT 1 FROM accounts WHERE "
                           f"{_USER})", rows)
            return db.total_changes - before
        return await self._write(write)

    async def import_archive(self, host: str, username: str,
                             entries: list[ArchivedMessage]) -> int:
        for entry in entries:
            entry.id = entry.id or new_archive_id()
        rows = [_row(host, username, e) for e in entries]

        def write(db):
            if not _one(db, f"SELECT 1 FROM accounts WHERE {_USER}", (host, username)):
                return 0
            before = db.total_changes
            # OR IGNORE: a known id or (source, source_id) is skipped (unique indexes)
            db.executemany(_INSERT, rows)
            return db.total_changes - before
        return await self._write(write)

    async def iter_archive(self, host: str, username: str, *,
                           batch: int = 500) -> AsyncIterator[ArchivedMessage]:
        after = (float("-inf"), -1)
        while True:
            rows = await self._all(
                f"SELECT seq, {_COLUMNS} FROM archive WHERE {_USER} AND timestamp >= ? "
                "AND (timestamp > ? OR seq > ?) ORDER BY timestamp, seq LIMIT ?",
                (host, username, after[0], after[0], after[1], batch))
            for row in rows:
                yield _entry(row[1:])
            if len(rows) < batch:
                return
            after = (rows[-1][2], rows[-1][0])

    async def query_archive(self, host: str, username: str,
                            query: ArchiveQuery) -> ArchivePage:
        def read(db):
            where, params = _where(db, host, username, query)
            order = "DESC" if query.from_end else ""
            # a few ids: look each up rather than walk the user's whole archive
            table = "archive INDEXED BY archive_by_id" if query.ids is not None else "archive"
            rows = _all(db, f"SELECT {_COLUMNS} FROM {table} WHERE {where} "
                            f"ORDER BY timestamp {order}, seq {order} LIMIT ?",
                        (*params, query.max + 1))
            complete = len(rows) <= query.max
            rows = rows[:query.max]
            if query.from_end:
                rows.reverse()
            count = None
            if query.count:
                (count,) = _one(db, f"SELECT COUNT(*) FROM archive WHERE {where}", params)
            return ArchivePage([_entry(r) for r in rows], complete, count)
        return await self._snapshot(read)

    async def archive_bounds(self, host: str, username: str
                             ) -> tuple[ArchivedMessage, ArchivedMessage] | None:
        def read(db):
            ends = [_one(db, f"SELECT {_COLUMNS} FROM archive WHERE {_USER} "
                             f"ORDER BY timestamp {way}, seq {way} LIMIT 1", (host, username))
                    for way in ("", "DESC")]
            return None if ends[0] is None else (_entry(ends[0]), _entry(ends[1]))
        return await self._snapshot(read)

    async def expire_archive(self, before: float, *, limit: int = 1000) -> int:
        def write(db):
            cur = db.execute("DELETE FROM archive WHERE seq IN (SELECT seq FROM archive "
                             "WHERE timestamp < ? ORDER BY timestamp LIMIT ?)",
                             (before, limit))
            return cur.rowcount
        return await self._write(write)

    async def get_archive_prefs(self, host: str, username: str) -> ArchivePrefs | None:
        row = await self._one(f"SELECT default_mode, always, never FROM archive_prefs "
                              f"WHERE {_USER}", (host, username))
        if row is None:
            return None
        return ArchivePrefs(row[0], json.loads(row[1]), json.loads(row[2]))

    async def set_archive_prefs(self, host: str, username: str, prefs: ArchivePrefs) -> bool:
        def write(db):
            if not _one(db, f"SELECT 1 FROM accounts WHERE {_USER}", (host, username)):
                return False
            db.execute("INSERT OR REPLACE INTO archive_prefs (host, username, default_mode, "
                       "always, never) VALUES (?, ?, ?, ?, ?)",
                       (host, username, prefs.default, json.dumps(sorted(set(prefs.always))),
                        json.dumps(sorted(set(prefs.never)))))
            return True
        return await self._write(write)


def _row(host: str, username: str, e: ArchivedMessage) -> tuple:
    return (host, username, e.id, e.timestamp, e.with_jid, e.with_resource, e.stanza,
            e.source, e.source_id)


def _entry(row) -> ArchivedMessage:
    id_, timestamp, with_jid, stanza, source, source_id, with_resource = row
    return ArchivedMessage(id_, timestamp, with_jid, stanza, source, source_id, with_resource)


def _position(db, host: str, username: str, id_: str) -> tuple[float, int]:
    """(timestamp, seq) of the entry *id_*, or :class:`ArchiveItemNotFound`."""
    row = _one(db, f"SELECT timestamp, seq FROM archive WHERE {_USER} AND id = ?",
               (host, username, id_))
    if row is None:
        raise ArchiveItemNotFound(id_)
    return row


def _where(db, host: str, username: str, q: ArchiveQuery) -> tuple[str, list]:
    """The WHERE clause of *q* and its parameters; each bound is a range on
    ``(timestamp, seq)``, which the by-time and by-contact indexes serve."""
    clauses, params = [_USER], [host, username]
    if q.with_jid is not None:
        clauses.append("with_jid = ?")
        params.append(q.with_jid)
        if q.with_resource is not None:
            clauses.append("with_resource = ?")
            params.append(q.with_resource)
    if q.start is not None:
        clauses.append("timestamp >= ?")
        params.append(q.start)
    if q.end is not None:
        clauses.append("timestamp <= ?")
        params.append(q.end)
    for id_ in q.after:
        ts, seq = _position(db, host, username, id_)
        clauses.append("timestamp >= ? AND (timestamp > ? OR seq > ?)")
        params += [ts, ts, seq]
    for id_ in q.before:
        ts, seq = _position(db, host, username, id_)
        clauses.append("timestamp <= ? AND (timestamp < ? OR seq < ?)")
        params += [ts, ts, seq]
    if q.ids is not None:
        for id_ in q.ids:
            _position(db, host, username, id_)
        clauses.append(f"id IN ({', '.join('?' * len(q.ids))})")
        params += q.ids
    return " AND ".join(clauses), params
