"""RFC 6121 §2: the roster — get, set, remove, and roster pushes.

Every change, whoever makes it (a roster set here, a subscription change in
``subscription.py``, later XEP-0283/XEP-0015), is announced with a
``roster-changed`` event and pushed from here to the user's interested
resources (§2.1.6). Roster versioning (XEP-0237, RFC 6121 §2.6): the version
is a counter bumped by every change; a client whose cached version is
current gets an empty result, any other gets the whole roster (allowed by
§2.6.3; we do not keep per-version diffs).

Removing an item (§2.5.2) cancels the subscriptions both ways: the contact
gets ``unsubscribe`` if the user had one (to/both or pending out) and
``unsubscribed`` if the contact had one (from/both or pending in).
"""

from __future__ import annotations

from ..xmpp.roster import RosterItem

from ..core.events import PresenceShare, RosterChange
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.stanza import E, PRESENCE, iq, sub

NS = "jabber:iq:roster"
MAX_NAME = 1024          # characters of an item name or group name (§2.3.3 "limit")
MAX_GROUPS = 64


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def item_element(item: RosterItem | None, jid: str):
    """``<item/>`` as clients see it (§2.1.2): removal is subscription='remove'."""
    if item is None:
        return E(_q("item"), {"jid": jid, "subscription": "remove"})
    el = E(_q("item"), {"jid": item.jid, "name": item.name or None,
                        "subscription": item.subscription,
                        "ask": "subscribe" if item.ask else None,
                        "approved": "true" if item.approved else None})
    for group in item.groups:
        sub(el, _q("group"), text=group)
    return el


def _parse_set(query, own: JID) -> tuple[str, RosterItem | None, bool]:
    """Check a roster set (§2.3.3, §2.5.3): (contact JID, requested item, remove?)."""
    items = query.findall(_q("item"))
    if len(items) != 1:
        raise StanzaError("bad-request", "a roster set carries exactly one item")
    el = items[0]
    if not el.get("jid"):
        raise StanzaError("bad-request", "the item has no jid")
    try:
        contact = JID.parse(el.get("jid"))
    except JIDError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None
    if contact.resource is not None:
        contact = contact.bare
    if el.get("subscription") == "remove":
        return str(contact), None, True
    name = el.get("name")
    if name is not None and len(name) > MAX_NAME:
        raise StanzaError("not-acceptable", "name too long")
    groups = []
    for group in el.findall(_q("group")):
        text = (group.text or "").strip()
        if not text:
            raise StanzaError("not-acceptable", "empty group name")
        if len(text) > MAX_NAME:
            raise StanzaError("not-acceptable", "group name too long")
        if text in groups:
            raise StanzaError("bad-request", f"group {text!r} given twice")
        groups.append(text)
    if len(groups) > MAX_GROUPS:
        raise StanzaError("not-acceptable", "too many groups")
    # subscription/ask sent by a client are ignored: only the server sets them
    return str(contact), RosterItem(str(contact), name or None, groups=tuple(groups)), False


def setup(host) -> None:
    host.stream_features.add(("urn:xmpp:features:rosterver", "ver"))   # XEP-0237 §3

    async def roster_get(event) -> bool:
        user = event.from_.local
        version, items = await host.storage.get_roster(host.domain, user)
        if event.origin is not None:
            event.origin.roster_requested = True
        asked = event.stanza[0].get("ver")
        if asked is not None and asked == str(version):
            await event.reply()                      # §2.6.3: the cache is current
            return True
        query = E(_q("query"), {"ver": str(version)})
        for jid, item in items.items():
            query.append(item_element(item, jid))
        await event.reply(query)
        return True

    async def roster_set(event) -> bool:
        user = event.from_.local
        contact, wanted, remove = _parse_set(event.stanza[0], event.from_)
        if remove:
            existing = await host.storage.get_roster_item(host.domain, user, contact)
            if existing is None and await host.storage.get_pending_request(
                    host.domain, user, contact) is None:
                raise StanzaError("item-not-found", "no such roster item")
            await _remove(host, event, user, contact, existing)
        else:
            async with host.roster_items(user, contact):     # see Host.roster_items
                existing = await host.storage.get_roster_item(host.domain, user, contact)
                if existing is None:
                    count = await host.storage.count_roster_items(host.domain, user)
                    if count >= host.global_config.im.max_roster_items:
                        raise StanzaError("not-allowed", "the roster is full")
                else:
                    wanted.subscription = existing.subscription
                    wanted.ask = existing.ask
                    wanted.approved = existing.approved
                version = await host.storage.save_roster_change(host.domain, user, contact,
                                                                wanted)
            await host.events.fire("roster-changed",
                                   RosterChange(host, user, contact, wanted, version))
        await event.reply()
        return True

    async def forbidden(event) -> bool:
        raise StanzaError("forbidden", "a roster belongs to its user alone")

    async def push(change: RosterChange) -> None:
        sessions = host.interested_sessions(change.username)
        if not sessions:
            return                  # no client asked for it (e.g. the user is offline)
        query = E(_q("query"), {"ver": str(change.version)})
        query.append(item_element(change.item, change.jid))
        for session in sessions:
            session.send(iq("set", to=str(session.jid), payload=_copy(query)))

    host.events.on(f"iq-get/self/{NS}:query", roster_get)
    host.events.on(f"iq-set/self/{NS}:query", roster_set)
    host.events.on(f"iq-get/bare/{NS}:query", forbidden)
    host.events.on(f"iq-set/bare/{NS}:query", forbidden)
    host.events.on("roster-changed", push)


async def _remove(host, event, user: str, contact: str, existing: RosterItem | None) -> None:
    """§2.5.2: cancel both directions, drop the item and any pending request."""
    pending_in = await host.storage.get_pending_request(host.domain, user,
                                                        contact) is not None
    bare = f"{user}@{host.domain}"
    if existing is not None and (existing.subscription in ("to", "both") or existing.ask):
        await event.send(E(PRESENCE, {"type": "unsubscribe", "from": bare, "to": contact}))
    if existing is not None and existing.subscription in ("from", "both"):
        await host.events.fire("presence-revoke", PresenceShare(host, user, contact))
    if (existing is not None and existing.subscription in ("from", "both")) or pending_in:
        await event.send(E(PRESENCE, {"type": "unsubscribed", "from": bare, "to": contact}))
    version = await host.storage.save_roster_change(host.domain, user, contact, None,
                                                    pending_in=False)
    await host.events.fire("roster-changed", RosterChange(host, user, contact, None, version))


def _copy(el):
    from copy import deepcopy
    return deepcopy(el)
