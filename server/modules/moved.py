"""XEP-0283 Moved, the contact's server side: automatic roster update
(PROTOCOLS.md §3.2 — XEP-0283 §4.4 with the fixes over Prosody's
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
import collections
import copy
import logging
import time

from ..xmpp.roster import RosterItem

from ..core.events import PresenceShare, RosterChange
from ..xmpp.errors import STANZA_ERRORS_NS, StanzaError
from ..xmpp.jid import JID, JIDError
from ..xmpp.stanza import E, PRESENCE, iq, sub

NS = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
SHARES = ("from", "both")

log = logging.getLogger("xferd.moved")


def statement_request(asker: str, old: str):
    """The IQ that fetches old's statement (XEP-0283 §4.3, PROTOCOLS §3.1)."""
    pubsub = E(f"{{{PUBSUB}}}pubsub")
    items = sub(pubsub, f"{{{PUBSUB}}}items", {"node": NS})
    sub(items, f"{{{PUBSUB}}}item", {"id": "current"})
    return iq("get", to=old, from_=asker, payload=pubsub)


def confirms(answer, new: JID) -> bool:
    """Step 6: does this answer state that the account moved to *new*?"""
    if answer.get("type") == "result":
        items = answer.findall(f".//{{{PUBSUB}}}items/{{{PUBSUB}}}item")
        items.sort(key=lambda item: item.get("id") != "current")      # 'current' first
        for item in items:
            text = item.findtext(f"{{{NS}}}moved/{{{NS}}}new-jid")
            if text is not None:
                return _same_bare(text.strip(), new)
        return False
    gone = answer.find(f"{{jabber:client}}error/{{{STANZA_ERRORS_NS}}}gone")
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
    text = stanza.findtext(f"{{{NS}}}moved/{{{NS}}}old-jid")
    if not text or not text.strip():
        return None
    try:
        old = JID.parse(text.strip())
    except JIDError:
        return None
    if old.resource is not None or old.local is None or old == new:
        return None
    return old


class _Limiter:
    """Verifications per old JID per minute (a sliding minute).

    The stamps of one key are in time order, so expired ones leave from the
    left: a check costs what expired since the last one, not the minute's
    whole count (an account with thousands of contacts moves at once)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._stamps: dict[str, collections.deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        recent = self._stamps.setdefault(key, collections.deque())
        while recent and now - recent[0] >= 60:
            recent.popleft()
        if len(recent) >= self.per_minute:
            return False
        recent.append(now)
        return True


async def tombstone(host, event) -> bool:
    """The old-account side: a deleted account that had moved answers
    ``<gone>xmpp:NEW</gone>`` (RFC 6120 §8.3.3.5) to what asks for an answer."""
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


def setup(host) -> None:
    config = host.global_config.moved
    storage = host.storage
    host.features.add(NS)
    host.events.on("filter/in", lambda event: tombstone(host, event), priority=-10)
    if not config.auto_update:
        return
    limiter = _Limiter(config.max_per_minute)
    failures: dict[tuple[str, str, str], float] = {}    # (R, old, new) → when it failed
    held: dict[tuple[str, str, str], object] = {}        # (R, old, new) → event
    tasks: set[asyncio.Task] = set()

    async def notice(event) -> bool:
        stanza = event.stanza
        if stanza.get("type") != "subscribe" or "moved-checked" in event.tags:
            return False
        if stanza.find(f"{{{NS}}}moved") is None or event.from_ is None:
            return False
        event.tags.add("moved-checked")
        user, new = event.to.local, event.from_.bare
        old = old_jid_of(stanza, new)
        if old is None:
            return False                                                   # step 1
        item_old = await storage.get_roster_item(host.domain, user, str(old))
        if item_old is None or item_old.subscription not in SHARES:
            return False                                                   # step 2
        item_new = await storage.get_roster_item(host.domain, user, str(new))
        if (item_new is not None and item_new.subscription in SHARES) or \
                await storage.get_pending_request(host.domain, user, str(new)) is not None:
            return False                                                   # step 3
        key = (user, str(old), str(new))
        if key in held:
            return True                                                    # step 4: coalesced
        stamp = failures.get(key)
        if stamp is not None and time.monotonic() - stamp < config.failure_cache:
            return False
        if not limiter.allow(str(old)):
            log.warning("moved: too many verifications for %s; %s decides by hand", old, user)
            return False
        held[key] = event
        task = asyncio.create_task(verify(event, key, old, new))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return True

    async def verify(event, key, old: JID, new: JID) -> None:
        user = key[0]
        try:
            answer = await host.server.router.request(
                statement_request(f"{user}@{host.domain}", str(old)), config.verify_timeout)
            verified = confirms(answer, new)
            why = "verified" if verified else f"statement says otherwise ({answer.get('type')})"
        except (TimeoutError, asyncio.TimeoutError):
            verified, why = False, "no answer in time"
        except Exception:
            log.exception("moved: verifying %s → %s for %s", old, new, user)
            verified, why = False, "internal error"
        if held.pop(key, None) is None:
            return                                   # flushed at shutdown meanwhile
        log.info("moved: %s → %s for %s@%s: %s", old, new, user, host.domain, why)
        if verified:
            await apply_move(user, old, new)
        else:
            failures[key] = time.monotonic()
            await host.events.fire("presence/bare", event)                 # step 8

    async def apply_move(user: str, old: JID, new: JID) -> None:
        """Step 7, in order, item changes in one transaction."""
        bare = f"{user}@{host.domain}"
        async with host.roster_items(user, str(old), str(new)):
            item_old = await storage.get_roster_item(host.domain, user, str(old))
            item_new = await storage.get_roster_item(host.domain, user, str(new))
            if item_old is None or item_old.subscription not in SHARES:
                return                                   # changed meanwhile: nothing to move
            was_both = item_old.subscription == "both"
            fresh = item_new is None
            updated_new = copy.copy(item_new) if item_new else RosterItem(str(new))
            updated_new.subscription = "both" if updated_new.subscription in ("to", "both") \
                else "from"
            updated_new.approved = False
            if fresh or (not updated_new.name and not updated_new.groups):
                updated_new.name, updated_new.groups = item_old.name, item_old.groups
            subscribe_new = was_both and updated_new.subscription == "from" and not updated_new.ask
            if subscribe_new:
                updated_new.ask = True
            updated_old = copy.copy(item_old)
            updated_old.subscription = "to" if was_both else "none"
            version = await storage.save_roster_changes(host.domain, user, [
                (str(new), updated_new, False), (str(old), updated_old, None)])
        router = host.server.router
        await router.route(E(PRESENCE, {"type": "subscribed", "from": bare, "to": str(new)}))
        await host.events.fire("roster-changed",
                               RosterChange(host, user, str(new), updated_new, version))
        await host.events.fire("presence-grant", PresenceShare(host, user, str(new)))
        await host.events.fire("presence-revoke", PresenceShare(host, user, str(old)))
        await router.route(E(PRESENCE, {"type": "unsubscribed", "from": bare, "to": str(old)}))
        await host.events.fire("roster-changed",
                               RosterChange(host, user, str(old), updated_old, version))
        if subscribe_new:
            await router.route(E(PRESENCE, {"type": "subscribe", "from": bare, "to": str(new)}))

    async def flush(_) -> None:
        """Step 9: whatever is still held is handled the ordinary way."""
        for key in list(held):
            event = held.pop(key)
            await host.events.fire("presence/bare", event)

    host.events.on("presence/bare", notice, priority=20)
    host.events.on("presence/full", notice, priority=20)
    host.events.on("server-stopping", flush)
