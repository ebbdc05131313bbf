"""XEP-0191 Blocking Command (version 1.3).

The commands (§3):

- §3.2 retrieve: the stored blocklist. The asking resource becomes
  "interested" (``session.blocklist_requested``) and from then on gets a push
  for every change, as roster pushes work.
- §3.3 block: at least one ``<item/>`` (else ``<bad-request/>``); a malformed
  ``jid`` is ``<jid-malformed/>``. Before the block takes effect, the
  blocked contacts that may see the user's presence (subscription
  ``from``/``both``) get unavailable presence (``presence-revoke``, sent by
  the presence module), so does anyone matched that got directed presence,
  and the user's resources get unavailable presence from the blocked
  contacts they were watching (the SHOULD added in 1.3).
- §3.4 unblock, §3.5 unblock all (an empty ``<unblock/>``): the unblocked
  contacts allowed to see the user's presence get it again
  (``presence-grant``), and those the user is subscribed to are probed so
  that they reappear.

What a block does (§3.3), checked on every stanza:

- From a blocked JID to the user (``filter/in``): presence is dropped
  without an answer, a message gets ``<service-unavailable/>``, an IQ get/set
  gets ``<service-unavailable/>``, an IQ result/error is dropped. The user
  looks offline.
- From the user's client to a blocked JID (``pre-message``,
  ``pre-presence``, ``pre-iq``): ``<not-acceptable/>`` with
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>``.
- Sent by the server on the user's behalf (presence broadcast, PEP
  notifications) to a blocked local JID: dropped in ``filter/in``. Errors
  still go through (they answer the blocked JID's own stanzas), and so does
  subscription bookkeeping (unsubscribe/unsubscribed when the user removes
  the contact from the roster), so that a blocked contact can still be
  removed cleanly. Remote recipients need a ``filter/out`` event in the
  router; the handler is registered already.

Matching follows §6 and is the sans-IO core's (``server/xmpp/blocklist.py``,
which the PEP module uses too): ``user@domain/resource`` matches only that
resource, ``user@domain`` any of its resources, ``domain/resource`` that
resource of the domain or of any account there (as XEP-0016 §2.1 derives
it), and ``domain`` the domain and every address at it.

Never blocked: the user's own resources (§5: a server "MUST NOT block
communications from one of a user's resources to another"), and the user's
own server, so that blocking one's own domain still leaves the server
answering the user's requests.

Storage is the truth; a user's list is cached while the user is online.
"""

from __future__ import annotations

import logging

from ..core.events import PresenceShare, SessionEvent
from ..core.module import Hook, Module, iq
from ..xmpp.blocklist import is_blocked, matches
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import BLOCKING_ERRORS_NS as ERRORS_NS
from ..xmpp.namespaces import BLOCKING_NS as NS
from ..xmpp.stanza import E, PRESENCE, error_reply, iq as iq_stanza, local_name, sub

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})

log = logging.getLogger("xferd.blocking")


# -- the lists ---------------------------------------------------------------------
class Blocklists:
    """Every user's blocklist, read from storage and kept while the user is
    online (the lists are consulted for each stanza delivered to them)."""

    def __init__(self, host):
        self.host = host
        self._cache: dict[str, frozenset[str]] = {}
        self._changes = 0        # a read that overlapped a change is not cached

    async def get(self, username: str) -> frozenset[str]:
        cached = self._cache.get(username)
        if cached is not None:
            return cached
        changes = self._changes
        items = frozenset(await self.host.storage.get_blocklist(self.host.domain, username))
        if changes == self._changes and self.host.user_sessions(username):
            self._cache[username] = items
        return items

    async def change(self, username: str, jids: list[str], blocked: bool) -> None:
        await self.host.storage.set_blocked(self.host.domain, username, jids, blocked)
        self._changes += 1
        self._cache.pop(username, None)

    def forget(self, username: str) -> None:
        self._cache.pop(username, None)


