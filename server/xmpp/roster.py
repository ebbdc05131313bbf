"""A roster item as the protocol defines it (RFC 6121 §2.1.2): the one type
the core, the modules, storage and the tools share — and the data a roster
change is made of. Data only; the roster service (``server/core/rosters.py``)
is where items change.

A change is decided by a pure function, ``decide(entries) -> RosterDecision``:
it gets what the roster holds about each contact concerned (a
:class:`RosterEntry`: the item and the pending inbound request) as read
inside the storage transaction that will write its answer, and says what to
write. It does no I/O and keeps no state: storage may run it more than once,
and on its writer's thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

#: RFC 6121 §2.1.2.5 subscription states of a roster item
SUBSCRIPTIONS = ("none", "to", "from", "both")
#: subscriptions with which the contact receives the user's presence (RFC 6121 §3)
SHARES_PRESENCE = ("from", "both")
#: … and with which the user receives the contact's presence
SEES_PRESENCE = ("to", "both")


@dataclass
class RosterItem:
    """One contact in a user's roster (RFC 6121 §2.1.2).

    ``ask`` is the pending-out flag (``ask='subscribe'``); ``approved`` is a
    pre-approval (§3.4). A pending *inbound* request is kept apart, with the
    whole stanza, in the pending-in store.
    """
    jid: str                         # bare, prepared
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    approved: bool = False
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class RosterEntry:
    """What a roster holds about one contact when a change is decided: the
    item (None: not in the roster) and the inbound subscription request
    waiting for the user's answer (the whole stanza as XML text, or None)."""
    jid: str
    item: RosterItem | None = None
    request: str | None = None


@dataclass
class RosterDecision:
    """What a ``decide`` function wants written, all in one transaction.

    ``items``: contact → the new item, or None to remove it; a contact left
    out keeps its item. Every item given counts as a change (its own version
    and push), unless it removes an item that is not there.
    ``requests``: contact → the inbound request to keep (stanza XML), or None
    to drop the kept one; a contact left out keeps its request.
    ``result``: anything the caller wants back (e.g. the row of a table).
    """
    items: dict[str, RosterItem | None] = field(default_factory=dict)
    requests: dict[str, str | None] = field(default_factory=dict)
    result: Any = None


#: ``decide(entries)``: entries by contact JID → what to write (None: nothing)
Decide = Callable[[Mapping[str, RosterEntry]], "RosterDecision | None"]


class RosterFull(Exception):
    """The change would take the roster past its size limit
    (``im.max_roster_items``); nothing of it was written."""

    def __init__(self, limit: int):
        super().__init__(f"the roster is full ({limit} items)")
        self.limit = limit
