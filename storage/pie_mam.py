"""Message archives in XEP-0227 files (``urn:xmpp:pie:0#mam``), streaming both ways.

XEP-0227 names the namespace but not the content; the form here is the one
Prosody 0.12's ``mod_storage_xep0227`` reads and writes (its ``archive``
store), so files travel between the two servers::

    <user name='alice'>
      …
      <archive xmlns='urn:xmpp:pie:0#mam'>
        <result xmlns='urn:xmpp:mam:2' id='ARCHIVE-ID'>
          <forwarded xmlns='urn:xmpp:forward:0'>
            <delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05.000Z'/>
            <message xmlns='jabber:client' from='…' to='…' …>…</message>
          </forwarded>
        </result>
        …
      </archive>
    </user>

One ``<result/>`` per entry, oldest first, as a XEP-0313 result (§4.2): the
archive id in ``id``, the time the message was archived in the delay stamp.
The other party (``with``) is not written: as Prosody does, it is the bare
``from`` or ``to`` that is not the account.

An archive can hold far more than a user's other data (100,000 messages is
a long-used account), so neither side holds it whole: export writes entry
by entry as :meth:`storage.api.ArchiveStore.iter_archive` reads them
``BATCH`` at a time, and import (storage/pie.py walks the document) parses
each ``<result/>`` as it ends, hands it on and drops it from the tree, then
stores ``BATCH`` entries per transaction with
:meth:`~storage.api.ArchiveStore.import_archive`. Entries keep their ids
(when they are usable as ours), their timestamps, and are marked as
imported: ``source`` is the account in the file and ``source_id`` the id
there, so importing the same file twice adds nothing the second time.
"""

from __future__ import annotations

import re
from typing import AsyncIterator, Callable

from lxml import etree

from server.xmpp import timestamps
from server.xmpp.jid import JID, JIDError
from server.xmpp.namespaces import (CLIENT_NS, DELAY_NS, FORWARD_NS, MAM_NS, PIE_MAM_NS,
                                    STANZA_ID_NS)
from server.xmpp.stanza import from_text, to_text

from .api import ArchivedMessage

ARCHIVE = f"{{{PIE_MAM_NS}}}archive"
RESULT = f"{{{MAM_NS}}}result"
FORWARDED = f"{{{FORWARD_NS}}}forwarded"
DELAY = f"{{{DELAY_NS}}}delay"
MESSAGE = f"{{{CLIENT_NS}}}message"
STANZA_ID = f"{{{STANZA_ID_NS}}}stanza-id"

#: entries per storage transaction (import) and per storage read (export)
BATCH = 500
#: an archived stanza larger than this (characters of XML) is skipped on import
MAX_STANZA = 256 * 1024
#: an id kept as ours: what XEP-0359 ids and Prosody's UUIDs look like (URL-safe)
_USABLE_ID = re.compile(r"[A-Za-z0-9_.~-]{1,64}")

Warn = Callable[[str], None]


# -- export ------------------------------------------------------------------------------------

def result_element(entry: ArchivedMessage):
    """The ``<result/>`` of one entry (module docstring)."""
    result = etree.Element(RESULT, {"id": entry.id}, nsmap={None: MAM_NS})
    forwarded = etree.SubElement(result, FORWARDED, nsmap={None: FORWARD_NS})
    etree.SubElement(forwarded, DELAY, {"stamp": timestamps.format(entry.timestamp)},
                     nsmap={None: DELAY_NS})
    forwarded.append(from_text(entry.stanza))
    return result


async def write_archive(xf, entries: AsyncIterator[ArchivedMessage],
                        progress: Callable[[int], None] | None = None,
                        every: int = 10000) -> int:
    """Write ``<archive/>`` with every entry of *entries* into the open
    ``etree.xmlfile`` *xf* (nothing when there are none); returns how many.
    ``progress(n)`` is called every *every* entries."""
    entries = aiter(entries)
    entry = await anext(entries, None)
    if entry is None:
        return 0
    written = 0
    xf.write("\n")
    with xf.element(ARCHIVE, nsmap={None: PIE_MAM_NS}):
        while entry is not None:
            xf.write("\n", result_element(entry))
            written += 1
            if progress and written % every == 0:
                progress(written)
            entry = await anext(entries, None)
        xf.write("\n")
    return written


# -- import ------------------------------------------------------------------------------------

def _bare(text: str | None) -> JID | None:
    return JID.parse(text).bare if text else None


def parse_result(result, account: JID) -> ArchivedMessage:
    """One ``<result/>`` of *account*'s archive → an entry marked as imported
    from *account*. ValueError says what is wrong with it."""
    forwarded = result.find(FORWARDED)
    message = forwarded.find(MESSAGE) if forwarded is not None else None
    delay = forwarded.find(DELAY) if forwarded is not None else None
    if message is None:
        raise ValueError("archive <result/> without <forwarded><message xmlns='jabber:client'/>")
    if delay is None:
        raise ValueError("archive <result/> without a <delay/> stamp")
    timestamp = timestamps.parse(delay.get("stamp") or "")
    try:
        sender, recipient = _bare(message.get("from")), _bare(message.get("to"))
    except JIDError as exc:
        raise ValueError(f"archived message with a bad JID: {exc}") from None
    # as Prosody: the other party is whichever of from/to is not the account
    other = message.get("from") if recipient == account else message.get("to")
    if account not in (sender, recipient) or not other:
        raise LookupError(f"archived message from {message.get('from')!r} to "
                          f"{message.get('to')!r} is not {account}'s")
    other_jid = JID.parse(other)
    for sid in message.findall(STANZA_ID):
        if sid.get("by") in (str(account), None):      # ours, from that archive
            message.remove(sid)
    stanza = to_text(message)
    if len(stanza) > MAX_STANZA:
        raise LookupError(f"archived message of {len(stanza)} characters (more than "
                          f"{MAX_STANZA})")
    source_id = result.get("id") or None
    return ArchivedMessage(
        id=source_id if source_id and _USABLE_ID.fullmatch(source_id) else "",
        timestamp=timestamp, with_jid=str(other_jid.bare), stanza=stanza,
        source=str(account), source_id=source_id, with_resource=other_jid.resource)


def read_entry(result, account: JID, where: Callable, warn: Warn,
               take: Callable[[ArchivedMessage], None]) -> None:
    """Parse the ``<result/>`` *result* of *account*'s archive, just ended,
    pass its entry to *take* (a bad one raises ValueError with ``line``, one
    that cannot be kept is skipped with a warning) and drop it from its parent,
    so the tree stays small. Only this element: the parser may have read the
    start of the next one already."""
    try:
        take(parse_result(result, account))
    except LookupError as exc:
        warn(f"{where(result)}: skipped archive entry: {exc.args[0]}")
    except ValueError as exc:
        exc.line = result.sourceline
        raise
    finally:
        result.clear()
        result.getparent().remove(result)
