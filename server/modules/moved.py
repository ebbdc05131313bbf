"""XEP-0283 Moved, the contact's server side: automatic roster update
(XEP-0283 §4.4 with the fixes over Prosody's
mod_auto_moved).

When ``alice@new`` asks a local user R to subscribe and the request carries
``<moved xmlns='urn:xmpp:moved:1'><old-jid>alice@old</old-jid></moved>``:

1. old = the prepared ``<old-jid>``; missing, malformed, with a resource or
   equal to new → ordinary request.
2. R's roster item for old must be ``from`` or ``both`` (R shared presence
   with old), else ordinary request.
3. If R already shares presence with new, or new already waits for an
   answer, ordinary request.
4. The request is held (neither delivered nor stored). Duplicates are
   coalesced; verifications are rate-limited per old JID; failures are
   remembered for ``moved.failure_cache`` seconds (the IQ we send could
   otherwise be used to make us hammer a third server).
5. We ask old's account — as R, from R's bare JID, so a ``presence`` access
   model lets R through when old shares presence with R — for the statement:
   PEP node ``urn:xmpp:moved:1``, item ``current``. Local or over s2s, the
   router carries the IQ; ``moved.verify_timeout`` bounds the wait.
6. Verified iff an item's ``<moved><new-jid>`` (``current`` preferred) is
   new, or the answer is an error ``<gone>`` holding ``xmpp:new`` (a deleted
   account's tombstone).
7. Verified: R shares presence with new (item ``from``, ``both`` if it was
   ``to``; name and groups copied when the new item has none), R's server
   answers ``subscribed`` and sends R's presence to new; R stops sharing with
   old (``unsubscribed``, old item ``from``→``none``, ``both``→``to``; each
   JID migrates once); if R was subscribed to old (``both``) R subscribes to
   new. The request itself is not delivered: there is nothing left to ask.
   With ``moved.old_contact = "remove"`` (the default) the old item goes
   too, as a roster remove would take it (RFC 6121 §2.5.2: a push of
   ``subscription='remove'``, and ``unsubscribe`` to old if R was subscribed
   to it): R's clients, which mostly know nothing of XEP-0283, show one
   entry. ``"keep"`` leaves it where XEP-0283 §4.4 does.
   Both items change in one roster-service update (``decide_move``), decided
   on what R's roster holds then, each with its own version and push (the
   new item first); the presence follows it, then the notice of
   :func:`tell_contact`. A roster already full goes on as in 8.
8. Not verified: the request goes on unchanged — ``<moved/>`` kept — through
   the ordinary inbound subscription handling (stored whole if R is offline).
9. Shutdown with requests held: they go on as in 8.

Advertised in disco as ``urn:xmpp:moved:1`` (QXmpp checks it).

The old account's side: the statement itself lives in PEP (``pep.py``); an
account deleted after moving keeps a tombstone (``server/core/accounts.py``) and
answers ``<gone>xmpp:NEW</gone>`` here.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Mapping, NamedTuple

from ..core.events import PresenceShare
from ..core.module import Hook, Module
from ..io.throttle import SlidingWindow
from ..xmpp.errors import StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.namespaces import CLIENT_NS, MOVED_NS, PUBSUB_NS, STANZA_ERRORS_NS, XML_NS
from ..xmpp.roster import (SHARES_PRESENCE as SHARES, RosterDecision, RosterEntry,
                           RosterFull, RosterItem)
from ..xmpp.stanza import E, MESSAGE, PRESENCE, iq, new_id, sub


log = logging.getLogger("xferd.moved")

def statement_request(asker: str, old: str):
    """The IQ that fetches old's statement (XEP-0283 §4.3)."""
    pubsub = E(f"{{{PUBSUB_NS}}}pubsub")
    items = sub(pubsub, f"{{{PUBSUB_NS}}}items", {"node": MOVED_NS})
    sub(items, f"{{{PUBSUB_NS}}}item", {"id": "current"})
    return iq("get", to=old, from_=asker, payload=pubsub)


