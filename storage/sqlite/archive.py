"""Message archives (XEP-0313) and archiving preferences (XEP-0441),
:class:`storage.api.ArchiveStore`.

Entries are ordered by ``(timestamp, seq)``; every bound of a query is a
range on one of the indexes of schema version 7 (a user's entries by time,
or by contact then time), so a page costs a few index steps however large
the archive (``scripts/bench --scenarios archive`` measures a million
entries). A user's archive is keyed by an integer, ``archive_users.uid``,
made with the first entry written for an existing account and deleted with
the account. Ids are ``storage.api.new_archive_id``'s: unpredictable, never
reused, and in creation order, so that ``archive_by_id`` grows at its end
(schema version 7 says why that matters).
"""

from __future__ import annotations

import json
from typing import AsyncIterator

from ..api import (ArchivedMessage, ArchiveItemNotFound, ArchivePage, ArchivePrefs,
                   ArchiveQuery, new_archive_id)
from .engine import _all, _in_read_transaction, _one

_USER = "host = ? AND username = ?"
_COLUMNS = "id, timestamp, with_jid, stanza, source, source_id, with_resource"
_INSERT = ("INSERT OR IGNORE INTO archive (uid, id, timestamp, with_jid, with_resource, "
           "stanza, source, source_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
#: users looked up by one statement
_USERS_AT_ONCE = 500


class ArchiveMixin:
    """Per-user archives and their preferences, over the engine."""

    #: the uid the last expiry run stopped at (where the next one begins)
    _expiry_from = 0

    async def archive_message(self, host: str, username: str,
                              entry: ArchivedMessage) -> bool:
        return await self.archive_messages(host, [(username, entry)]) == 1

    async def archive_messages(self, host: str,
                               entries: list[tuple[str, ArchivedMessage]]) -> int:
        for _, entry in entries:
            entry.id = entry.id or new_archive_id()

        def write(db):
            # an entry of an account that is gone is skipped
            uids = _archive_keys(db, host, {username for username, _ in entries})
            before = db.total_changes
            db.executemany(_INSERT, [_row(uids[username], e) for username, e in entries
                                     if username in uids])
            return db.total_changes - before
        return await self._write(write)

    async def import_archive(self, host: str, username: str,
                             entries: list[ArchivedMessage]) -> int:
        for entry in entries:
            entry.id = entry.id or new_archive_id()

        def write(db):
            uid = _archive_keys(db, host, [username]).get(username)
            if uid is None:
                return 0
            before = db.total_changes
            # OR IGNORE: a known id or (source, source_id) is skipped (unique indexes)
            db.executemany(_INSERT, [_row(uid, e) for e in entries])
            return db.total_changes - before
        return await self._write(write)

    async def iter_archive(self, host: str, username: str, *,
                           batch: int = 500) -> AsyncIterator[ArchivedMessage]:
        after = (float("-inf"), -1)
        while True:
            rows = await self._read(_page_after, host, username, after, batch)
            for row in rows:
                yield _entry(row[1:])
            if len(rows) < batch:
                return
            after = (rows[-1][2], rows[-1][0])

    async def query_archive(self, host: str, username: str,
                            query: ArchiveQuery) -> ArchivePage:
        def read(db):
            where, params = _where(db, _archive_key(db, host, username), query)
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
        if query.count and self._waiter is not None:
            # a count walks the whole range (~70 ms for a million entries): on
            # the reader thread, so the event loop goes on meanwhile
            return await self._read_thread.call(_in_read_transaction, self._waiter, read)
        return await self._snapshot(read)

    async def archive_bounds(self, host: str, username: str
                             ) -> tuple[ArchivedMessage, ArchivedMessage] | None:
        def read(db):
            uid = _archive_key(db, host, username)
            ends = [_one(db, f"SELECT {_COLUMNS} FROM archive WHERE uid = ? "
                             f"ORDER BY timestamp {way}, seq {way} LIMIT 1", (uid,))
                    for way in ("", "DESC")]
            return None if ends[0] is None else (_entry(ends[0]), _entry(ends[1]))
        return await self._snapshot(read)

    async def expire_archive(self, before: float, *, limit: int = 1000) -> int:
        """Each user's oldest entries first, found through the user's index by
        time (an index of all entries by age cost every write). The users are
        taken in uid order from where the last call stopped and round to it
        again, so fewer than *limit* deleted means that none is left."""
        def write(db):
            start = self._expiry_from
            found = _expired(db, before, "u.uid >= ?", start, limit)
            if len(found) < limit and start:
                found += _expired(db, before, "u.uid < ?", start, limit - len(found))
            if found:
                self._expiry_from = found[-1][0]
                db.executemany("DELETE FROM archive WHERE seq = ?", [(s,) for _, s in found])
            return len(found)
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


def _archive_keys(db, host: str, usernames) -> dict[str, int]:
    """username → uid of those of *usernames* whose account exists; a user's
    first entry makes the key (in the caller's transaction)."""
    names = list(usernames)
    found: dict[str, int] = {}
    for i in range(0, len(names), _USERS_AT_ONCE):
        chunk = names[i:i + _USERS_AT_ONCE]
        found.update(_all(db, f"SELECT username, uid FROM archive_users WHERE host = ? AND "
                              f"username IN ({', '.join('?' * len(chunk))})", (host, *chunk)))
    for username in names:
        if username not in found:
            cur = db.execute("INSERT INTO archive_users (host, username) SELECT ?, ? "
                             f"WHERE EXISTS (SELECT 1 FROM accounts WHERE {_USER})",
                             (host, username, host, username))
            if cur.rowcount == 1:
                found[username] = cur.lastrowid
    return found


def _expired(db, before: float, users: str, uid: int, limit: int) -> list[tuple[int, int]]:
    """(uid, seq) of up to *limit* entries older than *before* of the *users*
    (a condition on ``u.uid``), each user's oldest first. CROSS JOIN: SQLite
    then loops over the users and looks up each one's old entries; a plain
    JOIN let it walk the whole index by time instead."""
    return _all(db, "SELECT a.uid, a.seq FROM archive_users u CROSS JOIN archive a "
                    "ON a.uid = u.uid "
                    f"WHERE {users} AND a.timestamp < ? ORDER BY a.uid, a.timestamp, a.seq "
                    "LIMIT ?", (uid, before, limit))


def _archive_key(db, host: str, username: str) -> int | None:
    """The user's uid, None if nothing was ever archived for them (then
    ``uid = ?`` matches nothing)."""
    row = _one(db, f"SELECT uid FROM archive_users WHERE {_USER}", (host, username))
    return None if row is None else row[0]


def _page_after(db, host: str, username: str, after: tuple[float, int], batch: int):
    """*batch* entries (with their seq first) after the position *after*."""
    ts, seq = after
    return _all(db, f"SELECT seq, {_COLUMNS} FROM archive WHERE uid = ? AND timestamp >= ? "
                    "AND (timestamp > ? OR seq > ?) ORDER BY timestamp, seq LIMIT ?",
                (_archive_key(db, host, username), ts, ts, seq, batch))


def _row(uid: int, e: ArchivedMessage) -> tuple:
    return (uid, e.id, e.timestamp, e.with_jid, e.with_resource, e.stanza, e.source,
            e.source_id)


def _entry(row) -> ArchivedMessage:
    id_, timestamp, with_jid, stanza, source, source_id, with_resource = row
    return ArchivedMessage(id_, timestamp, with_jid, stanza, source, source_id, with_resource)


def _position(db, uid: int | None, id_: str) -> tuple[float, int]:
    """(timestamp, seq) of the entry *id_*, or :class:`ArchiveItemNotFound`."""
    row = _one(db, "SELECT timestamp, seq FROM archive WHERE id = ? AND uid = ?", (id_, uid))
    if row is None:
        raise ArchiveItemNotFound(id_)
    return row


def _where(db, uid: int | None, q: ArchiveQuery) -> tuple[str, list]:
    """The WHERE clause of *q* and its parameters; each bound is a range on
    ``(timestamp, seq)``, which the by-time and by-contact indexes serve."""
    clauses, params = ["uid = ?"], [uid]
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
        ts, seq = _position(db, uid, id_)
        clauses.append("timestamp >= ? AND (timestamp > ? OR seq > ?)")
        params += [ts, ts, seq]
    for id_ in q.before:
        ts, seq = _position(db, uid, id_)
        clauses.append("timestamp <= ? AND (timestamp < ? OR seq < ?)")
        params += [ts, ts, seq]
    if q.ids is not None:
        for id_ in q.ids:
            _position(db, uid, id_)
        clauses.append(f"id IN ({', '.join('?' * len(q.ids))})")
        params += q.ids
    return " AND ".join(clauses), params
