"""XEP-0280 Message Carbons (version 1.0.1): every resource of a user that
asks for it sees both sides of the user's conversations.

- §4 discovery: the domain announces ``urn:xmpp:carbons:2`` and
  ``urn:xmpp:carbons:rules:0`` (we apply the §6.1 rules as required).
- §5 enable/disable: an IQ set of ``<enable/>``/``<disable/>`` to the user's
  own bare JID (or without ``to``; also accepted to the domain) switches
  copies on or off for the asking resource only (``session.carbons``; a
  stream-management resumption keeps the session object, so the flag).
  Repeating either is answered with a result (§10). Copies go to every bound
  resource that enabled them, whether it sent presence or not (as Prosody;
  ejabberd copies to available resources only). A request to someone
  else's account, or from outside this server, is ``<not-allowed/>``.
- §7 received carbons: a message for the user (from anywhere: a local user,
  or another server over s2s — both reach us as ``message/bare`` or
  ``message/full``) is copied to each carbons-enabled resource that does not
  get the original under RFC 6121 (``routing.bare_message_receivers`` is the
  choice ``message.py`` makes). Copies are sent before the original is
  delivered; they run after archiving (priority 10 < 20), so a copy carries
  the ``<stanza-id/>`` the archive added.
- §8 sent carbons: a message a resource sends (``pre-message``) is copied to
  the user's other carbons-enabled resources, whether the sender enabled
  carbons or not, and whether the recipient is local, remote or offline. A
  message to the user's own account is the one case both apply: it is copied
  as *sent* to the enabled resources other than the sender and those that get
  the original, and not again as *received* (one copy per resource; the XEP
  does not cover it; Prosody sends both).
- §6.1 which messages, §9 ``<private/>``/``<no-copy/>``, the copy's form and
  the forged-carbon guard of §11: ``server/xmpp/carbons.py``. The
  ``<private/>`` element is left in the message delivered to the recipient
  (1.0 dropped the requirement to remove it; Prosody still removes it).
  A message with ``<sent/>``/``<received/>`` that reaches a user from anyone
  but the user's bare JID has them removed before archiving and delivery
  (priority 30).
- An error is copied when it answers a copied message (§6.1): we remember the
  (user, peer, id) of the last ``ERROR_MEMORY`` copied messages (messages
  that passed while none of the user's resources had carbons on are not
  remembered: nothing is done for users who do not use carbons).
- Copies are handed to the sessions directly, never routed: nothing can
  bounce them back to the original sender (§10).
- A message the stream-management module re-routes after a session died with
  it (``"redelivered"`` in the event's tags) was copied the first time: it is
  not copied again.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict

from ..core.module import Hook, Module, iq
from ..xmpp.carbons import eligible, error_eligible, is_carbon, strip_forged, wrap
from ..xmpp.errors import StanzaError
from ..xmpp.hints import message_type
from ..xmpp.namespaces import CARBONS_NS, CARBONS_RULES_NS
from ..xmpp.routing import bare_message_receivers

ERROR_MEMORY = 4096          # copied messages remembered, to copy errors that answer them
ID_LIMIT = 256               # longer ids are not remembered

log = logging.getLogger("xferd.carbons")


class Carbons(Module):
    name = "carbons"
    depends = ("message",)
    features = (CARBONS_NS, CARBONS_RULES_NS)

    def __init__(self, host):
        super().__init__(host)
        #: (user bare JID, peer bare JID, message id) of recently copied messages
        self._copied: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def hooks(self):
        toggles = [iq("set", dest, CARBONS_NS, name, handler)
                   for name in ("enable", "disable")
                   for dest, handler in (("self", self.toggle), ("host", self.toggle),
                                         ("bare", self.refuse))]
        return [*toggles,
                Hook("message/bare", self.guard, priority=30),
                Hook("message/full", self.guard, priority=30),
                Hook("message/bare", self.received, priority=10),
                Hook("message/full", self.received, priority=10),
                Hook("pre-message", self.sent, priority=10)]

    # -- §5 enable / disable ---------------------------------------------------------
    async def toggle(self, event) -> bool:
        session = event.origin
        if session is None or getattr(session, "host", None) is not self.host \
                or getattr(session, "jid", None) != event.from_:
            raise StanzaError("not-allowed", "only this server's own clients use carbons here")
        session.carbons = event.stanza[0].tag == f"{{{CARBONS_NS}}}enable"
        log.debug("%s: carbons %s", session.jid, "on" if session.carbons else "off")
        await event.reply()
        return True

    async def refuse(self, event) -> bool:
        raise StanzaError("not-allowed", "carbons are switched on for one's own resources only")

    # -- §11 forged carbons ---------------------------------------------------------
    def guard(self, event) -> None:
        stanza, to = event.stanza, event.to
        if not is_carbon(stanza) or event.from_ == to.bare:
            return
        removed = strip_forged(stanza)
        log.info("removed %d carbon element(s) from a message from %s to %s: only the "
                 "user's own server sends carbons", removed, event.from_, to)

    # -- §7 received ----------------------------------------------------------------
    def received(self, event) -> None:
        if "redelivered" in event.tags:
            return
        to, from_, stanza = event.to, event.from_, event.stanza
        enabled = [s for s in self.host.user_sessions(to.local).values()
                   if getattr(s, "carbons", False)]
        if not enabled or from_ is None:
            return                      # nobody to copy to
        if from_.local == to.local and from_.domain == to.domain:
            return                      # the user's own message: copied as sent
        kind = message_type(stanza)
        if kind == "error" and (to.resource is None or self.host.session(to) is None):
            return                      # message.py drops it: nobody gets it
        if not self._qualifies(stanza, kind, f"{to.local}@{to.domain}", str(from_.bare),
                               from_muc_participant=from_.resource is not None):
            return
        receivers = self._receivers(to, kind, event.spared)
        self._copy(stanza, "received", f"{to.local}@{to.domain}",
                   [s for s in enabled if s not in receivers and str(s.jid) not in event.spared])

    # -- §8 sent --------------------------------------------------------------------
    def sent(self, event) -> None:
        session = event.origin
        if session is None or "redelivered" in event.tags or session.jid is None:
            return
        me, stanza = session.jid, event.stanza
        enabled = [s for s in self.host.user_sessions(me.local).values()
                   if s is not session and getattr(s, "carbons", False)]
        if not enabled:
            return
        to = event.to or me.bare
        kind = message_type(stanza)
        if not self._qualifies(stanza, kind, f"{me.local}@{me.domain}", str(to.bare),
                               from_muc_participant=False):
            return
        if to.local == me.local and to.domain == me.domain:
            receivers = self._receivers(to, kind, frozenset())
            enabled = [s for s in enabled if s not in receivers]
        if event.to is None:
            stanza = _with_to(stanza, str(to))  # the copy says where it went
        self._copy(stanza, "sent", f"{me.local}@{me.domain}", enabled)

    # -- helpers --------------------------------------------------------------------
    def _qualifies(self, stanza, kind: str, user: str, peer: str, *,
                   from_muc_participant: bool) -> bool:
        """§6.1 (see ``server/xmpp/carbons.py``); remembers what it copies so
        that an error answering it qualifies too."""
        key = (user, peer, stanza.get("id") or "")
        if kind == "error":
            return error_eligible(stanza) and key in self._copied
        if not eligible(stanza, from_muc_participant=from_muc_participant):
            return False
        if key[2] and len(key[2]) <= ID_LIMIT:
            self._copied[key] = None
            self._copied.move_to_end(key)
            while len(self._copied) > ERROR_MEMORY:
                self._copied.popitem(last=False)
        return True

    def _receivers(self, to, kind: str, spared: frozenset[str]) -> list:
        """The sessions that get the original message under RFC 6121 (what
        ``message.py`` does: a bound full JID gets it; else the bare JID's
        receivers, except for an error, which is dropped)."""
        if to.resource is not None:
            target = self.host.session(to)
            if target is not None:
                return [target]
            if kind == "error":
                return []
        return bare_message_receivers(self.host.available_sessions(to.local), kind, spared)

    def _copy(self, stanza, direction: str, user: str, sessions) -> None:
        now = time.time()
        for session in sessions:
            if not session.closing:
                session.send(wrap(stanza, direction, user, str(session.jid), now))


def _with_to(stanza, to: str):
    """A copy of *stanza* addressed to *to*."""
    clone = copy.deepcopy(stanza)
    clone.set("to", to)
    return clone


MODULE = Carbons
