"""XEP-0115 Entity Capabilities, learned from presence for the PEP service
(XEP-0163 §4.2 and XEP-0060 §9.2: notifications are filtered by the
``NODE+notify`` features a resource advertises).

Whose presence we look at:

* a user's own broadcast presence (``pre-presence`` with no ``to`` or the
  user's bare JID): the user's own resources;
* presence routed to a local user's bare JID (``presence/bare``) from a JID
  whose bare JID is in that user's roster: contacts' resources, local or
  over s2s — XEP-0163 §4.3.4 has the contact's server send it there. A
  stranger's presence makes us ask nothing (no disco#info on behalf of a
  user to whoever writes to it). Presence directed at one full JID is for
  that resource, not for the PEP service, and is not looked at.

What we do with a ``<c/>`` (§5.4): a ``hash`` we support
(``server/xmpp/caps.py``) whose ``ver`` is in the verified cache is known at
once. Otherwise we send disco#info with node ``node#ver`` (§6.2) from the
user's bare JID (as XEP-0060 §9.2's example) to the full JID that sent it,
and verify the answer: a match is cached for everyone (a bounded LRU of
:data:`MAX_VERIFIED` vers); a mismatch, an ill-formed answer, an error or no
answer within :data:`ASK_TIMEOUT` is not cached, and that resource counts as
advertising nothing until it announces other caps or comes back. Asks for
one ``ver`` are coalesced; if the entity asked fails, each other one that
announced the ver is asked in turn (§5.4 3.9).

A ``hash`` we do not support (§5.4 step 2) and legacy caps without ``hash``
(§13): the answer to ``node#ver`` is used for that resource only and never
cached (legacy ``ext`` bundles are not asked for). Prosody's mod_pep also
asks ``node#ver`` for legacy caps; the XEP allows ignoring them, but clients
that still send them would then get no notifications at all.

An available presence without ``<c/>`` keeps what we knew (§8.4, caps
optimization: receivers "MUST NOT expect an annotation on every presence"),
which is where we differ from Prosody, which forgets the caps then.
Unavailable presence and the end of a session forget the resource.

What we learn goes out as ``caps-changed`` (``server/core/events.py``),
only when it changed: the same caps in a presence update fire nothing, so
PEP sends the last published items once per availability.

Bounds: :data:`MAX_RESOURCES` resources per contact and user (the oldest is
forgotten), :data:`MAX_ASKING` disco#info requests under way per host (more
are not asked now; the next presence tries again), answers with more than
:data:`MAX_FEATURE_TEXT` characters of features are refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from ..core.events import CapsChange
from ..core.module import Hook, Module
from ..xmpp import caps
from ..xmpp.jid import JID
from ..xmpp.namespaces import DISCO_INFO_NS
from ..xmpp.stanza import E, iq

log = logging.getLogger("xferd.caps")

ASK_TIMEOUT = 10.0              # seconds a disco#info answer may take
MAX_VERIFIED = 1000             # verified vers kept (LRU)
MAX_RESOURCES = 32              # tracked resources per contact (bare JID) and user
MAX_ASKING = 64                 # disco#info requests under way per host
MAX_FEATURE_TEXT = 32 * 1024    # characters of features an answer may have


@dataclass
class Tracked:
    """One resource's caps: *features* None while they are being asked."""
    caps: caps.Announcement
    features: frozenset | None = None


