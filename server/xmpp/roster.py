"""A roster item as the protocol defines it (RFC 6121 §2.1.2): the one type
the core, the modules, storage and the tools share. Data only; the roster
service (``server/core/rosters.py``) is where items change."""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 6121 §2.1.2.5 subscription states of a roster item
SUBSCRIPTIONS = ("none", "to", "from", "both")


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
