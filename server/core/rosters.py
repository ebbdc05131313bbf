"""The roster service: the one place where a roster changes (Prosody's
``core/rostermanager``). One per host, ``host.rosters``.

Every module that changes a roster — a roster set or remove (RFC 6121 §2),
a subscription state change (§3), a XEP-0283 move, a XEP-0015 rewrite,
merge or clean-up — calls :meth:`Rosters.update` with the contacts it is
about and a pure ``decide`` function. The service then, in this order:

1. holds the per-(user, contact) locks of those contacts (sorted, so two
   updates about several contacts never deadlock);
2. has storage run one transaction (``RosterStore.update_roster``): read the
   contacts' entries (item + pending inbound request), ``decide(entries)``,
   check the size limit (``im.max_roster_items``) for items it would add,
   give each changed item its own version, one above the last (XEP-0237:
   a client that cached any version before gets every later change), and
   commit it all at once;
3. pushes each changed item to the user's interested resources (RFC 6121
   §2.1.6), in version order, before anything else can run: pushes of one
   user reach a resource with strictly increasing versions;
4. releases the locks, then fires ``roster-changed`` once per changed item.

No stanza is routed while a lock is held — the pushes are written to the
user's own streams, never routed — so a stanza routed in answer to a change
(by the caller, after :meth:`update` returns, or by a ``roster-changed``
listener) may come back to the same item without waiting for itself.
Read-decide-write is atomic through the transaction alone (storage has one
writer); the locks make each item's changes, pushes included, follow each
other in commit order.

``decide`` may run more than once and on storage's writer thread (storage
decides ahead on the last committed entries and again inside the
transaction if they changed meanwhile): it must compute from its argument
(and values captured before the call) only — no I/O, no awaiting, no
changing shared state. Whatever it raises writes nothing and comes out of
:meth:`update`; :class:`~server.xmpp.roster.RosterFull` when the change would
overfill the roster.

Reads (:meth:`get`, :meth:`item`, :meth:`pending_request`,
:meth:`pending_requests`) see what was committed last; a decision that must
not act on a stale read makes it inside ``decide``.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Iterable

from ..xmpp.namespaces import ROSTER_NS
from ..xmpp.roster import Decide, RosterItem
from ..xmpp.stanza import E, iq, sub
from .events import RosterChange
from .locks import KeyedLocks

if TYPE_CHECKING:
    from .hosts import Host

log = logging.getLogger("xferd.rosters")


def item_element(item: RosterItem | None, jid: str):
    """``<item/>`` as clients see it (RFC 6121 §2.1.2): removal is
    ``subscription='remove'`` (§2.5.2)."""
    if item is None:
        return E(f"{{{ROSTER_NS}}}item", {"jid": jid, "subscription": "remove"})
    el = E(f"{{{ROSTER_NS}}}item", {"jid": item.jid, "name": item.name or None,
                                    "subscription": item.subscription,
                                    "ask": "subscribe" if item.ask else None,
                                    "approved": "true" if item.approved else None})
    for group in item.groups:
        sub(el, f"{{{ROSTER_NS}}}group", text=group)
    return el


class Rosters:
    def __init__(self, host: "Host"):
        self.host = host
        #: (username, contact) → lock, held from before the read to after the pushes
        self.locks = KeyedLocks()

    @property
    def _storage(self):
        return self.host.storage

    # -- reads ------------------------------------------------------------------------------
    async def get(self, user: str) -> tuple[int, dict[str, RosterItem]]:
        """(the roster's version, its items by contact JID)."""
        return await self._storage.get_roster(self.host.domain, user)

    async def item(self, user: str, jid: str) -> RosterItem | None:
        return await self._storage.get_roster_item(self.host.domain, user, jid)

    async def pending_request(self, user: str, jid: str) -> str | None:
        """The inbound subscription request from *jid* waiting for *user*'s
        answer (the whole stanza, as XML text), or None."""
        return await self._storage.get_pending_request(self.host.domain, user, jid)

    async def pending_requests(self, user: str) -> dict[str, str]:
        """Every request waiting for *user*'s answer, oldest first: JID → stanza XML."""
        return await self._storage.get_pending_in(self.host.domain, user)

    # -- the one write path -----------------------------------------------------------------
    async def update(self, user: str, contacts: Iterable[str], decide: Decide) -> Any:
        """Change *user*'s roster entries of *contacts* as ``decide`` says
        (see the module docstring for the steps and their order).

        ``decide(entries)`` gets a mapping contact → ``RosterEntry`` and
        returns a ``RosterDecision`` (or None: nothing to change); it may only
        change the *contacts* given. Returns the decision's ``result``.
        Raises ``RosterFull`` if the roster would grow past
        ``im.max_roster_items``, and whatever ``decide`` raises; in both cases
        nothing was written."""
        contacts = tuple(dict.fromkeys(contacts))
        limit = self.host.global_config.im.max_roster_items
        async with self.locks.hold(*((user, contact) for contact in contacts)):
            result, changes = await self._storage.update_roster(
                self.host.domain, user, contacts, decide, max_items=limit)
            self._push(user, changes)       # no await between the commit and the pushes
        for jid, item, version in changes:
            await self.host.events.fire("roster-changed",
                                        RosterChange(self.host, user, jid, item, version))
        return result

    # -- pushes (RFC 6121 §2.1.6) -------------------------------------------------------------
    def interested_sessions(self, user: str) -> list:
        """The user's sessions that asked for the roster: they get the pushes."""
        return [s for s in self.host.user_sessions(user).values() if s.roster_requested]

    def _push(self, user: str, changes) -> None:
        sessions = self.interested_sessions(user) if changes else None
        if not sessions:
            return                  # no client asked for it (e.g. the user is offline)
        for jid, item, version in changes:
            query = E(f"{{{ROSTER_NS}}}query", {"ver": str(version)})
            query.append(item_element(item, jid))
            for session in sessions:
                session.send(iq("set", to=str(session.jid), payload=copy.deepcopy(query)))
