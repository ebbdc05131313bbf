"""The pure halves of roster changes: the decide functions the roster service
runs inside its transaction (server/xmpp/subscription.py's table rows, and
those of the roster, moved and accountxfer modules). Entries in, decisions
out — no storage, no event loop."""

import pytest

from server.modules import accountxfer, moved, roster
from server.xmpp import subscription as table
from server.xmpp.errors import StanzaError
from server.xmpp.roster import RosterEntry, RosterItem

C = "c@example.org"


def entry_in(state: str, jid: str = C, **item) -> RosterEntry:
    """An entry in an App. A.1 state (an item only when the state needs one)."""
    subscription, ask, pending_in = table.parts_of(state)
    has_item = subscription != "none" or ask or item
    return RosterEntry(jid, RosterItem(jid, subscription=subscription, ask=ask, **item)
                       if has_item else None,
                       "<presence type='subscribe'/>" if pending_in else None)


def after(entry: RosterEntry, decision) -> RosterEntry:
    """The entry once *decision* is written."""
    item = decision.items.get(entry.jid, entry.item)
    request = decision.requests.get(entry.jid, entry.request)
    return RosterEntry(entry.jid, item, request)


@pytest.mark.parametrize("kind, state", sorted(table.OUTBOUND))
def test_outbound_rows_reach_their_state(kind, state):
    entry = entry_in(state)
    decision = table.decide_outbound(kind, C)({C: entry})
    before, outcome = decision.result
    assert (before, outcome) == (state, table.OUTBOUND[(kind, state)])
    assert table.state_of_entry(after(entry, decision)) == outcome.state


@pytest.mark.parametrize("kind, state", sorted(table.INBOUND))
def test_inbound_rows_reach_their_state(kind, state):
    entry = entry_in(state)
    request = "<presence type='subscribe' from='c@example.org'/>"
    decision = table.decide_inbound(kind, C, request if kind == "subscribe" else None)(
        {C: entry})
    _, outcome = decision.result
    assert outcome == table.INBOUND[(kind, state)]
    written = after(entry, decision)
    assert table.state_of_entry(written) == outcome.state
    if outcome.effect == table.STORE_REQUEST:
        assert written.request == request


def test_nothing_written_when_nothing_changes():
    decision = table.decide_inbound("subscribed", C, None)({C: entry_in(table.B)})
    assert decision.items == {} and decision.requests == {}


def test_pre_approval_is_kept_then_used_up():
    made = table.decide_outbound("subscribed", C)({C: entry_in(table.N)})
    assert made.items[C].approved and made.items[C].subscription == "none"
    entry = RosterEntry(C, made.items[C])
    used = table.decide_inbound("subscribe", C, "<presence/>")({C: entry})
    assert used.result[1] == table.PRE_APPROVED[table.N]
    assert used.items[C].subscription == "from" and not used.items[C].approved
    assert used.requests == {}                       # accepted at once: nothing kept


def test_roster_set_keeps_what_only_the_server_sets():
    current = RosterEntry(C, RosterItem(C, "Old", "both", ask=False, approved=True, groups=("A",)))
    wanted = RosterItem(C, "New", groups=("B",))
    decision = roster.decide_set(wanted)({C: current})
    assert decision.items[C] == RosterItem(C, "New", "both", False, True, ("B",))


def test_roster_remove_reports_what_was_there():
    assert roster.decide_remove(C)({C: RosterEntry(C)}).items == {}
    decision = roster.decide_remove(C)({C: entry_in(table.T_PI)})
    assert decision.items == {C: None} and decision.requests == {C: None}
    assert decision.result == (RosterItem(C, subscription="to"), True)


OLD, NEW = "alice@old.example", "alice@new.example"


