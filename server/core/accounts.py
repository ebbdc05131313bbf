"""Account life cycle shared by the CLI and in-band registration.

Deleting an account that published a XEP-0283 moved statement leaves a
tombstone: the name stays taken and stanzas to it are answered with
``<gone>xmpp:NEW</gone>`` (RFC 6120 §8.3.3.5), which XEP-0283 verifiers
accept as a statement (step 6 in ``server/modules/moved.py``).
"""

from __future__ import annotations

from lxml import etree

from ..xmpp.namespaces import MOVED_NS


async def moved_to(storage, host: str, username: str) -> str | None:
    """The new JID in the account's moved statement, if it has one."""
    items = await storage.get_pep_items(host, username, MOVED_NS, ids=["current"])
    if not items:
        items = await storage.get_pep_items(host, username, MOVED_NS, max_items=1)
    for item in items:
        try:
            payload = etree.fromstring(item.payload.encode(),
                                       etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            continue
        new = payload.findtext(f"{{{MOVED_NS}}}new-jid") if payload.tag == \
            f"{{{MOVED_NS}}}moved" else None
        if new and new.strip():
            return new.strip()
    return None


async def delete_account(storage, host: str, username: str) -> bool:
    """Delete an account and its data, leaving a tombstone if it had moved."""
    return await storage.delete_user(host, username,
                                     tombstone=await moved_to(storage, host, username))