def confirms(answer, new: JID) -> bool:
    """Step 6: does this answer state that the account moved to *new*?"""
    if answer.get("type") == "result":
        items = answer.findall(f".//{{{PUBSUB_NS}}}items/{{{PUBSUB_NS}}}item")
        items.sort(key=lambda item: item.get("id") != "current")      # 'current' first
        for item in items:
            text = item.findtext(f"{{{MOVED_NS}}}moved/{{{MOVED_NS}}}new-jid")
            if text is not None:
                return _same_bare(text.strip(), new)
        return False
    gone = answer.find(f"{{{CLIENT_NS}}}error/{{{STANZA_ERRORS_NS}}}gone")
    if gone is not None and (gone.text or "").strip().startswith("xmpp:"):
        return _same_bare(gone.text.strip()[5:].partition("?")[0], new)
    return False


def _same_bare(text: str, new: JID) -> bool:
    try:
        jid = JID.parse(text)
    except JIDError:
        return False
    return jid.resource is None and jid == new


def old_jid_of(stanza, new: JID) -> JID | None:
    """Step 1: the claimed old JID, or None when the notice is unusable."""
    text = stanza.findtext(f"{{{MOVED_NS}}}moved/{{{MOVED_NS}}}old-jid")
    if not text or not text.strip():
        return None
    try:
        old = JID.parse(text.strip())
    except JIDError:
        return None
    if old.resource is not None or old.local is None or old == new:
        return None
    return old


class MoveOutcome(NamedTuple):
    """What :func:`decide_move` wrote, for the stanzas that follow it."""
    item: RosterItem            # new's item as written
    subscribe_new: bool         # R now asks new (R saw old's presence)
    unsubscribe_old: bool       # old's item was removed while R was subscribed to old


