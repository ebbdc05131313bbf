"""Personal eventing nodes and items (XEP-0163, :class:`storage.api.PepStore`)."""

from __future__ import annotations

import json
import time

from ..api import PepItem, PepNode, QuotaExceeded
from .engine import _one


class PepMixin:
    """PEP nodes and their items, over the engine."""

    async def get_pep_node(self, host: str, username: str, node: str) -> PepNode | None:
        row = await self._one("SELECT node, access_model, max_items, config FROM pep_nodes "
                              "WHERE host = ? AND username = ? AND node = ?",
                              (host, username, node))
        return _node(row) if row else None

    async def list_pep_nodes(self, host: str, username: str) -> list[PepNode]:
        rows = await self._all("SELECT node, access_model, max_items, config FROM pep_nodes "
                               "WHERE host = ? AND username = ? ORDER BY node",
                               (host, username))
        return [_node(r) for r in rows]

    async def save_pep_node(self, host: str, username: str, node: PepNode, *,
                            max_nodes: int | None = None) -> None:
        def write(db):
            _check_room(db, host, username, node.node, max_nodes)
            _upsert_node(db, host, username, node)
            _trim_items(db, host, username, node)
        await self._write(write)

    async def delete_pep_node(self, host: str, username: str, node: str) -> bool:
        def write(db):
            cur = db.execute("DELETE FROM pep_nodes WHERE host = ? AND username = ? "
                             "AND node = ?", (host, username, node))
            return cur.rowcount > 0
        return await self._write(write)

    async def publish_pep_item(self, host: str, username: str, node: PepNode,
                               item: PepItem, *, max_nodes: int | None = None,
                               max_bytes: int | None = None) -> None:
        def write(db):
            if not _check_room(db, host, username, node.node, max_nodes):
                _upsert_node(db, host, username, node)
            (seq,) = _one(db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE "
                              "host = ? AND username = ? AND node = ?",
                              (host, username, node.node))
            db.execute("INSERT OR REPLACE INTO pep_items (host, username, node, item_id, "
                       "payload, published_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (host, username, node.node, item.id, item.payload,
                        item.published_at or time.time(), seq))
            _trim_items(db, host, username, node)
            if max_bytes is not None:
                # after the write: a replaced or trimmed item no longer counts
                (size,) = _one(db, "SELECT COALESCE(SUM(LENGTH(CAST(payload AS BLOB))), 0) "
                                   "FROM pep_items WHERE host = ? AND username = ?",
                               (host, username))
                if size > max_bytes:
                    raise QuotaExceeded("pep_max_bytes", max_bytes)
        await self._write(write)

    async def retract_pep_item(self, host: str, username: str, node: str, item_id: str) -> bool:
        def write(db):
            cur = db.execute("DELETE FROM pep_items WHERE host = ? AND username = ? AND "
                             "node = ? AND item_id = ?", (host, username, node, item_id))
            return cur.rowcount > 0
        return await self._write(write)

    async def get_pep_items(self, host: str, username: str, node: str,
                            ids: list[str] | None = None,
                            max_items: int | None = None) -> list[PepItem]:
        rows = await self._all("SELECT item_id, payload, published_at FROM pep_items "
                               "WHERE host = ? AND username = ? AND node = ? "
                               "ORDER BY seq DESC", (host, username, node))
        items = [PepItem(*row) for row in rows]
        if ids is not None:
            wanted = set(ids)
            items = [i for i in items if i.id in wanted]
        return items[:max_items] if max_items is not None else items


def _node(row) -> PepNode:
    node, access_model, max_items, config = row
    return PepNode(node, access_model, max_items, json.loads(config))


def _check_room(db, host: str, username: str, node: str, max_nodes: int | None) -> bool:
    """Does *node* exist? If not and the account already has *max_nodes*,
    raise :class:`QuotaExceeded` (inside the write: two creations in flight
    cannot both see room)."""
    if _one(db, "SELECT 1 FROM pep_nodes WHERE host = ? AND username = ? AND node = ?",
            (host, username, node)):
        return True
    if max_nodes is not None:
        (count,) = _one(db, "SELECT COUNT(*) FROM pep_nodes WHERE host = ? AND username = ?",
                        (host, username))
        if count >= max_nodes:
            raise QuotaExceeded("pep_max_nodes", max_nodes)
    return False


def _upsert_node(db, host: str, username: str, node: PepNode) -> None:
    db.execute("INSERT INTO pep_nodes (host, username, node, access_model, max_items, "
               "config) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host, username, node) DO "
               "UPDATE SET access_model = excluded.access_model, "
               "max_items = excluded.max_items, config = excluded.config",
               (host, username, node.node, node.access_model, node.max_items,
                json.dumps(node.config)))


def _trim_items(db, host: str, username: str, node: PepNode) -> None:
    db.execute("DELETE FROM pep_items WHERE host = ? AND username = ? AND node = ? AND "
               "seq NOT IN (SELECT seq FROM pep_items WHERE host = ? AND username = ? "
               "AND node = ? ORDER BY seq DESC LIMIT ?)",
               (host, username, node.node, host, username, node.node, node.max_items))