@pytest.mark.parametrize("old_sub, new_item, want_new, want_old, subscribe", [
    ("from", None, ("from", False), "none", False),
    ("both", None, ("from", True), "to", True),
    ("both", RosterItem(NEW, subscription="to"), ("both", False), "to", False),
])
def test_move_decision(old_sub, new_item, want_new, want_old, subscribe):
    entries = {OLD: RosterEntry(OLD, RosterItem(OLD, "Alice", old_sub, groups=("F",))),
               NEW: RosterEntry(NEW, new_item)}
    decision = moved.decide_move(OLD, NEW)(entries)
    assert list(decision.items) == [NEW, OLD]          # pushed in this order
    got = decision.items[NEW]
    assert (got.subscription, got.ask) == want_new and got.name == "Alice"
    assert decision.items[OLD].subscription == want_old
    assert decision.result.subscribe_new is subscribe and decision.result.item is got
    assert decision.result.unsubscribe_old is False
    # old_contact = "remove": the same new item; old's item goes, after it
    removal = moved.decide_move(OLD, NEW, keep_old=False)(entries)
    assert list(removal.items) == [NEW, OLD] and removal.items[OLD] is None
    assert removal.items[NEW] == got and removal.requests[OLD] is None
    assert removal.result.unsubscribe_old is (old_sub == "both")    # R was subscribed to old


def test_move_decision_when_old_no_longer_shares():
    entries = {OLD: RosterEntry(OLD, RosterItem(OLD, subscription="to")), NEW: RosterEntry(NEW)}
    assert moved.decide_move(OLD, NEW)(entries) is None


def test_transfer_rewrite_is_idempotent_and_checked():
    rewrite = accountxfer.decide_rewrite(OLD, NEW, "bob@c.example")
    done = rewrite({OLD: RosterEntry(OLD), NEW: RosterEntry(NEW, RosterItem(NEW, subscription="both"))})
    assert done.items == {} and done.result is None
    decision = rewrite({OLD: RosterEntry(OLD, RosterItem(OLD, "A", "both")), NEW: RosterEntry(NEW)})
    assert decision.items[OLD] is None and decision.items[NEW].jid == NEW
    assert decision.items[NEW].subscription == "both" and decision.result is decision.items[NEW]
    with pytest.raises(StanzaError) as err:
        rewrite({OLD: RosterEntry(OLD), NEW: RosterEntry(NEW)})
    assert err.value.condition == "item-not-found"
    # old_contact = "keep": old stays, name and groups, no subscription; done once
    keep = accountxfer.decide_rewrite(OLD, NEW, "bob@c.example", keep_old=True)
    kept = keep({OLD: RosterEntry(OLD, RosterItem(OLD, "A", "both", groups=("G",))),
                 NEW: RosterEntry(NEW)})
    assert list(kept.items) == [NEW, OLD] and kept.items[NEW].subscription == "both"
    assert kept.items[OLD] == RosterItem(OLD, "A", "none", groups=("G",))
    again = keep({OLD: RosterEntry(OLD, kept.items[OLD]), NEW: RosterEntry(NEW, kept.items[NEW])})
    assert again.items == {} and again.result is None
    with pytest.raises(StanzaError) as err:
        rewrite({OLD: RosterEntry(OLD, RosterItem(OLD)), NEW: RosterEntry(NEW)})
    assert err.value.condition == "not-acceptable"


def test_merge_decision_unions_with_what_is_there_now():
    x, y = "x@c.example", "y@c.example"
    items = [(RosterItem(x, "X", "both", groups=("Old",)), True),
             (RosterItem(y, "Y", "to"), False),
             (RosterItem(NEW, "me"), True)]                  # the new account itself: skipped
    entries = {x: RosterEntry(x, RosterItem(x, None, "none", groups=("Mine",))),
               y: RosterEntry(y)}
    decision = accountxfer.decide_merge(items, (NEW, OLD), frozenset({y}), frozenset())(entries)
    assert list(decision.items) == [x, y]
    assert decision.items[x] == RosterItem(x, "X", "both", False, False, ("Mine", "Old"))
    assert decision.items[y].subscription == "none" and decision.items[y].approved
    assert decision.result == [decision.items[x], decision.items[y]]


def test_forget_decision_drops_items_and_requests():
    a, b = "a@c.example", "b@c.example"
    decision = accountxfer.decide_forget([a, b])(
        {a: RosterEntry(a, RosterItem(a)), b: RosterEntry(b, None, "<presence/>")})
    assert decision.items == {a: None, b: None} and decision.requests == {b: None}
