"""A client reading its own message archive (XEP-0313) and handing it to another server.

* :func:`features`: what a JID offers (XEP-0030 §3 disco#info); the account's
  bare JID lists ``urn:xmpp:mam:2`` when its server archives for it (XEP-0313
  §6.1) and ``urn:xferd:mam-import:0`` when it is an xferd that takes history.
* :func:`pages`: the whole archive, oldest first, one page at a time: a query
  (§4.1, no form: every message) with RSM ``<max/>`` and ``<after/>`` = the
  last id of the page before (XEP-0059 §2.2); the server may send fewer than
  asked (Prosody's default limit is 50) and says in ``<fin complete='true'/>``
  when there is no more (§4.2). Results are matched by ``queryid`` and taken
  only from our own bare JID (or without ``from``): §4.2 has the archive send
  them from the account, so anything else is not the archive speaking.
* :func:`import_page`: xferd's history import IQ (``urn:xferd:mam-import:0``,
  server/modules/mam.py): up to :data:`IMPORT_MAX` results, as XEP-0313
  results with their old ids and ``<delay/>`` stamps, to our own account.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import AsyncIterator

from ..xmpp import mam, timestamps
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import DELAY_NS, DISCO_INFO_NS, FORWARD_NS, MAM_NS, RSM_NS
from ..xmpp.namespaces import MAM_IMPORT_NS as IMPORT_NS
from ..xmpp.stanza import E, MESSAGE, iq, new_id, sub
from .connection import ClientError, Connection, IQError

#: results asked for per page (the server may send fewer)
PAGE_SIZE = 100
#: results taken per page at most, whatever the server sends (memory bound)
PAGE_LIMIT = 1000
#: results per import IQ (the server refuses more)
IMPORT_MAX = 100


class ArchiveError(ClientError):
    """The archive's answers do not make sense (no progress, a page too big)."""

    def __init__(self, text: str):
        super().__init__("archive-error", text)


@dataclass
class ArchivedResult:
    """One message of the archive: its id there, when it was archived, the stanza."""
    id: str
    stamp: str                  # the <delay/> stamp as the server wrote it
    message: object             # the <message/> element (jabber:client)

    @property
    def timestamp(self) -> float:
        return timestamps.parse(self.stamp)


@dataclass
class Page:
    results: list[ArchivedResult] = field(default_factory=list)
    complete: bool = False
    last: str | None = None
    count: int | None = None    # RSM <count/>: the whole archive, if the server says


async def features(client: Connection, jid: str | None = None) -> set[str]:
    """The disco#info features of *jid* (default: our own bare JID)."""
    answer = await client.request(iq("get", to=jid or str(client.jid.bare),
                                     payload=E(f"{{{DISCO_INFO_NS}}}query")))
    return {el.get("var") for el in answer.iterfind(
        f"{{{DISCO_INFO_NS}}}query/{{{DISCO_INFO_NS}}}feature") if el.get("var")}


def _from_archive(client: Connection, sender: str | None) -> bool:
    if sender is None:
        return True
    try:
        return JID.parse(sender) == client.jid.bare
    except JIDError:
        return False


async def page(client: Connection, after: str | None = None, max: int = PAGE_SIZE,
               timeout: float = 60.0) -> Page:
    """One page of our archive after the id *after* (from the start if None)."""
    queryid = new_id()
    query = E(f"{{{MAM_NS}}}query", {"queryid": queryid})
    rsm = sub(query, f"{{{RSM_NS}}}set")
    sub(rsm, f"{{{RSM_NS}}}max", text=str(max))
    if after is not None:
        sub(rsm, f"{{{RSM_NS}}}after", text=after)
    found = Page()
    problems: list[str] = []

    def collect(el) -> None:
        result = el.find(f"{{{MAM_NS}}}result") if el.tag == MESSAGE else None
        if result is None or result.get("queryid") != queryid:
            return
        if not _from_archive(client, el.get("from")):
            return                                  # not our archive speaking (§4.2)
        if len(found.results) >= PAGE_LIMIT:
            problems.append(f"more than {PAGE_LIMIT} results in one page")
            return
        forwarded = result.find(f"{{{FORWARD_NS}}}forwarded")
        message = forwarded.find(MESSAGE) if forwarded is not None else None
        delay = forwarded.find(f"{{{DELAY_NS}}}delay") if forwarded is not None else None
        if message is None or delay is None or not result.get("id"):
            problems.append(f"a result without id, message or delay: {result.get('id')!r}")
            return
        try:
            timestamps.parse(delay.get("stamp") or "")
        except ValueError:
            problems.append(f"result {result.get('id')!r} with a bad stamp")
            return
        found.results.append(ArchivedResult(result.get("id"), delay.get("stamp"),
                                            copy.deepcopy(message)))
    remove = client.on_stanza(collect)
    try:
        # the results arrive before the IQ result that ends the query (§4.2)
        answer = await client.request(iq("set", payload=query), timeout)
    finally:
        remove()
    if problems:
        raise ArchiveError(problems[0])
    fin = answer.find(f"{{{MAM_NS}}}fin")
    if fin is None:
        raise ArchiveError("the archive query ended without <fin/>")
    found.complete = fin.get("complete") in ("true", "1")
    found.last = fin.findtext(f"{{{RSM_NS}}}set/{{{RSM_NS}}}last") or \
        (found.results[-1].id if found.results else None)
    count = fin.findtext(f"{{{RSM_NS}}}set/{{{RSM_NS}}}count")
    found.count = int(count) if count and count.strip().isdigit() else None
    return found


async def pages(client: Connection, after: str | None = None,
                max: int = PAGE_SIZE) -> AsyncIterator[Page]:
    """Every page of our archive after *after*, oldest first, until the
    server says it is complete (or sends an empty page)."""
    while True:
        current = await page(client, after, max)
        if current.results:
            yield current
        if current.complete or not current.results:
            return
        if current.last in (None, after):
            raise ArchiveError(f"the archive does not move on after {after!r}")
        after = current.last


async def count(client: Connection) -> int | None:
    """How many messages the archive holds, if the server counts (RSM ``<max>0``)."""
    try:
        return (await page(client, None, 0)).count
    except IQError:
        return None


def result_element(item: ArchivedResult):
    """*item* as a XEP-0313 ``<result/>`` for the import IQ (message copied)."""
    return mam.result_element(item.id, item.stamp, copy.deepcopy(item.message))


async def import_page(client: Connection, source: str, items: list[ArchivedResult],
                      timeout: float = 60.0) -> int:
    """Hand *items* (at most IMPORT_MAX) to our own archive on an xferd;
    how many it added (those it had already are skipped there)."""
    if len(items) > IMPORT_MAX:
        raise ValueError(f"at most {IMPORT_MAX} results per import")
    payload = E(f"{{{IMPORT_NS}}}import", {"source": source})
    for item in items:
        payload.append(result_element(item))
    answer = await client.request(iq("set", payload=payload), timeout)
    imported = answer.find(f"{{{IMPORT_NS}}}imported")
    added = imported.get("count") if imported is not None else None
    if added is None or not added.isdigit():
        raise ArchiveError("the import was answered without <imported count/>")
    return int(added)


__all__ = ["ArchiveError", "ArchivedResult", "IMPORT_NS", "MAM_NS", "Page",
           "count", "features", "import_page", "page", "pages", "result_element"]