def decide_move(old: str, new: str, keep_old: bool = True):
    """Step 7's roster change, decided on what the roster holds when it is
    made: new gets R's subscription (``from``, ``both`` if R already saw new;
    name and groups copied when the new item has none; any request from new
    is answered by it), old loses it (``from``→``none``, ``both``→``to``) —
    or, without *keep_old*, old's item goes (a push of
    ``subscription='remove'``, RFC 6121 §2.5.2). If R subscribed to old
    (``both``), R now asks new too (``ask``). The result is a
    :class:`MoveOutcome`; None (nothing written) if old no longer shares R's
    presence."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision | None:
        item_old, item_new = entries[old].item, entries[new].item
        if item_old is None or item_old.subscription not in SHARES:
            return None                                 # changed meanwhile: nothing to move
        was_both = item_old.subscription == "both"
        updated_new = copy.copy(item_new) if item_new else RosterItem(new)
        updated_new.subscription = "both" if updated_new.subscription in ("to", "both") \
            else "from"
        updated_new.approved = False
        if item_new is None or (not updated_new.name and not updated_new.groups):
            updated_new.name, updated_new.groups = item_old.name, item_old.groups
        subscribe_new = was_both and updated_new.subscription == "from" and not updated_new.ask
        if subscribe_new:
            updated_new.ask = True
        if keep_old:
            updated_old = copy.copy(item_old)
            updated_old.subscription = "to" if was_both else "none"
            return RosterDecision(items={new: updated_new, old: updated_old},
                                  requests={new: None},
                                  result=MoveOutcome(updated_new, subscribe_new, False))
        return RosterDecision(items={new: updated_new, old: None},
                              requests={new: None, old: None},
                              result=MoveOutcome(updated_new, subscribe_new,
                                                 was_both or item_old.ask))
    return decide


def notice_text(old: str, new: str, item: RosterItem, kept_old: bool) -> str:
    """The plain-words notice of :func:`tell_contact`."""
    who = f"{item.name} ({old})" if item.name else old
    kept = ", name and groups kept" if item.name or item.groups else ""
    if kept_old:
        return (f"{who} has moved to {new}. {new} was added to your contact list{kept}; "
                f"{old} stays there until you remove it.")
    return (f"{who} has moved to {new}. Your contact list was updated: {new} replaces "
            f"{old}{kept}.")


async def tell_contact(host, user: str, old: str, new: str, item: RosterItem,
                       kept_old: bool) -> None:
    """Tell R's clients, in plain words, what a move did to R's contact list
    (``moved.notify_contacts``; XEP-0283 and XEP-0015 updates alike): nearly no
    client understands either protocol, and a contact that changes address
    without a word looks like a bug.

    A ``chat`` message from R's own server (its domain JID, the sender
    Prosody's welcome message and MOTD use). Not a ``headline``, Prosody's
    type for announcements to whoever is online: a headline that finds no
    resource is dropped (RFC 6121 §8.5.2.2.1, XEP-0160 §3), and a contact
    who is offline during the move would never learn of it. Not ``normal``
    (Prosody's welcome message): clients show a normal message apart from
    conversations, if at all (older Gajim in a separate window), while a chat
    is what every client shows, in a conversation with its sender. One copy
    goes to each available resource of non-negative priority, as Prosody's
    MOTD does (RFC 6121 §8.5.2.1.1 would give a ``chat`` to the bare JID to
    one resource only); with none, one goes to the bare JID, and offline
    storage keeps it for R's next login (§8.5.2.2.1, a chat with a body is
    stored: ``server/xmpp/hints.py``)."""
    text = notice_text(old, new, item, kept_old)
    receivers = [str(s.jid) for s in host.available_sessions(user) if s.priority >= 0]
    for to in receivers or [f"{user}@{host.domain}"]:
        message = E(MESSAGE, {"type": "chat", "from": host.domain, "to": to, "id": new_id(),
                              f"{{{XML_NS}}}lang": "en"})
        sub(message, f"{{{CLIENT_NS}}}body", text=text)
        await host.server.router.route(message)


async def tombstone(host, event) -> bool:
    """The old-account side: a deleted account that had moved answers
    ``<gone>xmpp:NEW</gone>`` (RFC 6120 §8.3.3.5: "the error stanza SHOULD
    include a new address") to what asks for an answer, and ignores the rest
    as RFC 6121 §8.5.1 says for an account that does not exist:

    * presence without a type or ``unavailable`` — the broadcasts and
      directed presence of the old contacts (§4.2.2, §4.4.2, §4.5.2, §4.6) —
      "MUST silently ignore"; so too ``subscribed``, ``unsubscribe`` and
      ``unsubscribed``; an error is never answered (RFC 6120 §8.3.1), nor is an
      IQ result or a headline;
    * a message, an IQ get/set, a probe and a subscription request get
      ``<gone/>``. For the last two §8.5.1 would have us ignore them (or
      answer a probe with ``unsubscribed``); we answer them so that a contact
      learns where the account went (XEP-0283: the verifier in ``confirms``
      takes such an answer as the statement)."""
    user = event.to.local
    if host.user_sessions(user):
        return False
    moved = await host.storage.get_tombstone(host.domain, user)
    if moved is None:
        return False
    kind = event.stanza.get("type")
    if event.stanza.tag == PRESENCE and kind not in ("subscribe", "probe"):
        return True
    if kind in ("error", "result", "headline"):
        return True
    raise StanzaError("gone", f"this account moved to {moved}", value=f"xmpp:{moved}")


class Moved(Module):
    name = "moved"
    # the roster service pushes the change; an unverified request goes on to the
    # subscription module; a local old account's statement is answered by PEP
    depends = ("roster", "subscription", "pep")
    features = (MOVED_NS,)                        # QXmpp checks it

    def __init__(self, host):
        super().__init__(host)
        self.config = host.global_config.moved
        # verifications per old JID in any 60 s
        self.limiter = SlidingWindow(self.config.max_per_minute, 60)
        self.failures: dict[tuple[str, str, str], float] = {}   # (R, old, new) → when it failed
        self.held: dict[tuple[str, str, str], object] = {}      # (R, old, new) → event
        self.tasks: set[asyncio.Task] = set()

    def hooks(self):
        hooks = [Hook("filter/in", self.tombstone, priority=-10)]
        if self.config.auto_update:
            hooks += [Hook("presence/bare", self.notice, priority=20),
                      Hook("presence/full", self.notice, priority=20),
                      Hook("server-stopping", self.flush)]
        return hooks

    async def tombstone(self, event) -> bool:
        return await tombstone(self.host, event)

    async def notice(self, event) -> bool:
        """Steps 1–4: is this a request to act on? If so, hold it and verify."""
        stanza = event.stanza
        if stanza.get("type") != "subscribe" or "moved-checked" in event.tags:
            return False
        if stanza.find(f"{{{MOVED_NS}}}moved") is None or event.from_ is None:
            return False
        event.tags.add("moved-checked")
        user, new = event.to.local, event.from_.bare
        old = old_jid_of(stanza, new)
        if old is None:
            return False                                                   # step 1
        rosters = self.host.rosters
        item_old = await rosters.item(user, str(old))
        if item_old is None or item_old.subscription not in SHARES:
            return False                                                   # step 2
        item_new = await rosters.item(user, str(new))
        if (item_new is not None and item_new.subscription in SHARES) or \
                await rosters.pending_request(user, str(new)) is not None:
            return False                                                   # step 3
        key = (user, str(old), str(new))
        if key in self.held:
            return True                                                    # step 4: coalesced
        stamp = self.failures.get(key)
        if stamp is not None and time.monotonic() - stamp < self.config.failure_cache:
            return False
        if not self.limiter.allow(str(old)):
            log.warning("moved: too many verifications for %s; %s decides by hand", old, user)
            return False
        self.held[key] = event
        task = asyncio.create_task(self.verify(event, key, old, new))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def verify(self, event, key, old: JID, new: JID) -> None:
        """Steps 5, 6 and then 7 or 8."""
        user = key[0]
        try:
            answer = await self.host.server.router.request(
                statement_request(f"{user}@{self.host.domain}", str(old)),
                self.config.verify_timeout)
            verified = confirms(answer, new)
            why = "verified" if verified else f"statement says otherwise ({answer.get('type')})"
        except (TimeoutError, asyncio.TimeoutError):
            verified, why = False, "no answer in time"
        except Exception:
            log.exception("moved: verifying %s → %s for %s", old, new, user)
            verified, why = False, "internal error"
        if self.held.pop(key, None) is None:
            return                                   # flushed at shutdown meanwhile
        log.info("moved: %s → %s for %s@%s: %s", old, new, user, self.host.domain, why)
        if verified:
            try:
                await self.apply_move(user, old, new)
                return
            except RosterFull:
                log.warning("moved: %s@%s's roster is full; %s decides by hand",
                            user, self.host.domain, user)
        else:
            self.failures[key] = time.monotonic()
        await self.host.events.fire("presence/bare", event)                # step 8

    async def apply_move(self, user: str, old: JID, new: JID) -> None:
        """Step 7: the roster change (one update, each item its own version and
        push), then the presence that follows it, in order, then the notice."""
        keep = self.config.old_contact == "keep"
        move = await self.host.rosters.update(user, [str(old), str(new)],
                                              decide_move(str(old), str(new), keep_old=keep))
        if move is None:
            return                                       # changed meanwhile: nothing to move
        bare = f"{user}@{self.host.domain}"
        router, events = self.host.server.router, self.host.events
        await router.route(E(PRESENCE, {"type": "subscribed", "from": bare, "to": str(new)}))
        await events.fire("presence-grant", PresenceShare(self.host, user, str(new)))
        await events.fire("presence-revoke", PresenceShare(self.host, user, str(old)))
        await router.route(E(PRESENCE, {"type": "unsubscribed", "from": bare, "to": str(old)}))
        if move.unsubscribe_old:                         # RFC 6121 §2.5.2, the item is gone
            await router.route(E(PRESENCE, {"type": "unsubscribe", "from": bare, "to": str(old)}))
        if move.subscribe_new:
            await router.route(E(PRESENCE, {"type": "subscribe", "from": bare, "to": str(new)}))
        if self.config.notify_contacts:
            await tell_contact(self.host, user, str(old), str(new), move.item, keep)

    async def flush(self, _) -> None:
        """Step 9: whatever is still held is handled the ordinary way."""
        for key in list(self.held):
            event = self.held.pop(key)
            await self.host.events.fire("presence/bare", event)


MODULE = Moved
