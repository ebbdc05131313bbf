"""Whole accounts at once: XEP-0227 export and import (storage/pie.py,
:class:`storage.api.PortableStore`)."""

from __future__ import annotations

import json
import time

from server.xmpp.sasl import ScramCredentials

from ..api import PepItem, UserData
from .accounts import _store_credentials
from .engine import _all, _one
from .pep import _node, _trim_items, _upsert_node
from .roster import _ITEM_COLUMNS, _item


class PortableMixin:
    """Export and import of whole accounts, over the engine."""

    async def export_user(self, host: str, username: str) -> UserData | None:
        key = (host, username)
        where = "WHERE host = ? AND username = ?"

        def read(db):
            if not _one(db, f"SELECT 1 FROM accounts {where}", key):
                return None
            data = UserData()
            for mech, salt, iterations, stored_key, server_key in _all(
                    db, "SELECT mechanism, salt, iterations, stored_key, server_key FROM "
                        f"scram_credentials {where} ORDER BY mechanism", key):
                data.credentials[mech] = ScramCredentials(mech, bytes(salt), iterations,
                                                          bytes(stored_key), bytes(server_key))
            data.roster = [_item(r) for r in _all(
                db, f"SELECT {_ITEM_COLUMNS} FROM roster_items {where} ORDER BY jid", key)]
            data.pending_in = {jid: stanza for jid, stanza in _all(
                db, f"SELECT jid, stanza FROM roster_pending_in {where} "
                    "ORDER BY received_at, jid", key)}
            data.offline = [(stanza, at) for stanza, at in _all(
                db, f"SELECT stanza, stored_at FROM offline_messages {where} ORDER BY id", key)]
            data.private = {k: v for k, v in _all(
                db, f"SELECT key, payload FROM private_xml {where} ORDER BY key", key)}
            row = _one(db, f"SELECT vcard FROM vcards {where}", key)
            data.vcard = row[0] if row else None
            for row in _all(db, "SELECT node, access_model, max_items, config FROM "
                                f"pep_nodes {where} ORDER BY node", key):
                items = [PepItem(*r) for r in _all(
                    db, "SELECT item_id, payload, published_at FROM pep_items "
                        f"{where} AND node = ? ORDER BY seq", (*key, row[0]))]
                data.pep.append((_node(row), items))
            data.blocked = [jid for jid, in _all(
                db, f"SELECT jid FROM blocklist {where} ORDER BY jid", key)]
            return data
        return await self._snapshot(read)

    async def import_user(self, host: str, username: str, data: UserData) -> bool:
        """Create the account with all its data in one transaction.

        A batch statement per table (``executemany``), and the whole account
        is one hand-over to the writer's thread: a 10,000-user import is
        bound by the disk, not by per-statement overhead.
        """
        now = time.time()

        def write(db):
            cur = db.execute(
                "INSERT INTO accounts (host, username, created_at) SELECT ?, ?, ? WHERE NOT "
                "EXISTS (SELECT 1 FROM tombstones WHERE host = ? AND username = ?) "
                "ON CONFLICT DO NOTHING", (host, username, now, host, username))
            if cur.rowcount == 0:
                return False                  # exists, or deleted after moving (tombstone)
            _store_credentials(db, host, username, data.credentials)
            db.executemany(
                "INSERT OR REPLACE INTO roster_items (host, username, jid, name, subscription, "
                "ask, approved, groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(host, username, item.jid, item.name, item.subscription, int(item.ask),
                  int(item.approved), json.dumps(list(item.groups))) for item in data.roster])
            if data.roster:
                db.execute("INSERT INTO roster_versions (host, username, version) "
                           "VALUES (?, ?, 1)", (host, username))
            # received_at only orders the requests: keep the exported order
            db.executemany(
                "INSERT OR REPLACE INTO roster_pending_in (host, username, jid, stanza, "
                "received_at) VALUES (?, ?, ?, ?, ?)",
                [(host, username, jid, stanza, now + i / 1000)
                 for i, (jid, stanza) in enumerate(data.pending_in.items())])
            db.executemany(
                "INSERT INTO offline_messages (host, username, stanza, stored_at) "
                "VALUES (?, ?, ?, ?)", [(host, username, s, at) for s, at in data.offline])
            db.executemany(
                "INSERT OR REPLACE INTO private_xml (host, username, key, payload) "
                "VALUES (?, ?, ?, ?)", [(host, username, k, v) for k, v in data.private.items()])
            if data.vcard is not None:
                db.execute("INSERT INTO vcards (host, username, vcard) VALUES (?, ?, ?)",
                           (host, username, data.vcard))
            db.executemany("INSERT OR IGNORE INTO blocklist (host, username, jid) "
                           "VALUES (?, ?, ?)", [(host, username, j) for j in data.blocked])
            for node, items in data.pep:
                _upsert_node(db, host, username, node)
                db.executemany(
                    "INSERT OR REPLACE INTO pep_items (host, username, node, item_id, payload, "
                    "published_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(host, username, node.node, item.id, item.payload,
                      item.published_at or now, seq) for seq, item in enumerate(items, 1)])
                _trim_items(db, host, username, node)
            return True
        return await self._write(write)
