"""XEP-0012 Last Activity (version 2.0): the server's uptime and when a user
was last connected.

- The server (§5, "Server and Component Query"): an IQ-get to the domain is
  answered with ``seconds`` = how long the server has been running (since
  this host loaded its modules, at start-up), without text. What Gajim's
  server info shows as "uptime".
- An account's bare JID (§3, "Offline User Query"), answered by the server
  for the user:

  * no such account: ``<service-unavailable/>`` (RFC 6121 §8.5.1, as every
    other IQ to it);
  * a requester not allowed to see the user's presence: ``<forbidden/>``
    (§3 "MUST return a <forbidden/> error", §8: anything else would be a
    presence leak). Allowed are the user's own resources and the contacts
    the user's roster shares presence with (subscription ``from`` or
    ``both``, RFC 6121 §3); a requester the user blocked never gets here
    (XEP-0191, ``blocking.py``);
  * the user has a connected resource: ``seconds='0'`` and no text (§3:
    "MUST … contain an empty <query/> element whose 'seconds' attribute is
    set to a value of '0'") — so one's own query always gets 0;
  * otherwise the seconds since the user's last resource went away, with the
    status text of the last unavailable presence it sent (§3). That logout is
    recorded when the last resource unbinds (``resource-unbind``) and is kept
    in storage (:class:`storage.api.LastActivityStore`), so it survives a
    restart and goes with the account. A user with no logout recorded (never
    connected since this was added) gets ``<service-unavailable/>``, as in
    ejabberd.
- A full JID (§4, "Online User Query"): the IQ goes to the resource (the
  router delivers it; a client answers with its idle time or an error), but
  only if the requester may see the user's presence: otherwise the server
  answers ``<forbidden/>`` itself (§4: "MUST NOT deliver the IQ-get …
  MUST return a <forbidden/> error").
- ``jabber:iq:last`` is announced for the domain and for every account (§6).

Deviation from Prosody (``mod_lastactivity``), which keeps the last
unavailable presence in memory only and answers a user's own query with
that instead of 0; we follow §3. XEP-0227 export/import
(``storage/pie.py``) does not carry the last logout: the format has no place
for it; an imported account starts without one.
"""

from __future__ import annotations

import logging
import time

from ..core.events import SessionEvent
from ..core.module import Hook, Module, iq
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID
from ..xmpp.namespaces import CLIENT_NS
from ..xmpp.namespaces import LAST_NS as NS
from ..xmpp.roster import SHARES_PRESENCE
from ..xmpp.stanza import E
from storage.api import LastActivity

log = logging.getLogger("xferd.last")

QUERY = f"{{{NS}}}query"
STATUS = f"{{{CLIENT_NS}}}status"


def _query(seconds: float, text: str | None = None):
    return E(QUERY, {"seconds": str(max(0, int(seconds)))}, text=text or None)


class Last(Module):
    name = "last"
    features = (NS,)
    account_features = (NS,)

    def __init__(self, host):
        super().__init__(host)
        self.started = time.monotonic()
        #: bound session → status text of the last unavailable presence it
        #: broadcast (None: none, or available since); one entry per session
        #: that sent one, removed when it unbinds
        self.statuses: dict[object, str | None] = {}

    def hooks(self):
        return [iq("get", "host", NS, "query", self.uptime),
                # "self" (one's own account) falls back to "bare" in the router
                iq("get", "bare", NS, "query", self.account),
                iq("get", "full", NS, "query", self.resource),
                # before presence.py takes the stanza over
                Hook("pre-presence", self.presence_sent, priority=10),
                # before presence.py tells the contacts the resource is gone:
                # whoever sees it go can already read the logout
                Hook("resource-unbind", self.unbound, priority=10)]

    # -- §5: the server -----------------------------------------------------------------
    async def uptime(self, event) -> bool:
        await event.reply(_query(time.monotonic() - self.started))
        return True

    # -- §3: an account -----------------------------------------------------------------
    async def account(self, event) -> bool:
        host, user = self.host, event.to.local
        if not host.user_sessions(user) and \
                not await host.storage.user_exists(host.domain, user):
            raise StanzaError("service-unavailable")
        await self._check_allowed(user, event.from_)
        if host.user_sessions(user):
            await event.reply(_query(0))
            return True
        last = await host.storage.get_last_activity(host.domain, user)
        if last is None:
            raise StanzaError("service-unavailable", "no last activity recorded")
        await event.reply(_query(time.time() - last.logout_at, last.status))
        return True

    # -- §4: a resource -----------------------------------------------------------------
    async def resource(self, event) -> bool:
        await self._check_allowed(event.to.local, event.from_)
        return False                    # the router delivers it to the resource

    async def _check_allowed(self, user: str, requester: JID | None) -> None:
        """§3/§4/§8: only who may see the user's presence learns anything."""
        if requester is None:
            raise StanzaError("forbidden")
        if requester.local == user and requester.domain == self.host.domain:
            return
        item = await self.host.rosters.item(user, str(requester.bare))
        if item is None or item.subscription not in SHARES_PRESENCE:
            raise StanzaError("forbidden", "you are not subscribed to this user's presence")

    # -- recording the last logout ------------------------------------------------------
    def presence_sent(self, event) -> bool:
        """Remember the status of a broadcast unavailable presence (one
        without 'to', or to the user's own bare JID); available forgets it."""
        session, stanza = event.origin, event.stanza
        if event.to is not None and event.to != session.jid.bare:
            return False                # directed presence: not a logout
        kind = stanza.get("type")
        if kind == "unavailable":
            self.statuses[session] = stanza.findtext(STATUS)
        elif kind is None:
            self.statuses.pop(session, None)
        return False                    # presence.py still handles it

    async def unbound(self, event: SessionEvent) -> None:
        session = event.session
        status = self.statuses.pop(session, None)
        user = session.jid.local
        if self.host.user_sessions(user):
            return                      # another resource is still connected
        try:
            await self.host.storage.set_last_activity(
                self.host.domain, user, LastActivity(time.time(), status))
        except Exception:
            # the resource is gone all the same: the handlers after us (the
            # unavailable presence to the contacts) must still run
            log.exception("could not record the logout of %s@%s", user, self.host.domain)


MODULE = Last