class Caps(Module):
    name = "caps"

    def __init__(self, host):
        super().__init__(host)
        #: user → contact bare JID → full JID → what we know (insertion order: oldest first)
        self.tracked: dict[str, dict[JID, dict[JID, Tracked]]] = {}
        #: (hash, ver) → verified features, least recently used first
        self.verified: OrderedDict[tuple[str, str], frozenset] = OrderedDict()
        #: (hash, ver) → the answer being awaited (features, or None if it failed)
        self.asking: dict[tuple[str, str], asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()

    def hooks(self):
        # above presence.py (0) and subscription.py (10); never handles the stanza
        return [Hook("pre-presence", self.own_presence, priority=50),
                Hook("presence/bare", self.contact_presence, priority=50),
                Hook("resource-unbind", self.unbound, priority=50),
                Hook("server-stopping", self.stopping)]

    # -- presence ----------------------------------------------------------------------------
    async def own_presence(self, event) -> None:
        session = event.origin
        if session is None or session.jid is None:
            return
        if event.to is not None and event.to != session.jid.bare:
            return                                  # directed presence
        kind = event.stanza.get("type")
        if kind is None:
            await self._available(session.jid.local, session.jid, event.stanza)
        elif kind == "unavailable":
            await self._forget(session.jid.local, session.jid)

    async def contact_presence(self, event) -> None:
        sender, user = event.from_, event.to.local
        if sender is None or sender.resource is None or sender.bare == event.to.bare:
            return
        kind = event.stanza.get("type")
        if kind is None:
            if self._entry(user, sender) is None and \
                    await self.host.rosters.item(user, str(sender.bare)) is None:
                return                              # not a contact: not asked
            await self._available(user, sender, event.stanza)
        elif kind == "unavailable":
            await self._forget(user, sender)

    async def unbound(self, event) -> None:
        await self._forget(event.session.jid.local, event.session.jid)

    async def stopping(self, _event) -> None:
        for task in list(self.tasks):
            task.cancel()

    # -- what we know ------------------------------------------------------------------------
    def _entry(self, user: str, jid: JID) -> Tracked | None:
        return self.tracked.get(user, {}).get(jid.bare, {}).get(jid)

    async def _available(self, user: str, jid: JID, presence) -> None:
        announced = caps.announcement(presence)
        entry = self._entry(user, jid)
        if announced is None or (entry is not None and entry.caps == announced):
            return                                  # §8.4, or nothing new
        if announced.verifiable:
            features = self.verified.get((announced.hash, announced.ver))
            if features is not None:
                self.verified.move_to_end((announced.hash, announced.ver))
                await self._track(user, jid, Tracked(announced, features))
                await self._changed(user, jid, features)
                return
        if len(self.tasks) >= MAX_ASKING:
            log.info("caps: %d disco#info requests under way; not asking %s now",
                     len(self.tasks), jid)
            return
        await self._track(user, jid, Tracked(announced))
        task = asyncio.create_task(self._learn(user, jid, announced))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _track(self, user: str, jid: JID, entry: Tracked) -> None:
        resources = self.tracked.setdefault(user, {}).setdefault(jid.bare, {})
        resources.pop(jid, None)
        if len(resources) >= MAX_RESOURCES:
            oldest = next(iter(resources))
            await self._forget(user, oldest)
            resources = self.tracked.setdefault(user, {}).setdefault(jid.bare, {})
        resources[jid] = entry

    async def _forget(self, user: str, jid: JID) -> None:
        contacts = self.tracked.get(user)
        resources = contacts.get(jid.bare) if contacts else None
        if not resources or resources.pop(jid, None) is None:
            return
        if not resources:
            del contacts[jid.bare]
            if not contacts:
                del self.tracked[user]
        await self._changed(user, jid, None)

    async def _changed(self, user: str, jid: JID, features: frozenset | None) -> None:
        try:
            await self.host.events.fire("caps-changed",
                                        CapsChange(self.host, user, jid, features))
        except Exception:
            log.exception("caps-changed for %s (%s@%s)", jid, user, self.host.domain)

    # -- asking (§5.4) -----------------------------------------------------------------------
    async def _learn(self, user: str, jid: JID, announced: caps.Announcement) -> None:
        try:
            if announced.verifiable:
                features = await self._verified_features(user, jid, announced)
            else:                                   # §5.4 step 2, §13: this JID only
                features = _features(await self._ask(user, jid, announced))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("caps: learning %s's features", jid)
            features = None
        entry = self._entry(user, jid)
        if entry is None or entry.caps != announced:
            return                                  # gone, or other caps meanwhile
        entry.features = features if features is not None else frozenset()
        await self._changed(user, jid, entry.features)

    async def _verified_features(self, user: str, jid: JID,
                                 announced: caps.Announcement) -> frozenset | None:
        key = (announced.hash, announced.ver)
        pending = self.asking.get(key)
        if pending is not None:
            features = await asyncio.shield(pending)
            if features is not None:
                return features
            # §5.4 3.9: the one asked failed; check this entity, which announced it too
            return self._verify(await self._ask(user, jid, announced), announced, jid)
        future = asyncio.get_running_loop().create_future()
        self.asking[key] = future
        features = None
        try:
            features = self._verify(await self._ask(user, jid, announced), announced, jid)
            return features
        finally:
            del self.asking[key]
            future.set_result(features)

    def _verify(self, query, announced: caps.Announcement, jid: JID) -> frozenset | None:
        features = _features(query)
        if features is None:
            return None
        if not caps.verify(query, announced):
            log.info("caps: %s's disco#info does not match %s ver %s: not trusted",
                     jid, announced.hash, announced.ver)
            return None
        self.verified[(announced.hash, announced.ver)] = features
        while len(self.verified) > MAX_VERIFIED:
            self.verified.popitem(last=False)
        return features

    async def _ask(self, user: str, jid: JID, announced: caps.Announcement):
        """The ``<query/>`` of *jid*'s disco#info answer for its caps node, or None."""
        request = iq("get", to=str(jid), from_=f"{user}@{self.host.domain}",
                     payload=E(f"{{{DISCO_INFO_NS}}}query", {"node": announced.disco_node}))
        try:
            answer = await self.host.server.router.request(request, ASK_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            log.info("caps: no disco#info answer from %s", jid)
            return None
        if answer.get("type") != "result":
            return None
        return answer.find(f"{{{DISCO_INFO_NS}}}query")


def _features(query) -> frozenset | None:
    """The features of an answer, or None if there is none or it is too large."""
    if query is None:
        return None
    features = caps.features(query)
    if sum(len(f) for f in features) > MAX_FEATURE_TEXT:
        return None
    return features


MODULE = Caps
