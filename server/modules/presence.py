"""RFC 6121 §4: presence — broadcast, probes, directed presence, priorities.

From the user's client (``pre-presence``):
* the first available presence of a session is *initial presence* (§4.2):
  it goes back to the sending resource itself ("including the resource that
  generated the presence notification in the first place", §4.2.2), to the
  user's other resources and to every contact with a ``from``
  or ``both`` subscription, probes go to every contact with ``to`` or
  ``both``, the session gets the presence of the user's other available
  resources, and ``presence-initial`` fires (offline messages, pending
  subscription requests);
* later available presence is broadcast the same way, echo included,
  without probes (§4.4.2);
* unavailable presence — sent, or implied by the connection ending — goes to
  the same audience plus everyone who got directed presence (§4.5, §4.6.3);
  it is echoed to the sending resource when its stream is still open (as
  Prosody does; a closed stream has nobody to echo to);
* presence with a ``to`` is directed presence (§4.6), routed as it is and
  remembered when it reaches someone outside the broadcast audience.

For a local user (``presence/bare``, ``presence/full``):
* a probe (§4.3.2) is answered with the current presence of each available
  resource when the prober is subscribed (``from``/``both`` in the user's
  roster), else with ``unsubscribed``; with no resource available nothing is
  sent (§4.3.2 allows either);
* other presence — including errors, e.g. a bounced subscription request —
  goes to every available resource (bare JID) or to the one resource it
  names, if available (full JID).
"""

from __future__ import annotations

import copy
import logging

from ..core.events import SessionEvent
from ..core.module import Hook, Module
from ..xmpp.namespaces import CLIENT_NS
from ..xmpp.roster import SEES_PRESENCE as SEES, SHARES_PRESENCE as SHARES
from ..xmpp.stanza import E, PRESENCE

log = logging.getLogger("xferd.presence")


def _priority(stanza) -> int:
    text = stanza.findtext(f"{{{CLIENT_NS}}}priority")
    try:
        return max(-128, min(127, int(text))) if text else 0
    except ValueError:
        return 0


def _clone(stanza, **attrs):
    el = copy.deepcopy(stanza)
    for key, value in attrs.items():
        if value is None:
            el.attrib.pop(key, None)
        else:
            el.set(key, value)
    return el


def _contacts(items: dict, subscriptions: tuple[str, ...]) -> list[str]:
    return [jid for jid, item in items.items() if item.subscription in subscriptions]


def _directed(session, to, kind) -> None:
    """Remember (or forget) who got directed presence (§4.6)."""
    target = str(to)
    if kind is None:
        session.directed.add(target)
    else:
        session.directed.discard(target)


