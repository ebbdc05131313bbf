"""RFC 6121 §3: presence subscriptions, carried out row by row from the
Appendix A table in ``server/xmpp/subscription.py``.

Outbound (the user sends subscribe/subscribed/unsubscribe/unsubscribed,
§3.x.2): the ``pre-presence`` hook changes the user's roster item, then
routes the stanza from the user's *bare* JID to the contact's bare JID
(§3.1.2). Inbound (such a stanza arrives for a local user, §3.x.3): the
contact's roster item is changed, a ``subscribe`` is kept whole until
answered — with every child, so a XEP-0283 ``<moved/>`` survives — and
delivered to the user's available resources now or at their next login
(§3.1.3).

A kept request is bounded (``[im] subscription_max_status`` and
``subscription_max_request``): RFC 6121 §3.1.3 has the server keep the
request, and refusing one for a long ``<status/>`` would lose it, so we keep
it and cut instead — each ``<status/>`` to its first N characters, then, if
the stanza is still too big, its other children, last first. What the user's
online resources get at once is the stanza as it came; what is kept (and
sent at every later login until answered) is the cut one. Prosody keeps the
whole stanza and cuts nothing.

Each change is one call of the roster service (``host.rosters.update``) with
the table's ``decide`` function for the stanza: the state is read, the row
chosen and its result stored in one transaction, and pushed. What the row
asks for next — routing the stanza, answering for the user, presence through
``presence-grant`` / ``presence-revoke`` — happens after the change, with no
roster lock held.
"""

from __future__ import annotations

import copy
import logging

from ..core.events import PresenceShare, SessionEvent
from ..core.module import Hook, Module
from ..xmpp import subscription as table
from ..xmpp.errors import StanzaError
from ..xmpp.namespaces import PREAPPROVAL_FEATURE_NS
from ..xmpp.roster import RosterFull
from ..xmpp.stanza import E, PRESENCE, from_text, local_name, to_text

log = logging.getLogger("xferd.subscription")


def stored_request(stanza, max_status: int, max_bytes: int) -> str:
    """*stanza* as XML text with each ``<status/>`` cut to *max_status*
    characters and, while the text has more than *max_bytes* bytes, its
    last child other than the first ``<status/>`` dropped (RFC 6121 §3.1.3
    keeps the request; these bound what it costs to keep)."""
    kept = copy.deepcopy(stanza)
    kept.tail = None
    statuses = [c for c in kept if isinstance(c.tag, str) and local_name(c) == "status"]
    for status in statuses:
        if status.text and len(status.text) > max_status:
            status.text = status.text[:max_status]
        for child in list(status):           # <status/> is text only (RFC 6120 §4.7.2.2)
            status.remove(child)
    text = to_text(kept)
    while len(text.encode()) > max_bytes:
        spare = [c for c in kept if not statuses or c is not statuses[0]]
        if not spare:
            break
        kept.remove(spare[-1])
        text = to_text(kept)
    return text


class Subscription(Module):
    name = "subscription"
    depends = ("roster",)
    #: RFC 6121 §3.4: "If a server supports subscription pre-approvals, then
    #: it MUST advertise the following stream feature during stream negotiation"
    stream_features = ((PREAPPROVAL_FEATURE_NS, "sub"),)

    def hooks(self):
        return [Hook("pre-presence", self.outbound, priority=10),
                Hook("presence/bare", self.inbound, priority=10),
                Hook("presence/full", self.inbound, priority=10),   # §3.1.3: handled as bare
                Hook("presence-initial", self.deliver_pending)]

    def _presence(self, kind: str, user: str, contact: str):
        return E(PRESENCE, {"type": kind, "from": f"{user}@{self.host.domain}", "to": contact})

    # -- the user sends ------------------------------------------------------------------
    async def outbound(self, event) -> bool:
        kind = event.stanza.get("type")
        if kind not in table.SUBSCRIPTION_TYPES:
            return False
        if event.to is None:
            raise StanzaError("bad-request", "a subscription needs a contact's JID in 'to'")
        user, contact = event.from_.local, str(event.to.bare)
        try:
            current, outcome = await self.host.rosters.update(
                user, [contact], table.decide_outbound(kind, contact))
        except RosterFull:
            raise StanzaError("not-allowed", "the roster is full") from None
        log.debug("%s@%s sends %s to %s: %s → %s", user, self.host.domain, kind, contact,
                  current, outcome.state)
        if outcome.effect == table.SEND_UNAVAILABLE:         # before the stanza goes
            await self.host.events.fire("presence-revoke", PresenceShare(self.host, user, contact))
        if outcome.forward:
            stanza = event.stanza
            stanza.set("from", f"{user}@{self.host.domain}")  # §3.1.2: bare JIDs
            stanza.set("to", contact)
            await event.send(stanza)
        if outcome.effect == table.SEND_PRESENCE:
            await self.host.events.fire("presence-grant", PresenceShare(self.host, user, contact))
        return True

    # -- … arrives for the user -------------------------------------------------------------
    async def inbound(self, event) -> bool:
        kind = event.stanza.get("type")
        if kind not in table.SUBSCRIPTION_TYPES or event.from_ is None:
            return False
        user, contact = event.to.local, str(event.from_.bare)
        if not await self.host.storage.user_exists(self.host.domain, user):
            if kind == "subscribe":                            # §3.1.3 / §8.5.1
                await event.send(self._presence("unsubscribed", user, contact))
            return True
        stanza = event.stanza
        stanza.set("from", contact)
        stanza.set("to", f"{user}@{self.host.domain}")
        request = self._kept(stanza) if kind == "subscribe" else None
        current, outcome = await self.host.rosters.update(
            user, [contact], table.decide_inbound(kind, contact, request))
        log.debug("%s arrives from %s for %s@%s: %s → %s", kind, contact, user,
                  self.host.domain, current, outcome.state)
        if outcome.effect == table.AUTO_REPLY_SUBSCRIBED:
            await event.send(self._presence("subscribed", user, contact))
        elif outcome.effect == table.SEND_PRESENCE:              # pre-approved
            await event.send(self._presence("subscribed", user, contact))
            await self.host.events.fire("presence-grant", PresenceShare(self.host, user, contact))
        if outcome.forward:
            for session in self.host.available_sessions(user):
                session.send(stanza)
        if outcome.effect == table.SEND_UNAVAILABLE:
            # §3.3.3 step 3: the contact no longer receives the user's presence,
            # so it is told the user's resources are gone
            await self.host.events.fire("presence-revoke", PresenceShare(self.host, user, contact))
        return True

    def _kept(self, stanza) -> str:
        """The request as stored: see the module docstring."""
        im = self.host.global_config.im
        return stored_request(stanza, im.subscription_max_status, im.subscription_max_request)

    # -- requests kept while the user was away ---------------------------------------------------
    async def deliver_pending(self, event: SessionEvent) -> None:
        """§3.1.3: requests not yet answered go to each session at its initial presence."""
        session = event.session
        for text in (await self.host.rosters.pending_requests(session.jid.local)).values():
            session.send(from_text(text))


MODULE = Subscription
