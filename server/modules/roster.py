"""RFC 6121 §2: the roster — get, set and remove.

Every change, whoever makes it (a roster set here, a subscription change in
``subscription.py``, XEP-0283 in ``moved.py``, XEP-0015 in
``accountxfer.py``), goes through the host's roster service
(``server/core/rosters.py``), which pushes it to the user's interested
resources (§2.1.6) and announces it with ``roster-changed``. A roster get
makes a session interested.

Roster versioning (XEP-0237, RFC 6121 §2.6): every change of an item gets a
version of its own, one above the last. A client whose cached version is
current gets an empty result, any other gets the whole roster (allowed by
§2.6.3; we do not keep per-version diffs).

A set of a new item beyond ``im.max_roster_items`` is refused with
``<not-allowed/>`` (§2.3.3 leaves the limit to the server); the count is
checked inside the write's transaction (``server/core/rosters.py``), so
sessions setting items at once cannot overshoot it. A name longer than
``im.roster_max_name`` characters, a group name longer than
``im.roster_max_group`` or more than ``im.roster_max_groups`` groups is
``<not-acceptable/>``: §2.3.3 names that condition for a name or group
"larger than a server-configured limit"; the number of groups it leaves
open, and we treat it alike.

Removing an item (§2.5.2) cancels the subscriptions both ways: the contact
gets ``unsubscribe`` if the user had one (to/both or pending out) and
``unsubscribed`` if the contact had one (from/both or pending in); the
contact is sent unavailable presence first if it saw the user's.
"""

from __future__ import annotations

from typing import Mapping

from ..core.events import PresenceShare
from ..core.module import Module, iq
from ..core.rosters import item_element
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import ROSTER_NS, ROSTERVER_FEATURE_NS
from ..xmpp.roster import RosterDecision, RosterEntry, RosterFull, RosterItem
from ..xmpp.stanza import E, PRESENCE



def _q(name: str) -> str:
    return f"{{{ROSTER_NS}}}{name}"


def parse_set(query, limits) -> tuple[str, RosterItem | None]:
    """Check a roster set (§2.3.3, §2.5.3) against *limits* (the ``[im]``
    config): (contact JID, requested item or None for a remove)."""
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
        return str(contact), None
    name = el.get("name")
    if name is not None and len(name) > limits.roster_max_name:
        raise StanzaError("not-acceptable",
                          f"a name may have at most {limits.roster_max_name} characters")
    group_els = el.findall(_q("group"))
    if len(group_els) > limits.roster_max_groups:         # before reading them all
        raise StanzaError("not-acceptable",
                          f"an item may be in at most {limits.roster_max_groups} groups")
    groups = []
    for group in group_els:
        text = (group.text or "").strip()
        if not text:
            raise StanzaError("not-acceptable", "empty group name")
        if len(text) > limits.roster_max_group:
            raise StanzaError("not-acceptable", f"a group name may have at most "
                                                f"{limits.roster_max_group} characters")
        if text in groups:
            raise StanzaError("bad-request", f"group {text!r} given twice")
        groups.append(text)
    # subscription/ask sent by a client are ignored: only the server sets them
    return str(contact), RosterItem(str(contact), name or None, groups=tuple(groups))


# -- decisions (pure: the roster service runs them inside the transaction) -------------------

def decide_set(wanted: RosterItem):
    """§2.3: store the client's name and groups; subscription, ask and
    pre-approval stay as the server has them."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        existing = entries[wanted.jid].item
        item = RosterItem(wanted.jid, wanted.name, groups=wanted.groups)
        if existing is not None:
            item.subscription, item.ask = existing.subscription, existing.ask
            item.approved = existing.approved
        return RosterDecision(items={wanted.jid: item})
    return decide


def decide_remove(contact: str):
    """§2.5.2: drop the item and any pending request. The result is what
    there was — (item, request pending?) — or None if neither was there."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        entry = entries[contact]
        if entry.item is None and entry.request is None:
            return RosterDecision()
        return RosterDecision(items={contact: None}, requests={contact: None},
                              result=(entry.item, entry.request is not None))
    return decide


class Roster(Module):
    name = "roster"
    stream_features = ((ROSTERVER_FEATURE_NS, "ver"),)          # XEP-0237 §3

    def hooks(self):
        return [iq("get", "self", ROSTER_NS, "query", self.roster_get),
                iq("set", "self", ROSTER_NS, "query", self.roster_set),
                iq("get", "bare", ROSTER_NS, "query", self.forbidden),
                iq("set", "bare", ROSTER_NS, "query", self.forbidden)]

    async def roster_get(self, event) -> bool:
        """§2.1.3 (with §2.6.3): the whole roster, or nothing if the cache is current."""
        version, items = await self.host.rosters.get(event.from_.local)
        if event.origin is not None:
            event.origin.roster_requested = True                 # an interested resource
        asked = event.stanza[0].get("ver")
        if asked is not None and asked == str(version):
            await event.reply()
            return True
        query = E(_q("query"), {"ver": str(version)})
        for jid, item in items.items():
            query.append(item_element(item, jid))
        await event.reply(query)
        return True

    async def roster_set(self, event) -> bool:
        """§2.3 add or update, §2.5 remove; the push goes out before the result."""
        user = event.from_.local
        contact, wanted = parse_set(event.stanza[0], self.host.global_config.im)
        if wanted is None:
            await self.roster_remove(event, user, contact)
        else:
            try:
                await self.host.rosters.update(user, [contact], decide_set(wanted))
            except RosterFull:
                raise StanzaError("not-allowed", "the roster is full") from None
        await event.reply()
        return True

    async def roster_remove(self, event, user: str, contact: str) -> None:
        """§2.5.2: the item goes first, then the contact is told what was cancelled."""
        removed = await self.host.rosters.update(user, [contact], decide_remove(contact))
        if removed is None:
            raise StanzaError("item-not-found", "no such roster item")
        item, request_pending = removed
        bare = f"{user}@{self.host.domain}"
        if item is not None and (item.subscription in ("to", "both") or item.ask):
            await event.send(E(PRESENCE, {"type": "unsubscribe", "from": bare, "to": contact}))
        shared = item is not None and item.subscription in ("from", "both")
        if shared:
            await self.host.events.fire("presence-revoke", PresenceShare(self.host, user, contact))
        if shared or request_pending:
            await event.send(E(PRESENCE, {"type": "unsubscribed", "from": bare, "to": contact}))

    async def forbidden(self, event) -> bool:
        raise StanzaError("forbidden", "a roster belongs to its user alone")


MODULE = Roster
