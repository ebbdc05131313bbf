"""XEP-0015 Account Transfer without I/O: xferd's wire profile of the 2002 text.

The stanzas are named by letter: A (user → old server: "move me"),
B (old server → new account: "may I?"), C (old server → each contact's
domain: "this contact moved"), D (old server → new domain: the roster),
E (the answer to A), G (contact's server → new account: "did you allow
this?"), H (new account → its server: pre-authorisation).

Here: parsing and checking the ``<query xmlns='jabber:iq:accountxfer'/>``
payloads, the merge rule for the new roster (:func:`merge`) and the old
server's job states. The transport filter (XEP-0015 §3.1) is the outreach plan's
(``server/xmpp/outreach.py``), shared with XEP-0283 migration.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .errors import StanzaError
from .jid import JID, JIDError
from .roster import RosterItem
from .stanza import E, sub

NS = "jabber:iq:accountxfer"

# old server job states (server/modules/accountxfer.py carries them out)
AUTHORIZING, NOTIFYING, TRANSFERRING = "authorizing", "notifying", "transferring"
DONE, FAILED, FAILED_PARTIAL = "done", "failed", "failed-partial"
LIVE_STATES = (AUTHORIZING, NOTIFYING, TRANSFERRING)
RESUMABLE = (NOTIFYING, TRANSFERRING)

#: what a contact's server answers when it has no XEP-0015 (Prosody, ejabberd)
NOT_IMPLEMENTED = ("service-unavailable", "feature-not-implemented")


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


@dataclass
class Query:
    oldaccount: JID | None = None
    newaccount: JID | None = None
    allowed: bool = False
    rosteritems: list[str] = field(default_factory=list)
    items: list[tuple[RosterItem, bool]] = field(default_factory=list)   # (item, notified)


def _bare(text: str | None, what: str) -> JID | None:
    if text is None:
        return None
    try:
        jid = JID.parse(text.strip())
    except JIDError as exc:
        raise StanzaError("jid-malformed", f"{what}: {exc}") from None
    if jid.resource is not None or jid.local is None:
        raise StanzaError("jid-malformed", f"{what} must be a bare user JID")
    return jid


def parse(query) -> Query:
    """Read a ``<query/>``; malformed JIDs are ``<jid-malformed/>``."""
    if query.tag != _q("query"):
        raise StanzaError("bad-request", "expected <query xmlns='jabber:iq:accountxfer'/>")
    parsed = Query(oldaccount=_bare(query.findtext(_q("oldaccount")), "oldaccount"),
                   newaccount=_bare(query.findtext(_q("newaccount")), "newaccount"),
                   allowed=query.find(_q("allowed")) is not None)
    for el in query.findall(_q("rosteritem")):
        parsed.rosteritems.append(str(_bare(el.get("jid"), "rosteritem")))
    for el in query.findall(_q("item")):
        try:
            jid = JID.parse(el.get("jid") or "")
        except JIDError:
            continue                                    # §2.3: malformed items are skipped
        groups = tuple(dict.fromkeys(g.text.strip() for g in el.findall(_q("group"))
                                     if g.text and g.text.strip()))
        sub_ = el.get("subscription", "none")
        item = RosterItem(str(jid.bare), el.get("name") or None,
                          sub_ if sub_ in ("none", "to", "from", "both") else "none",
                          ask=el.get("ask") == "subscribe", groups=groups)
        parsed.items.append((item, el.get("notified") != "false"))
    return parsed


def domain_set_kind(query: Query, raw) -> str:
    """A ``set`` to a domain is C (notice) or D (roster) — never both (§2.2)."""
    has_notice = raw.find(_q("rosteritem")) is not None
    has_items = raw.find(_q("item")) is not None
    if has_notice and has_items:
        raise StanzaError("bad-request", "a notice and a roster in one request")
    return "notice" if has_notice else "roster"


def notice_targets(items: list[RosterItem], old: str, new: str) -> list[RosterItem]:
    """Contacts whose server gets a notice (C): any subscription, not ourselves."""
    return [item for item in items
            if item.subscription in ("to", "from", "both") and item.jid not in (old, new)]


_BITS = {"none": set(), "to": {"to"}, "from": {"from"}, "both": {"to", "from"}}


def _subscription(bits: set[str]) -> str:
    return {frozenset(): "none", frozenset({"to"}): "to", frozenset({"from"}): "from",
            frozenset({"to", "from"}): "both"}[frozenset(bits)]


def merge(existing: RosterItem | None, incoming: RosterItem, notified: bool) -> RosterItem:
    """The merge rule for the new account's roster: subscription and
    groups are unions, the name is kept unless empty, an un-notified contact
    starts at ``none`` (its server does not know yet), ``ask`` is dropped."""
    theirs = _BITS[incoming.subscription] if notified else set()
    if existing is None:
        merged = copy.copy(incoming)
        merged.subscription = _subscription(theirs)
    else:
        merged = copy.copy(existing)
        merged.subscription = _subscription(_BITS[existing.subscription] | theirs)
        merged.name = existing.name or incoming.name
        merged.groups = tuple(dict.fromkeys(existing.groups + incoming.groups))
    merged.ask = False
    merged.approved = False
    return merged


# -- builders ---------------------------------------------------------------------------------

def query(*, oldaccount: str | None = None, newaccount: str | None = None,
          allowed: bool = False):
    el = E(_q("query"))
    if oldaccount:
        sub(el, _q("oldaccount"), text=oldaccount)
    if newaccount:
        sub(el, _q("newaccount"), text=newaccount)
    if allowed:
        sub(el, _q("allowed"))
    return el


def item_element(item: RosterItem, *, notified: bool = True):
    el = E(_q("item"), {"jid": item.jid, "name": item.name or None,
                        "subscription": item.subscription,
                        "ask": "subscribe" if item.ask else None,
                        "notified": None if notified else "false"})
    for group in item.groups:
        sub(el, _q("group"), text=group)
    return el
