"""Presence subscription states as one table: RFC 6121 Appendix A, row by row.

A subscription between a user and a contact is, from the user's side, one of
nine states (App. A.1): the roster item's subscription (None, To, From,
Both), whether the user asked and waits for an answer (Pending Out, the
item's ``ask='subscribe'``) and whether the contact asked and waits for the
user's answer (Pending In, kept apart from the roster).

``OUTBOUND`` says what happens when the user *sends* a subscription stanza
(App. A.2 with §3.x.2), ``INBOUND`` when one *arrives* for the user (App. A.3
with §3.x.3). Each row gives the new state, whether the stanza goes on (is
routed to the contact, or delivered to the user's resources) and the one
side effect the RFC asks for, if any. :func:`decide_outbound` and
:func:`decide_inbound` turn a row into the roster service's ``decide``
function (``server/core/rosters.py``): the state is read, the row chosen and
carried out (:func:`carry_out`) inside one storage transaction. The module
``server/modules/subscription.py`` sends what the row asks for afterwards.

Choices where the RFC leaves room (each is one row, easy to find):
* Outbound ``subscribe`` and ``unsubscribe`` are always routed, even without
  a state change (§3.1.2, §3.3.2: the contact's server decides).
* Outbound ``subscribed`` without a pending request is a pre-approval (§3.4);
  ``unsubscribed`` in those states cancels one; neither is routed.
* Inbound stanzas that change nothing are dropped, except ``subscribe`` from a
  contact that already has a subscription, which the server answers with
  ``subscribed`` on the user's behalf (§3.1.3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

from .roster import Decide, RosterDecision, RosterEntry, RosterItem

# The nine states of App. A.1, by their RFC names.
N, N_PO, N_PI, N_PO_PI = "None", "None + Pending Out", "None + Pending In", \
    "None + Pending Out + Pending In"
T, T_PI = "To", "To + Pending In"
F, F_PO = "From", "From + Pending Out"
B = "Both"
STATES = (N, N_PO, N_PI, N_PO_PI, T, T_PI, F, F_PO, B)

# side effects
SEND_PRESENCE = "send the user's available presence to the contact"        # §3.1.5
SEND_UNAVAILABLE = "send the user's unavailable presence to the contact"     # §3.2.2, §3.3.3
PRE_APPROVE = "remember a pre-approval"                                       # §3.4
CANCEL_PRE_APPROVAL = "forget a pre-approval"                                 # §3.4
AUTO_REPLY_SUBSCRIBED = "answer subscribed on the user's behalf"             # §3.1.3
STORE_REQUEST = "keep the request until the user answers"                    # §3.1.3


@dataclass(frozen=True)
class Outcome:
    state: str
    forward: bool               # route to the contact (outbound) / deliver to the user (inbound)
    effect: str | None = None


def _row(state, forward, effect=None) -> Outcome:
    return Outcome(state, forward, effect)


#: App. A.2 — the user sends …  (type, state) → outcome
OUTBOUND: dict[tuple[str, str], Outcome] = {
    # A.2.1 subscribe
    ("subscribe", N): _row(N_PO, True),
    ("subscribe", N_PO): _row(N_PO, True),
    ("subscribe", N_PI): _row(N_PO_PI, True),
    ("subscribe", N_PO_PI): _row(N_PO_PI, True),
    ("subscribe", T): _row(T, True),
    ("subscribe", T_PI): _row(T_PI, True),
    ("subscribe", F): _row(F_PO, True),
    ("subscribe", F_PO): _row(F_PO, True),
    ("subscribe", B): _row(B, True),
    # A.2.2 subscribed
    ("subscribed", N): _row(N, False, PRE_APPROVE),
    ("subscribed", N_PO): _row(N_PO, False, PRE_APPROVE),
    ("subscribed", N_PI): _row(F, True, SEND_PRESENCE),
    ("subscribed", N_PO_PI): _row(F_PO, True, SEND_PRESENCE),
    ("subscribed", T): _row(T, False, PRE_APPROVE),
    ("subscribed", T_PI): _row(B, True, SEND_PRESENCE),
    ("subscribed", F): _row(F, False),
    ("subscribed", F_PO): _row(F_PO, False),
    ("subscribed", B): _row(B, False),
    # A.2.3 unsubscribe
    ("unsubscribe", N): _row(N, True),
    ("unsubscribe", N_PO): _row(N, True),
    ("unsubscribe", N_PI): _row(N_PI, True),
    ("unsubscribe", N_PO_PI): _row(N_PI, True),
    ("unsubscribe", T): _row(N, True),
    ("unsubscribe", T_PI): _row(N_PI, True),
    ("unsubscribe", F): _row(F, True),
    ("unsubscribe", F_PO): _row(F, True),
    ("unsubscribe", B): _row(F, True),
    # A.2.4 unsubscribed
    ("unsubscribed", N): _row(N, False, CANCEL_PRE_APPROVAL),
    ("unsubscribed", N_PO): _row(N_PO, False, CANCEL_PRE_APPROVAL),
    ("unsubscribed", N_PI): _row(N, True),
    ("unsubscribed", N_PO_PI): _row(N_PO, True),
    ("unsubscribed", T): _row(T, False, CANCEL_PRE_APPROVAL),
    ("unsubscribed", T_PI): _row(T, True),
    ("unsubscribed", F): _row(N, True, SEND_UNAVAILABLE),
    ("unsubscribed", F_PO): _row(N_PO, True, SEND_UNAVAILABLE),
    ("unsubscribed", B): _row(T, True, SEND_UNAVAILABLE),
}

#: App. A.3 — … arrives for the user  (type, state) → outcome
INBOUND: dict[tuple[str, str], Outcome] = {
    # A.3.1 subscribe
    ("subscribe", N): _row(N_PI, True, STORE_REQUEST),
    ("subscribe", N_PO): _row(N_PO_PI, True, STORE_REQUEST),
    ("subscribe", N_PI): _row(N_PI, False),
    ("subscribe", N_PO_PI): _row(N_PO_PI, False),
    ("subscribe", T): _row(T_PI, True, STORE_REQUEST),
    ("subscribe", T_PI): _row(T_PI, False),
    ("subscribe", F): _row(F, False, AUTO_REPLY_SUBSCRIBED),
    ("subscribe", F_PO): _row(F_PO, False, AUTO_REPLY_SUBSCRIBED),
    ("subscribe", B): _row(B, False, AUTO_REPLY_SUBSCRIBED),
    # A.3.2 unsubscribe
    ("unsubscribe", N): _row(N, False),
    ("unsubscribe", N_PO): _row(N_PO, False),
    ("unsubscribe", N_PI): _row(N, True),
    ("unsubscribe", N_PO_PI): _row(N_PO, True),
    ("unsubscribe", T): _row(T, False),
    ("unsubscribe", T_PI): _row(T, True),
    # §3.3.3: the contact that stops watching is sent unavailable presence
    ("unsubscribe", F): _row(N, True, SEND_UNAVAILABLE),
    ("unsubscribe", F_PO): _row(N_PO, True, SEND_UNAVAILABLE),
    ("unsubscribe", B): _row(T, True, SEND_UNAVAILABLE),
    # A.3.3 subscribed
    ("subscribed", N): _row(N, False),
    ("subscribed", N_PO): _row(T, True),
    ("subscribed", N_PI): _row(N_PI, False),
    ("subscribed", N_PO_PI): _row(T_PI, True),
    ("subscribed", T): _row(T, False),
    ("subscribed", T_PI): _row(T_PI, False),
    ("subscribed", F): _row(F, False),
    ("subscribed", F_PO): _row(B, True),
    ("subscribed", B): _row(B, False),
    # A.3.4 unsubscribed
    ("unsubscribed", N): _row(N, False),
    ("unsubscribed", N_PO): _row(N, True),
    ("unsubscribed", N_PI): _row(N_PI, False),
    ("unsubscribed", N_PO_PI): _row(N_PI, True),
    ("unsubscribed", T): _row(N, True),
    ("unsubscribed", T_PI): _row(N_PI, True),
    ("unsubscribed", F): _row(F, False),
    ("unsubscribed", F_PO): _row(F, True),
    ("unsubscribed", B): _row(F, True),
}

#: §3.4: an inbound subscribe meets a pre-approval — accepted at once
PRE_APPROVED: dict[str, Outcome] = {
    N: _row(F, False, SEND_PRESENCE),
    N_PO: _row(F_PO, False, SEND_PRESENCE),
    T: _row(B, False, SEND_PRESENCE),
}

SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


def state_of(subscription: str, ask: bool, pending_in: bool) -> str:
    """The App. A.1 state of a roster item (subscription, ask) plus pending-in."""
    if subscription == "both":
        return B
    if subscription == "from":
        return F_PO if ask else F
    if subscription == "to":
        return T_PI if pending_in else T
    if ask:
        return N_PO_PI if pending_in else N_PO
    return N_PI if pending_in else N


def parts_of(state: str) -> tuple[str, bool, bool]:
    """The inverse of :func:`state_of`: (subscription, ask, pending_in)."""
    return {
        N: ("none", False, False), N_PO: ("none", True, False),
        N_PI: ("none", False, True), N_PO_PI: ("none", True, True),
        T: ("to", False, False), T_PI: ("to", False, True),
        F: ("from", False, False), F_PO: ("from", True, False),
        B: ("both", False, False),
    }[state]


def state_of_entry(entry: RosterEntry) -> str:
    """The App. A.1 state of what the roster holds about one contact."""
    item = entry.item
    return state_of(item.subscription if item else "none", bool(item and item.ask),
                    entry.request is not None)


def carry_out(entry: RosterEntry, outcome: Outcome, *, request: str | None = None,
              approved: bool | None = None, result=None) -> RosterDecision:
    """What to write for *outcome* (a row of the tables above) on *entry*.

    The item takes the row's subscription and ask (an item is created only
    when there is something to keep: a subscription, ask or pre-approval);
    *approved* sets or clears a pre-approval, which a subscription from the
    contact uses up (§3.4). A kept inbound request is dropped when the row
    leaves Pending In, and *request* (the stanza as XML) is kept when the
    row enters it. An item equal to the current one is not written."""
    subscription, ask, pending_in = parts_of(outcome.state)
    item = entry.item
    new = copy.copy(item) if item is not None else None
    if new is None and (subscription != "none" or ask or approved):
        new = RosterItem(entry.jid)
    if new is not None:
        new.subscription, new.ask = subscription, ask
        if approved is not None:
            new.approved = approved
        if subscription in ("from", "both"):
            new.approved = False                    # a pre-approval is used up (§3.4)
    decision = RosterDecision(result=result)
    if new != item:
        decision.items[entry.jid] = new
    if entry.request is not None and not pending_in:
        decision.requests[entry.jid] = None
    elif pending_in and request is not None:
        decision.requests[entry.jid] = request
    return decision


def decide_outbound(kind: str, contact: str) -> Decide:
    """The user sends *kind* to *contact* (App. A.2): the decide function of
    that change. Its result is ``(state before, Outcome)``."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        entry = entries[contact]
        current = state_of_entry(entry)
        outcome = OUTBOUND[(kind, current)]
        approved = {PRE_APPROVE: True, CANCEL_PRE_APPROVAL: False}.get(outcome.effect)
        return carry_out(entry, outcome, approved=approved, result=(current, outcome))
    return decide


def decide_inbound(kind: str, contact: str, request: str) -> Decide:
    """*kind* arrives from *contact* (App. A.3; §3.4 for a ``subscribe`` that
    meets a pre-approval): the decide function of that change. *request* is
    the stanza as XML, kept if the row says so. Its result is
    ``(state before, Outcome)``."""
    def decide(entries: Mapping[str, RosterEntry]) -> RosterDecision:
        entry = entries[contact]
        current = state_of_entry(entry)
        if kind == "subscribe" and entry.item is not None and entry.item.approved \
                and current in PRE_APPROVED:
            outcome = PRE_APPROVED[current]
        else:
            outcome = INBOUND[(kind, current)]
        kept = request if outcome.effect == STORE_REQUEST else None
        return carry_out(entry, outcome, request=kept, result=(current, outcome))
    return decide
