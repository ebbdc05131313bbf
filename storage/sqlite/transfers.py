"""XEP-0015 account transfer jobs and authorisations (:class:`storage.api.TransferStore`)."""

from __future__ import annotations

import json
import time

from ..api import RosterItem, Transfer, TransferContact


class TransfersMixin:
    """Transfer jobs (old server) and approvals (new server), over the engine."""

    async def get_transfer(self, host: str, username: str) -> Transfer | None:
        row = await self._one("SELECT new_jid, state, requester, request_id, detail, "
                              "updated_at FROM transfers WHERE host = ? AND username = ?",
                              (host, username))
        if row is None:
            return None
        contacts = await self._all("SELECT jid, item, status, condition FROM "
                                   "transfer_contacts WHERE host = ? AND username = ? "
                                   "ORDER BY jid", (host, username))
        return Transfer(host, username, *row,
                        contacts={jid: TransferContact(jid, item_from_json(item), status, cond)
                                  for jid, item, status, cond in contacts})

    async def list_transfers(self, states: tuple[str, ...]) -> list[tuple[str, str]]:
        marks = ",".join("?" * len(states))
        return [tuple(r) for r in await self._all(
            f"SELECT host, username FROM transfers WHERE state IN ({marks})", states)]

    async def save_transfer(self, transfer: Transfer, *, contacts: bool = False) -> None:
        """Store the job's state (and, with *contacts*, replace its contact list)."""
        def write(db):
            # an upsert, not INSERT OR REPLACE: a replace deletes the row first,
            # and the delete would cascade to the job's contacts
            db.execute("INSERT INTO transfers (host, username, new_jid, state, "
                       "requester, request_id, detail, updated_at) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, username) DO UPDATE "
                       "SET new_jid = excluded.new_jid, state = excluded.state, "
                       "requester = excluded.requester, request_id = excluded.request_id, "
                       "detail = excluded.detail, updated_at = excluded.updated_at",
                       (transfer.host, transfer.username, transfer.new_jid, transfer.state,
                        transfer.requester, transfer.request_id, transfer.detail,
                        time.time()))
            if contacts:
                db.execute("DELETE FROM transfer_contacts WHERE host = ? AND username = ?",
                           (transfer.host, transfer.username))
                db.executemany(
                    "INSERT INTO transfer_contacts (host, username, jid, item, status, "
                    "condition) VALUES (?, ?, ?, ?, ?, ?)",
                    [(transfer.host, transfer.username, c.jid, item_to_json(c.item), c.status,
                      c.condition) for c in transfer.contacts.values()])
        await self._write(write)

    async def save_transfer_contact(self, host: str, username: str,
                                    contact: TransferContact) -> None:
        def write(db):
            db.execute("UPDATE transfer_contacts SET status = ?, condition = ? WHERE "
                       "host = ? AND username = ? AND jid = ?",
                       (contact.status, contact.condition, host, username, contact.jid))
        await self._write(write)

    async def get_transfer_approval(self, host: str, username: str,
                                    old_jid: str) -> tuple[str, float] | None:
        row = await self._one("SELECT state, expires_at FROM transfer_approvals WHERE "
                              "host = ? AND username = ? AND old_jid = ?",
                              (host, username, old_jid))
        return (row[0], row[1]) if row else None

    async def list_transfer_approvals(self, host: str, username: str) -> list[tuple[str, str, float]]:
        return [tuple(r) for r in await self._all(
            "SELECT old_jid, state, expires_at FROM transfer_approvals WHERE host = ? AND "
            "username = ? ORDER BY old_jid", (host, username))]

    async def set_transfer_approval(self, host: str, username: str, old_jid: str,
                                    state: str | None, expires_at: float = 0.0) -> None:
        def write(db):
            if state is None:
                db.execute("DELETE FROM transfer_approvals WHERE host = ? AND "
                           "username = ? AND old_jid = ?", (host, username, old_jid))
            else:
                db.execute("INSERT OR REPLACE INTO transfer_approvals (host, username, "
                           "old_jid, state, expires_at) VALUES (?, ?, ?, ?, ?)",
                           (host, username, old_jid, state, expires_at))
        await self._write(write)


def item_to_json(item: RosterItem) -> str:
    return json.dumps({"jid": item.jid, "name": item.name, "subscription": item.subscription,
                       "ask": item.ask, "approved": item.approved, "groups": list(item.groups)})


def item_from_json(text: str) -> RosterItem:
    data = json.loads(text)
    return RosterItem(data["jid"], data.get("name"), data.get("subscription", "none"),
                      bool(data.get("ask")), bool(data.get("approved")),
                      tuple(data.get("groups", ())))
