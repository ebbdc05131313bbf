"""XEP-0191 Blocking Command (version 1.3).

The commands (§3):

- §3.2 retrieve: the stored blocklist. The asking resource becomes
  "interested" (``session.blocklist_requested``) and from then on gets a push
  for every change, as roster pushes work.
- §3.3 block: at least one ``<item/>`` (else ``<bad-request/>``); a malformed
  ``jid`` is ``<jid-malformed/>``. Before the block takes effect, presence is
  withdrawn both ways (see "Presence" below).
- §3.4 unblock, §3.5 unblock all (an empty ``<unblock/>``): presence is
  restored (see "Presence").

Presence. §3.3: "the user's server MUST send unavailable presence
information to the JID (but only if the JID is allowed to receive presence
notifications from the user …)"; §3.4: "… MUST send the user's current
presence information to the JID (but only if …)". So on a block each of the
user's available resources sends unavailable presence to

- every roster contact with a ``from``/``both`` subscription that an item
  covers (``presence-revoke``, sent by the presence module);
- the covered resources of such a contact when the items block only some of
  them (``user@domain/resource``, or ``domain/resource`` applied to each
  account at the domain): those full JIDs, the contact's other resources
  keep seeing the user;
- whoever got directed presence (RFC 6121 §4.6) that an item covers.

The XEP does not say that the user sees the blocked JIDs go offline, but
nothing of theirs reaches the user any more, so their last presence would
stay on the user's screen: each of the user's available resources also gets
unavailable presence from every covered address it was last sent available
presence from (the server notes them: "Who the user sees" below). Prosody's
mod_blocklist does only the first half (and only for a roster contact named
by an item as it is).

On an unblock, the formerly blocked contacts with ``from``/``both`` get the
user's current presence (``presence-grant``; or each resource's presence sent
to the covered resources), and those with ``to``/``both`` are probed (RFC
6121 §4.3) so that their presence reappears for the user. (Prosody instead
hands the user's server a probe as if from the contact, whose answer is the
user's current presence; it does not probe the contact.)

Who the user sees: for every user with a session, the addresses (full JIDs,
local or remote) whose available presence was let through to the user and
that have not sent unavailable since, at most ``SEEN_LIMIT`` per user (the
oldest forgotten first), dropped when the user's last session ends. For a
remote contact this is the only way the server knows its resources; for a
local one it also says which resources the user was allowed to see.

What a block does (§3.3), checked on every stanza:

- From a blocked JID to the user (``filter/in``): presence is dropped
  without an answer, a message gets ``<service-unavailable/>``, an IQ get/set
  gets ``<service-unavailable/>``, an IQ result/error is dropped. The user
  looks offline.
- From the user's client to a blocked JID (``pre-message``,
  ``pre-presence``, ``pre-iq``): ``<not-acceptable/>`` with
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>``.
- Sent by the server on the user's behalf (presence broadcast, PEP
  notifications) to a blocked JID: dropped (``filter/in`` for a local
  recipient, ``filter/out`` for a remote one). Errors still go through (they
  answer the blocked JID's own stanzas), and so does subscription
  bookkeeping (unsubscribe/unsubscribed when the user removes the contact
  from the roster), so that a blocked contact can still be removed cleanly.
- Presence (available or unavailable, broadcast or directed) from the user to
  a local bare JID some of whose resources the user blocked goes to the
  other available resources only ('to' left as the bare JID, as the presence
  module delivers it); a message to such a bare JID goes to the message
  module's choice among the resources not blocked (``StanzaEvent.spared``),
  and with none of those available it is kept as for an offline user (it then
  goes to whichever resource comes online first). Deviation: to a remote bare
  JID either goes as it is (we cannot tell the remote resources apart; its
  server may hand it to the blocked one).

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

import copy
import logging

from ..core.events import PresenceShare, SessionEvent
from ..core.module import Hook, Module, iq
from ..xmpp.blocklist import blocks_some_resources, is_blocked, matches
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import BLOCKING_ERRORS_NS as ERRORS_NS
from ..xmpp.namespaces import BLOCKING_NS as NS
from ..xmpp.roster import SEES_PRESENCE as SEES, SHARES_PRESENCE as SHARES
from ..xmpp.stanza import E, PRESENCE, error_reply, iq as iq_stanza, local_name, sub

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
SEEN_LIMIT = 10_000             # addresses noted per user (Who the user sees)

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


class PresenceSeen:
    """Who the user sees: per user, the addresses whose available presence
    was let through to the user and that have not sent unavailable since
    (most recent last; at most *limit*, the oldest forgotten first)."""

    def __init__(self, limit: int = SEEN_LIMIT):
        self.limit = limit
        self._by_user: dict[str, dict[str, None]] = {}

    def note(self, username: str, sender: str, kind: str | None) -> None:
        seen = self._by_user.get(username)
        if kind is None:
            if seen is None:
                seen = self._by_user[username] = {}
            seen.pop(sender, None)
            seen[sender] = None
            if len(seen) > self.limit:
                del seen[next(iter(seen))]
        elif kind == "unavailable" and seen:
            seen.pop(sender, None)

    def take(self, username: str, items) -> list[str]:
        """Forget and return the addresses that *items* cover."""
        seen = self._by_user.get(username)
        if not seen:
            return []
        covered = [jid for jid in seen if matches(items, jid)]
        for jid in covered:
            del seen[jid]
        return covered

    def forget(self, username: str) -> None:
        self._by_user.pop(username, None)


def covered_resources(items, contact: str) -> list[str]:
    """The full JIDs of *contact* (a bare JID or a domain) that *items* name
    when they block some of its resources (§6): ``contact/resource`` items,
    and ``domain/resource`` items applied to the contact (XEP-0016 §2.1)."""
    try:
        jid = JID.parse(contact)
    except JIDError:
        return []
    if jid.resource is not None:
        return []
    bare, domain = str(jid), jid.domain
    found = set()
    for item in items:
        if item.startswith(f"{bare}/"):
            found.add(item)
        elif item.startswith(f"{domain}/"):
            found.add(f"{bare}/{item[len(domain) + 1:]}")
    return sorted(found)


def _unavailable(from_: str, to: str):
    return E(PRESENCE, {"type": "unavailable", "from": from_, "to": to})


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
    """§3.3: ``<not-acceptable/>`` + ``<blocked/>``, of type ``cancel`` as in
    the XEP's example (and Prosody): retrying will not help, unlike the
    ``modify`` RFC 6120 gives not-acceptable by default."""
    return StanzaError("not-acceptable", "you have blocked this address", type="cancel",
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
        self.seen = PresenceSeen()

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

    async def _withdraw_presence(self, event, username: str, items) -> None:
        """§3.3: the blocked JIDs see the user go offline (see "Presence" in
        the module docstring). Sent before the block is stored: afterwards
        it would be filtered out."""
        host = self.host
        available = host.available_sessions(username)
        told: set[str] = set()          # addresses every available resource told
        if available:
            _, roster = await host.rosters.get(username)
            for contact, item in sorted(roster.items()):
                if item.subscription not in SHARES:
                    continue
                if matches(items, contact):
                    await host.events.fire("presence-revoke",
                                           PresenceShare(host, username, contact))
                    told.add(contact)
                    continue
                for target in covered_resources(items, contact):
                    for session in available:
                        await event.send(_unavailable(str(session.jid), target))
                    told.add(target)
        for session in list(host.user_sessions(username).values()):
            told_here = told if session.available else set()
            for target in sorted(session.directed):
                if matches(items, target):
                    session.directed.discard(target)
                    targets = [target]
                else:                       # directed at a bare JID: its covered resources
                    targets = covered_resources(items, target)
                for to in targets:
                    if to not in told_here:
                        await event.send(_unavailable(str(session.jid), to))

    def _hide_blocked(self, username: str, items) -> None:
        """The user sees the blocked JIDs go offline. Sent once the block is
        stored: presence of theirs let through until then is noted too."""
        gone = self.seen.take(username, items)
        for session in self.host.available_sessions(username):
            for sender in gone:
                session.send(_unavailable(sender, str(session.jid)))

    async def _restore_presence(self, event, username: str, items) -> None:
        """§3.4/§3.5: the unblocked contacts allowed to see the user's presence
        get it, and those whose presence the user may see are probed."""
        host = self.host
        available = host.available_sessions(username)
        if not items or not available:
            return
        _, roster = await host.rosters.get(username)
        bare = f"{username}@{host.domain}"
        for contact, item in sorted(roster.items()):
            whole = matches(items, contact)
            resources = [] if whole else covered_resources(items, contact)
            if not whole and not resources:
                continue
            if item.subscription in SHARES and whole:
                await host.events.fire("presence-grant", PresenceShare(host, username, contact))
            elif item.subscription in SHARES:
                for session in available:
                    for target in resources:
                        presence = copy.deepcopy(session.presence)
                        presence.set("from", str(session.jid))
                        presence.set("to", target)
                        await event.send(presence)
            if item.subscription in SEES:
                await event.send(E(PRESENCE, {"type": "probe", "from": bare, "to": contact}))

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
        await self._withdraw_presence(event, username, frozenset(jids))
        await self.lists.change(username, jids, True)
        self._hide_blocked(username, frozenset(jids))
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
        """filter/in: True drops the stanza (or has delivered it);
        StanzaError bounces it."""
        sender, recipient, stanza = event.from_, event.to, event.stanza
        if sender is None or sender.bare == recipient.bare or self._is_own_server(sender):
            return False
        if is_blocked(await self.lists.get(recipient.local), sender):
            if local_name(stanza) == "presence" or stanza.get("type") in ("result", "error"):
                return True
            raise StanzaError("service-unavailable")
        if await self.outbound_on_behalf(event):
            return True
        self._note_presence(event)
        return False

    def _note_presence(self, event) -> None:
        """Who the user sees: presence about to reach the user."""
        if local_name(event.stanza) == "presence" and self.host.user_sessions(event.to.local):
            self.seen.note(event.to.local, str(event.from_), event.stanza.get("type"))

    async def outbound_on_behalf(self, event) -> bool:
        """A stanza from a local user to a JID the user blocked is dropped;
        presence to a local bare JID some of whose resources the user blocked
        reaches the others only. (The user's own stanzas to a blocked JID were
        refused earlier, in ``pre-*``.)"""
        sender, recipient, stanza = event.from_, event.to, event.stanza
        if sender is None or sender.local is None or recipient is None:
            return False
        if sender.domain != self.host.domain and sender.domain not in self.host.server.hosts:
            return False
        if stanza.get("type") == "error" or (local_name(stanza) == "presence" and
                                              stanza.get("type") in SUBSCRIPTION_TYPES):
            return False
        blocklist = await self._senders_list(sender)
        if is_blocked(blocklist, recipient):
            return True
        return self._spare_blocked_resources(event, blocklist)

    def _spare_blocked_resources(self, event, blocklist) -> bool:
        """A stanza to a bare JID of this host that *blocklist* covers in part.
        Presence: delivered here, to each available resource not blocked, as
        the presence module would deliver it ('to' left as it is). A message:
        the message module chooses among the resources not blocked
        (``event.spared``); with none left it is handled as for an offline
        user. Remote recipients (``filter/out``): see the module docstring."""
        recipient, stanza = event.to, event.stanza
        if recipient.local is None or recipient.resource is not None or \
                recipient.domain != self.host.domain:
            return False
        if not blocks_some_resources(blocklist, recipient):
            return False
        if local_name(stanza) == "message":
            event.spared = frozenset(
                str(session.jid) for session in self.host.user_sessions(recipient.local).values()
                if is_blocked(blocklist, session.jid))
            return False
        if local_name(stanza) != "presence" or stanza.get("type") not in (None, "unavailable"):
            return False
        for session in self.host.available_sessions(recipient.local):
            if not is_blocked(blocklist, session.jid):
                session.send(stanza)
        self._note_presence(event)
        return True

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
            self.seen.forget(username)


MODULE = Blocking
