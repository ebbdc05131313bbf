"""Scenario: what a large message archive (XEP-0313) costs xferd — disk and
query time. xferd only (Prosody's archive is another design entirely).

One user gets N archived messages (``--archive N``, default 1,000,000) with
100 contacts in turn, one a second, each a realistic ~300-byte chat stanza,
written straight into storage through the same ``import_archive`` call the
history import uses (batches of ``BATCH``, one transaction each). Then:

- disk: the database file after the fill (checkpointed, no WAL), in MB and
  bytes per message, and per table/index when SQLite has ``dbstat``;
- queries over XMPP against the running server (a logged-in client, each
  query ``QUERY_REPEATS`` times, the median): the first page, a ``with``
  page at the end (``<before/>``, the newest messages with one contact), a
  page at the end of everything, a page after an id in the middle
  (``after-id``), ``with`` + ``start``/``end`` in the middle, the count of
  one contact's messages and of all (``<max>0</max>``) and the metadata. Each figure is
  the round trip (IQ sent → IQ result, every result message read) and the
  server's CPU for it (the mean: the CPU clock counts 10 ms ticks).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time

from .loadgen import BenchClient, client_context
from .procs import cpu_seconds
from .seed import plain

USER = "archiveuser"
CONTACTS = 100
BATCH = 10000
PAGE = 100
QUERY_REPEATS = 5
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"


def _stanza(n: int, owner: str, contact: str) -> str:
    outgoing = n % 2 == 0
    frm, to = (f"{owner}/phone", contact) if outgoing else (f"{contact}/laptop", owner)
    return (f"<message xmlns='jabber:client' from='{frm}' to='{to}' type='chat' "
            f"id='msg-{n:08d}-3f9a2c'><body>Message number {n}: see you at the station at "
            f"{n % 24:02d}:{n % 60:02d}, bring the tickets.</body><active xmlns="
            f"'http://jabber.org/protocol/chatstates'/><origin-id xmlns='urn:xmpp:sid:0' "
            f"id='o-{n:08d}-77d1'/></message>")


async def fill(server, count: int) -> dict:
    """Put *count* messages into USER's archive; returns the fill figures."""
    from storage.api import ArchivedMessage
    conf, storage_class = server._storage()
    store = storage_class(conf.storage_path, synchronous="normal")
    await store.open()
    owner = f"{USER}@{server.domain}"
    start = time.time() - count - 3600
    began = time.perf_counter()
    try:
        for first in range(0, count, BATCH):
            entries = []
            for n in range(first, min(first + BATCH, count)):
                contact = f"contact{n % CONTACTS}@archive.example"
                # no source: live entries (an imported one adds ~45 bytes of index)
                entries.append(ArchivedMessage("", start + n, contact,
                                               _stanza(n, owner, contact)))
            added = await store.import_archive(server.domain, USER, entries)
            if added != len(entries):
                raise RuntimeError(f"archive fill: {added} of {len(entries)} added")
    finally:
        await store.close()
    took = time.perf_counter() - began
    return {"messages": count, "fill_s": round(took, 1),
            "fill_msgs_per_s": round(count / took)}


def disk(path) -> dict:
    """The database's size, and per table/index if SQLite has dbstat."""
    size = path.stat().st_size
    out = {"db_mb": round(size / 2**20, 1)}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE 'archive%' "
                          "GROUP BY name ORDER BY 2 DESC").fetchall()
        out["by_object_mb"] = {name: round(b / 2**20, 1) for name, b in rows}
    except sqlite3.Error:
        out["by_object_mb"] = "dbstat unavailable"
    finally:
        db.close()
    return out


def _form(**fields) -> str:
    if not fields:
        return ""
    values = "".join(f"<field var='{k.replace('_', '-')}'><value>{v}</value></field>"
                     for k, v in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{MAM}"
            f"</value></field>{values}</x>")


def _query(iq_id: str, rsm: str, **fields) -> str:
    return (f"<iq type='set' id='{iq_id}'><query xmlns='{MAM}'>{_form(**fields)}"
            f"<set xmlns='{RSM}'>{rsm}</set></query></iq>")


async def _timed(client, server, xml: str, iq_id: str) -> tuple[float, float, object]:
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    answer = await client.request(xml, iq_id)
    took, cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
    if answer.get("type") != "result":
        raise RuntimeError(f"archive query {iq_id} failed: {answer.get('type')}")
    return took, cpu, answer


async def queries(server, password: str, count: int) -> dict:
    from server.xmpp import timestamps
    client = BenchClient("127.0.0.1", server.c2s_port, server.domain, USER, password,
                         client_context(server.cert()))
    await client.login(presence=False)
    mid = time.time() - count // 2 - 3600
    try:
        # an id in the middle, for after-id
        _, _, answer = await _timed(client, server, _query(
            "m", "<max>1</max>", start=timestamps.format(mid)), "m")
        mid_id = answer.findtext(f".//{{{RSM}}}first")
        contact = "contact7@archive.example"
        plans = {
            "first_page": _query("{id}", f"<max>{PAGE}</max>"),
            "with_last_page": _query("{id}", f"<max>{PAGE}</max><before/>", **{"with": contact}),
            "last_page": _query("{id}", f"<max>{PAGE}</max><before/>"),
            "after_id_middle": _query("{id}", f"<max>{PAGE}</max>", after_id=mid_id),
            "with_start_end_middle": _query(
                "{id}", f"<max>{PAGE}</max>", start=timestamps.format(mid),
                end=timestamps.format(mid + 86400), **{"with": contact}),
            "with_count": _query("{id}", "<max>0</max>", **{"with": contact}),
            "count_all": _query("{id}", "<max>0</max>"),
            "metadata": f"<iq type='get' id='{{id}}'><metadata xmlns='{MAM}'/></iq>",
        }
        out = {}
        for name, template in plans.items():
            times, cpus = [], []
            for r in range(QUERY_REPEATS):
                iq_id = f"{name}-{r}"
                took, cpu, answer = await _timed(client, server,
                                                 template.replace("{id}", iq_id), iq_id)
                times.append(took)
                cpus.append(cpu)
            out[f"{name}_ms"] = round(1000 * statistics.median(times), 2)
            # the mean: the CPU clock ticks in 10 ms steps, a median of 5 would be 0 or 10
            out[f"{name}_cpu_ms"] = round(1000 * statistics.mean(cpus), 1)
            if name == "with_count":
                out["with_count"] = int(answer.findtext(f".//{{{RSM}}}count"))
        return out
    finally:
        await client.close()


def run(make_server, password: str, count: int) -> dict:
    """The whole scenario on a fresh xferd; *make_server* makes an unstarted one."""
    server = make_server()
    server.seed(plain(server.domain, [USER]), password)
    figures = asyncio.run(fill(server, count))
    figures.update(disk(server._storage()[0].storage_path))
    server.start()
    try:
        figures.update(asyncio.run(queries(server, password, count)))
    finally:
        server.stop()
    return figures