def _items(command) -> list[str]:
    """The prepared JIDs of a command's ``<item/>`` children, in order."""
    jids: list[str] = []
    for item in command.findall(f"{{{NS}}}item"):
        text = item.get("jid")
        if not text:
            raise StanzaError("bad-request", "an item needs a jid")
        try:
            jid = str(JID.parse(text))
        except JIDError as exc:
            raise StanzaError("jid-malformed", f"{text!r}: {exc}") from None
        if jid not in jids:
            jids.append(jid)
    return jids


def _blocked_error() -> StanzaError:
    return StanzaError("not-acceptable", "you have blocked this address",
                       extra=E(f"{{{ERRORS_NS}}}blocked"))


# -- the module --------------------------------------------------------------------
class Blocking(Module):
    name = "blocking"
    # a block withdraws the user's presence and an unblock restores it:
    # presence-revoke / presence-grant, which the presence module sends
    depends = ("presence",)
    features = (NS,)

    def __init__(self, host):
        super().__init__(host)
        self.lists = Blocklists(host)

    def hooks(self):
        return [
            iq("get", "self", NS, "blocklist", self.retrieve),
            iq("set", "self", NS, "block", self.block),
            iq("set", "self", NS, "unblock", self.unblock),
            iq("get", "bare", NS, "blocklist", self.someone_else),
            iq("set", "bare", NS, "block", self.someone_else),
            iq("set", "bare", NS, "unblock", self.someone_else),
            # before presence/message handling, which may take the stanza over
            Hook("filter/in", self.inbound, priority=100),
            Hook("filter/out", self.outbound_on_behalf, priority=100),
            *(Hook(f"pre-{kind}", self.outbound, priority=100)
              for kind in ("message", "presence", "iq")),
            Hook("resource-unbind", self.unbound),
        ]

    def _is_own_server(self, jid: JID) -> bool:
        return jid.local is None and jid.resource is None and jid.domain == self.host.domain

    def _push(self, username: str, command: str, jids: list[str]) -> None:
        """§3.3–§3.5: tell every interested resource what changed."""
        for session in list(self.host.user_sessions(username).values()):
            if getattr(session, "blocklist_requested", False):
                payload = E(f"{{{NS}}}{command}")
                for jid in jids:
                    sub(payload, f"{{{NS}}}item", {"jid": jid})
                session.send(iq_stanza("set", to=str(session.jid),
                                       from_=str(session.jid.bare), payload=payload))

    async def _audience(self, username: str, items) -> tuple[list[str], list[str]]:
        """Roster contacts matched by *items*: (who sees the user's presence,
        whose presence the user sees)."""
        _, roster = await self.host.rosters.get(username)
        watchers, watched = [], []
        for contact, item in roster.items():
            if matches(items, contact):
                if item.subscription in ("from", "both"):
                    watchers.append(contact)
                if item.subscription in ("to", "both"):
                    watched.append(contact)
        return watchers, watched

    async def _withdraw_presence(self, event, username: str, items) -> None:
        """§3.3: the blocked JIDs see the user go offline, and vice versa."""
        host = self.host
        sessions = host.available_sessions(username)
        if not sessions:
            return
        watchers, watched = await self._audience(username, items)
        for contact in watchers:
            await host.events.fire("presence-revoke", PresenceShare(host, username, contact))
        for session in sessions:
            for target in sorted(session.directed):
                if matches(items, target):
                    session.directed.discard(target)
                    await event.send(E(PRESENCE, {"type": "unavailable",
                                                  "from": str(session.jid), "to": target}))
            for contact in watched:
                session.send(E(PRESENCE, {"type": "unavailable", "from": contact,
                                          "to": str(session.jid)}))

    async def _restore_presence(self, event, username: str, items) -> None:
        """§3.4: unblocked contacts see the user's presence again, and the
        user asks for theirs."""
        host = self.host
        if not items or not host.available_sessions(username):
            return
        watchers, watched = await self._audience(username, items)
        for contact in watchers:
            await host.events.fire("presence-grant", PresenceShare(host, username, contact))
        for contact in watched:
            await event.send(E(PRESENCE, {"type": "probe", "from": str(event.to),
                                          "to": contact}))

    # -- the commands ------------------------------------------------------------
    async def retrieve(self, event) -> bool:
        if event.origin is not None:
            event.origin.blocklist_requested = True
        answer = E(f"{{{NS}}}blocklist")
        for jid in sorted(await self.lists.get(event.to.local)):
            sub(answer, f"{{{NS}}}item", {"jid": jid})
        await event.reply(answer)
        return True

    async def block(self, event) -> bool:
        username = event.to.local
        jids = _items(event.stanza[0])
        if not jids:
            raise StanzaError("bad-request", "name at least one JID to block")
        # before storing: afterwards the unavailable presence would be filtered
        await self._withdraw_presence(event, username, frozenset(jids))
        await self.lists.change(username, jids, True)
        log.debug("%s@%s blocked %s", username, self.host.domain, jids)
        await event.reply()
        self._push(username, "block", jids)
        return True

    async def unblock(self, event) -> bool:
        username = event.to.local
        jids = _items(event.stanza[0])
        before = await self.lists.get(username)
        await self.lists.change(username, jids, False)
        log.debug("%s@%s unblocked %s", username, self.host.domain, jids or "everyone")
        await event.reply()
        self._push(username, "unblock", jids)
        await self._restore_presence(event, username,
                                     before if not jids else before & set(jids))
        return True

    async def someone_else(self, event) -> bool:
        raise StanzaError("forbidden", "a blocklist belongs to its owner alone")

    # -- enforcement -------------------------------------------------------------
    async def _senders_list(self, sender: JID):
        """The blocklist of a local *sender*, on this host or another local one."""
        if sender.domain == self.host.domain:
            return await self.lists.get(sender.local)
        return frozenset(await self.host.storage.get_blocklist(sender.domain, sender.local))

    async def inbound(self, event) -> bool:
        """filter/in: True drops the stanza; StanzaError bounces it."""
        sender, recipient, stanza = event.from_, event.to, event.stanza
        if sender is None or sender.bare == recipient.bare or self._is_own_server(sender):
            return False
        if is_blocked(await self.lists.get(recipient.local), sender):
            if local_name(stanza) == "presence" or stanza.get("type") in ("result", "error"):
                return True
            raise StanzaError("service-unavailable")
        return await self.outbound_on_behalf(event)

    async def outbound_on_behalf(self, event) -> bool:
        """A stanza the server sends for a local user to a JID the user blocked
        is dropped. (The user's own stanzas were refused earlier, in ``pre-*``.)"""
        sender, recipient, stanza = event.from_, event.to, event.stanza
        if sender is None or sender.local is None or recipient is None:
            return False
        if sender.domain != self.host.domain and sender.domain not in self.host.server.hosts:
            return False
        if stanza.get("type") == "error" or (local_name(stanza) == "presence" and
                                              stanza.get("type") in SUBSCRIPTION_TYPES):
            return False
        return is_blocked(await self._senders_list(sender), recipient)

    async def outbound(self, event) -> bool:
        """pre-message, pre-presence, pre-iq: the user's client sends to a JID
        the user has blocked."""
        to, sender = event.to, event.from_
        if to is None or to.bare == sender.bare or self._is_own_server(to):
            return False
        if not is_blocked(await self.lists.get(sender.local), to):
            return False
        # straight back to the client: routed, an error "from" the blocked
        # JID would itself be filtered out on the way in
        if event.stanza.get("type") not in ("error", "result"):
            event.origin.send(error_reply(event.stanza, _blocked_error()))
        return True

    def unbound(self, event: SessionEvent) -> None:
        username = event.session.jid.local
        if not self.host.user_sessions(username):
            self.lists.forget(username)


MODULE = Blocking