class Presence(Module):
    name = "presence"

    def hooks(self):
        return [Hook("pre-presence", self.outbound),
                Hook("presence/bare", self.inbound),
                Hook("presence/full", self.inbound),
                Hook("resource-unbind", self.disconnected),
                Hook("presence-grant", self.grant),
                Hook("presence-revoke", self.revoke)]

    async def _roster(self, user: str) -> dict:
        return (await self.host.rosters.get(user))[1]

    async def _route(self, stanza) -> None:
        await self.host.server.router.route(stanza)

    async def _broadcast(self, session, stanza, extra: set[str] = frozenset(),
                         items=None, echo: bool = True) -> None:
        """Send *stanza* (from the session) back to the session itself (*echo*,
        §4.2.2/§4.4.2/§4.5.2), to the user's other available resources and to
        every contact that shares the user's presence (plus *extra*)."""
        user = session.jid.local
        if echo:
            session.send(_clone(stanza, to=str(session.jid)))
        for other in self.host.user_sessions(user).values():
            if other is not session and other.available:
                other.send(_clone(stanza, to=str(other.jid)))
        if items is None:
            items = await self._roster(user)
        audience = set(_contacts(items, SHARES)) | set(extra)
        for contact in sorted(audience):
            await self._route(_clone(stanza, to=contact))

    # -- from the user's client ------------------------------------------------------------
    async def outbound(self, event) -> bool:
        session, stanza = event.origin, event.stanza
        kind = stanza.get("type")
        if kind not in (None, "unavailable", "probe"):
            return False                         # subscriptions, errors: not ours
        if kind == "probe":
            return True                          # clients do not probe (§4.3): ignored
        if event.to is not None and event.to != session.jid.bare:
            _directed(session, event.to, kind)
            return False                         # the router delivers it
        stanza.attrib.pop("to", None)
        if kind == "unavailable":
            await self._go_unavailable(session, stanza)
            return True
        initial = not session.available
        session.presence = _clone(stanza, to=None)
        session.priority = _priority(stanza)
        items = await self._roster(session.jid.local)      # read once for both steps
        await self._broadcast(session, stanza, items=items)
        if initial:
            await self._initial_presence(session, items)
        return True

    async def _initial_presence(self, session, items: dict) -> None:
        user = session.jid.local
        bare = f"{user}@{self.host.domain}"
        for contact in _contacts(items, SEES):
            await self._route(E(PRESENCE, {"type": "probe", "from": bare, "to": contact}))
        for other in self.host.user_sessions(user).values():
            if other is not session and other.available:
                session.send(_clone(other.presence, to=str(session.jid)))
        await self.host.events.fire("presence-initial", SessionEvent(session))

    async def _go_unavailable(self, session, stanza=None) -> None:
        """*stanza*: the unavailable presence the client sent (echoed back to
        it); None when the stream ended (nothing to echo to)."""
        was_available = session.available
        session.presence = None
        session.priority = 0
        audience = set(session.directed)
        session.directed.clear()
        if not was_available and not audience:
            return
        unavailable = stanza if stanza is not None else E(
            PRESENCE, {"type": "unavailable", "from": str(session.jid)})
        unavailable.set("from", str(session.jid))
        if was_available:
            await self._broadcast(session, unavailable, audience, echo=stanza is not None)
        else:
            for target in sorted(audience):
                await self._route(_clone(unavailable, to=target))

    async def disconnected(self, event: SessionEvent) -> None:
        await self._go_unavailable(event.session)

    # -- for a local user ------------------------------------------------------------------------
    async def inbound(self, event) -> bool:
        stanza = event.stanza
        kind = stanza.get("type")
        if kind == "probe":
            await self._answer_probe(event)
            return True
        if kind not in (None, "unavailable", "error"):
            return False                          # subscriptions: subscription.py
        if event.to.resource is not None:
            target = self.host.session(event.to)
            if target is not None and target.available:
                target.send(stanza)
            return True
        for session in self.host.available_sessions(event.to.local):
            session.send(stanza)
        return True

    async def _answer_probe(self, event) -> None:
        host, storage = self.host, self.host.storage
        user = event.to.local
        prober = event.from_
        if prober is None:
            return
        item = await host.rosters.item(user, str(prober.bare))
        if item is None or item.subscription not in SHARES:
            if await host.events.fire("probe-unauthorized", event):
                return                              # e.g. a transfer is under way
            if await storage.user_exists(host.domain, user):
                await event.send(E(PRESENCE, {"type": "unsubscribed",
                                              "from": f"{user}@{host.domain}",
                                              "to": str(prober.bare)}))
            return
        for session in host.available_sessions(user):
            await event.send(_clone(session.presence, **{"from": str(session.jid),
                                                         "to": str(prober)}))

    # -- asked by the subscription and blocking modules -------------------------------------
    async def grant(self, share) -> None:
        """§3.1.5: the contact may now see the user's presence: send it."""
        for session in self.host.available_sessions(share.username):
            await self._route(
                _clone(session.presence, **{"from": str(session.jid), "to": share.contact}))

    async def revoke(self, share) -> None:
        """§3.2.2: the contact may no longer see it: say unavailable first."""
        for session in self.host.available_sessions(share.username):
            await self._route(
                E(PRESENCE, {"type": "unavailable", "from": str(session.jid),
                             "to": share.contact}))


MODULE = Presence
