"""RFC 6121 §3: presence subscriptions, carried out row by row from the
Appendix A table in ``server/xmpp/subscription.py``.

Outbound (the user sends subscribe/subscribed/unsubscribe/unsubscribed):
the ``pre-presence`` hook updates the user's roster item, then routes the
stanza from the user's *bare* JID to the contact's bare JID (§3.1.2).
Inbound (such a stanza arrives for a local user): the contact's roster item
is updated, a ``subscribe`` is kept whole until answered — with every child,
so a XEP-0283 ``<moved/>`` survives — and delivered to the user's available
resources now or at their next login (§3.1.3).

Every change of an item is one storage transaction and is announced with
``roster-changed`` (the roster module pushes it). Presence that has to follow
a change is asked of the presence module with ``presence-grant`` /
``presence-revoke``.
"""

from __future__ import annotations

import copy
import logging

from ..xmpp.roster import RosterItem

from ..core.events import PresenceShare, RosterChange
from ..xmpp import subscription as table
from ..xmpp.errors import StanzaError
from ..xmpp.stanza import E, PRESENCE, from_text, to_text

log = logging.getLogger("xferd.subscription")


def setup(host) -> None:
    storage = host.storage

    async def state(user: str, contact: str):
        item = await storage.get_roster_item(host.domain, user, contact)
        pending = await storage.get_pending_request(host.domain, user, contact) is not None
        current = table.state_of(item.subscription if item else "none",
                                 bool(item and item.ask), pending)
        return item, pending, current

    async def apply(user: str, contact: str, item: RosterItem | None, pending: bool,
                    outcome: table.Outcome, *, request: str | None = None,
                    approved: bool | None = None) -> None:
        """Store the outcome's state (one transaction) and announce roster changes."""
        subscription, ask, pending_in = table.parts_of(outcome.state)
        new = copy.copy(item) if item is not None else None
        if new is None and (subscription != "none" or ask or approved):
            new = RosterItem(contact)
        if new is not None:
            new.subscription, new.ask = subscription, ask
            if approved is not None:
                new.approved = approved
            if subscription in ("from", "both"):
                new.approved = False            # a pre-approval is used up (§3.4)
        pending_change = None
        if pending and not pending_in:
            pending_change = False
        elif pending_in and request is not None:
            pending_change = request
        item_changed = new != item
        if not item_changed and pending_change is None:
            return
        version = await storage.save_roster_change(host.domain, user, contact, new,
                                                   pending_in=pending_change)
        if item_changed:
            await host.events.fire("roster-changed",
                                   RosterChange(host, user, contact, new, version))

    def presence(kind: str, user: str, contact: str):
        return E(PRESENCE, {"type": kind, "from": f"{user}@{host.domain}", "to": contact})

    # -- the user sends ------------------------------------------------------------------
    async def outbound(event) -> bool:
        kind = event.stanza.get("type")
        if kind not in table.SUBSCRIPTION_TYPES:
            return False
        if event.to is None:
            raise StanzaError("bad-request", "a subscription needs a contact's JID in 'to'")
        user, contact = event.from_.local, str(event.to.bare)
        async with host.roster_items(user, contact):
            item, pending, current = await state(user, contact)
            outcome = table.OUTBOUND[(kind, current)]
            approved = {table.PRE_APPROVE: True,
                        table.CANCEL_PRE_APPROVAL: False}.get(outcome.effect)
            log.debug("%s@%s sends %s to %s: %s → %s", user, host.domain, kind, contact,
                      current, outcome.state)
            await apply(user, contact, item, pending, outcome, approved=approved)
        if outcome.effect == table.SEND_UNAVAILABLE:         # before the stanza goes
            await host.events.fire("presence-revoke", PresenceShare(host, user, contact))
        if outcome.forward:
            stanza = event.stanza
            stanza.set("from", f"{user}@{host.domain}")       # §3.1.2: bare JIDs
            stanza.set("to", contact)
            await event.send(stanza)
        if outcome.effect == table.SEND_PRESENCE:
            await host.events.fire("presence-grant", PresenceShare(host, user, contact))
        return True

    # -- … arrives for the user -------------------------------------------------------------
    async def inbound(event) -> bool:
        kind = event.stanza.get("type")
        if kind not in table.SUBSCRIPTION_TYPES or event.from_ is None:
            return False
        user, contact = event.to.local, str(event.from_.bare)
        if not await storage.user_exists(host.domain, user):
            if kind == "subscribe":                            # §3.1.3 / §8.5.1
                await event.send(presence("unsubscribed", user, contact))
            return True
        async with host.roster_items(user, contact):
            item, pending, current = await state(user, contact)
            if kind == "subscribe" and item is not None and item.approved \
                    and current in table.PRE_APPROVED:
                outcome = table.PRE_APPROVED[current]
            else:
                outcome = table.INBOUND[(kind, current)]
            log.debug("%s arrives from %s for %s@%s: %s → %s", kind, contact, user,
                      host.domain, current, outcome.state)
            stanza = event.stanza
            stanza.set("from", contact)
            stanza.set("to", f"{user}@{host.domain}")
            request = to_text(stanza) if outcome.effect == table.STORE_REQUEST else None
            await apply(user, contact, item, pending, outcome, request=request)
        if outcome.effect == table.AUTO_REPLY_SUBSCRIBED:
            await event.send(presence("subscribed", user, contact))
        elif outcome.effect == table.SEND_PRESENCE:              # pre-approved
            await event.send(presence("subscribed", user, contact))
            await host.events.fire("presence-grant", PresenceShare(host, user, contact))
        if outcome.forward:
            for session in host.available_sessions(user):
                session.send(stanza)
        return True

    # -- requests kept while the user was away ---------------------------------------------------
    async def deliver_pending(session) -> None:
        for text in (await storage.get_pending_in(host.domain, session.jid.local)).values():
            session.send(from_text(text))

    host.events.on("pre-presence", outbound, priority=10)
    host.events.on("presence/bare", inbound, priority=10)
    host.events.on("presence/full", inbound, priority=10)   # §3.1.3: handled as bare
    host.events.on("presence-initial", deliver_pending)
