"""Who hears what after a move: the outreach plan (XEP-0283 §4).

One pure function, :func:`plan_outreach`, decides from the old account's
roster what the new account does, so ``xferd migrate`` and the XEP-0015
bridge of the new server (contacts whose server got no XEP-0015 notice)
behave alike:

* **subscribe** with ``<moved><old-jid>OLD</old-jid></moved>`` (XEP-0283
  §4.2) to every contact the old account was subscribed to (``to``/``both``):
  the contact's server may verify the statement and approve at once (§4.4).
  A request still pending on the old account (``ask='subscribe'``) is
  repeated the same way, so it is not lost.
* **pre-approval** — ``subscribed`` before any request (RFC 6121 §3.4) — for
  every contact that saw the old account's presence (``from``/``both``), so
  their (possibly automatic) request to the new account is accepted at once.
  The plan lists pre-approvals first: a contact's server that auto-moves a
  ``both`` contact subscribes back immediately.
* **roster items** for the new account: name and groups copied, no
  subscription (the server derives it from the stanzas above).
* **skipped**, each with a reason: the old and new accounts themselves,
  duplicates, malformed JIDs and full JIDs, and transports (XEP-0015 §3.1): an item without localpart is a transport, and every item
  on a transport's domain goes with it — those registrations cannot move.
  Refinement: the old and new accounts' own domains never count as
  transports, so a server JID in the roster does not drag every contact on
  that server along with it.

The statement the old account publishes (PEP node ``urn:xmpp:moved:1``, item
``current``, XEP-0283 §4.1) is part of the plan too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from .jid import JID, JIDError
from .namespaces import MOVED_NS
from .stanza import PRESENCE, E, sub

STATEMENT_NODE = MOVED_NS
STATEMENT_ITEM = "current"

SUBSCRIBED_TO = ("to", "both")      # the old account received their presence
SHARED_WITH = ("from", "both")      # they received the old account's presence


class RosterEntry(Protocol):
    """What the plan needs of a roster item (RFC 6121 §2.1.2); the client's
    and the storage's roster items both fit."""
    jid: str
    name: str | None
    subscription: str
    ask: object                     # 'subscribe' / True when pending out
    groups: Iterable[str]


@dataclass(frozen=True)
class NewItem:
    """A roster item to create on the new account."""
    jid: str
    name: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    jid: str
    reason: str


@dataclass(frozen=True)
class Plan:
    old: str
    new: str
    items: tuple[NewItem, ...]           # in old-roster order
    preapprove: tuple[str, ...]          # send 'subscribed' (RFC 6121 §3.4)
    subscribe: tuple[str, ...]           # send 'subscribe' with <moved/>
    skipped: tuple[Skipped, ...]

    def statement(self):
        """The payload the old account publishes (XEP-0283 §4.1)."""
        return moved_statement(self.new)

    def stanzas(self, moved: bool = True) -> list[tuple[str, str, object]]:
        """(contact, 'subscribed' | 'subscribe', presence) in sending order.

        Without *moved* the requests are plain ``subscribe``: for when no
        statement exists that a contact's server could verify.
        """
        out = [(jid, "subscribed", preapproval(jid)) for jid in self.preapprove]
        out += [(jid, "subscribe", moved_notice(jid, self.old) if moved
                 else E(PRESENCE, {"type": "subscribe", "to": jid}))
                for jid in self.subscribe]
        return out


def plan_outreach(old, new, items: Iterable[RosterEntry]) -> Plan:
    """The plan for moving *old* to *new* (bare JIDs, str or JID) given *old*'s roster.

    Raises ValueError if *old* or *new* is not a bare account JID or they are equal.
    """
    old_jid, new_jid = _account(old, "old"), _account(new, "new")
    if old_jid == new_jid:
        raise ValueError("the old and the new account are the same")
    own_domains = {old_jid.domain, new_jid.domain}

    skipped: list[Skipped] = []
    kept: list[tuple[JID, RosterEntry]] = []
    seen: set[JID] = set()
    for entry in items:
        try:
            jid = JID.parse(str(entry.jid))
        except JIDError as exc:
            skipped.append(Skipped(str(entry.jid), f"malformed JID: {exc}"))
            continue
        if jid.resource is not None:
            skipped.append(Skipped(str(jid), "full JID: subscriptions are between bare JIDs"))
        elif jid in (old_jid, new_jid):
            skipped.append(Skipped(str(jid), "the account itself"))
        elif jid in seen:
            skipped.append(Skipped(str(jid), "listed twice"))
        else:
            seen.add(jid)
            kept.append((jid, entry))

    transports = {jid.domain for jid, _ in kept if jid.local is None}
    result_items, preapprove, subscribe = [], [], []
    for jid, entry in kept:
        if jid.local is None:
            skipped.append(Skipped(str(jid), "transport (no localpart)"))
            continue
        if jid.domain in transports and jid.domain not in own_domains:
            skipped.append(Skipped(str(jid), f"contact through the transport {jid.domain}"))
            continue
        result_items.append(NewItem(str(jid), entry.name or None, _groups(entry.groups)))
        subscription = entry.subscription if entry.subscription in ("to", "from", "both") \
            else "none"
        if subscription in SHARED_WITH:
            preapprove.append(str(jid))
        if subscription in SUBSCRIBED_TO or _pending_out(entry.ask):
            subscribe.append(str(jid))
    return Plan(str(old_jid), str(new_jid), tuple(result_items), tuple(preapprove),
                tuple(subscribe), tuple(skipped))


# -- the stanzas ---------------------------------------------------------------------------

def moved_statement(new):
    """``<moved><new-jid>NEW</new-jid></moved>`` (XEP-0283 §4.1)."""
    el = E(f"{{{MOVED_NS}}}moved")
    sub(el, f"{{{MOVED_NS}}}new-jid", text=str(new))
    return el


def moved_notice(to: str, old):
    """The request to a contact: ``subscribe`` carrying ``<old-jid>`` (XEP-0283 §4.2)."""
    presence = E(PRESENCE, {"type": "subscribe", "to": to})
    moved = sub(presence, f"{{{MOVED_NS}}}moved")
    sub(moved, f"{{{MOVED_NS}}}old-jid", text=str(old))
    return presence


def preapproval(to: str):
    """``subscribed`` sent before any request: a pre-approval (RFC 6121 §3.4)."""
    return E(PRESENCE, {"type": "subscribed", "to": to})


# -- helpers -------------------------------------------------------------------------------

def _account(value, what: str) -> JID:
    try:
        jid = value if isinstance(value, JID) else JID.parse(str(value))
    except JIDError as exc:
        raise ValueError(f"the {what} JID {value!r} is malformed: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise ValueError(f"the {what} JID must look like user@domain, not {value!r}")
    return jid


def _pending_out(ask) -> bool:
    return ask is True or ask == "subscribe"


def _groups(groups) -> tuple[str, ...]:
    """Groups in order, without empties and repeats (RFC 6121 §2.1.2.5)."""
    out: list[str] = []
    for group in groups or ():
        if group and group not in out:
            out.append(group)
    return tuple(out)
