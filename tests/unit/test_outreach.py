"""The outreach plan after a move (server/xmpp/outreach.py; XEP-0283 §4, XEP-0015 §3.1)."""

from dataclasses import dataclass

import pytest

from server.xmpp.outreach import (MOVED_NS, NewItem, moved_notice, moved_statement,
                                  plan_outreach, preapproval)
from server.xmpp.stanza import PRESENCE
from server.xmpp.stream import serialize
from storage.api import RosterItem as StoredItem

OLD, NEW = "alice@old.example", "alice@new.example"


@dataclass
class Item:
    jid: str
    name: str | None = None
    subscription: str = "none"
    ask: str | None = None
    groups: tuple = ()


def reasons(plan):
    return {s.jid: s.reason for s in plan.skipped}


def test_subscriptions_decide_subscribe_and_preapproval():
    plan = plan_outreach(OLD, NEW, [
        Item("to@c.example", subscription="to"),
        Item("from@c.example", subscription="from"),
        Item("both@c.example", subscription="both"),
        Item("none@c.example"),
        Item("asked@c.example", ask="subscribe"),
    ])
    assert plan.subscribe == ("to@c.example", "both@c.example", "asked@c.example")
    assert plan.preapprove == ("from@c.example", "both@c.example")
    assert [i.jid for i in plan.items] == ["to@c.example", "from@c.example", "both@c.example",
                                           "none@c.example", "asked@c.example"]
    assert plan.skipped == ()


def test_names_and_groups_are_copied_without_subscription():
    plan = plan_outreach(OLD, NEW, [
        Item("bob@c.example", name="Bob", subscription="both", groups=("Friends", "", "Friends",
                                                                       "Work")),
        Item("carol@c.example", name="", subscription="to"),
    ])
    assert plan.items == (NewItem("bob@c.example", "Bob", ("Friends", "Work")),
                          NewItem("carol@c.example", None, ()))


def test_stanzas_preapprovals_first_then_requests_with_moved():
    plan = plan_outreach(OLD, NEW, [Item("bob@c.example", subscription="both"),
                                    Item("dan@d.example", subscription="to")])
    kinds = [(jid, kind) for jid, kind, _ in plan.stanzas()]
    assert kinds == [("bob@c.example", "subscribed"), ("bob@c.example", "subscribe"),
                     ("dan@d.example", "subscribe")]
    _, _, request = plan.stanzas()[2]
    assert request.tag == PRESENCE and request.get("type") == "subscribe"
    assert request.get("to") == "dan@d.example" and request.get("from") is None
    assert request.findtext(f"{{{MOVED_NS}}}moved/{{{MOVED_NS}}}old-jid") == OLD


def test_statement_payload():
    plan = plan_outreach(OLD, NEW, [])
    assert serialize(plan.statement(), prefixes={}) == (
        '<moved xmlns="urn:xmpp:moved:1"><new-jid>alice@new.example</new-jid></moved>')
    assert plan.statement().findtext(f"{{{MOVED_NS}}}new-jid") == NEW


def test_own_accounts_malformed_full_and_duplicate_jids_are_skipped():
    plan = plan_outreach(OLD, NEW, [
        Item("Alice@Old.Example", subscription="both"),
        Item(NEW, subscription="both"),
        Item("bad@@c.example", subscription="both"),
        Item("bob@c.example/phone", subscription="both"),
        Item("Bob@C.Example", subscription="to"),
        Item("bob@c.example", subscription="both"),
    ])
    assert reasons(plan) == {
        "alice@old.example": "the account itself",
        NEW: "the account itself",
        "bad@@c.example": reasons(plan)["bad@@c.example"],
        "bob@c.example/phone": "full JID: subscriptions are between bare JIDs",
        "bob@c.example": "listed twice",
    }
    assert reasons(plan)["bad@@c.example"].startswith("malformed JID")
    assert plan.subscribe == ("bob@c.example",)       # the first, prepared
    assert plan.preapprove == ()


def test_transports_and_everything_on_their_domain_are_skipped():
    plan = plan_outreach(OLD, NEW, [
        Item("12345@icq.example", subscription="both"),
        Item("icq.example", subscription="both"),
        Item("bob@c.example", subscription="both"),
    ])
    assert reasons(plan) == {"icq.example": "transport (no localpart)",
                             "12345@icq.example": "contact through the transport icq.example"}
    assert plan.subscribe == plan.preapprove == ("bob@c.example",)


def test_the_accounts_own_server_is_no_transport_for_its_users():
    plan = plan_outreach(OLD, NEW, [Item("old.example", subscription="both"),
                                    Item("carol@old.example", subscription="to")])
    assert reasons(plan) == {"old.example": "transport (no localpart)"}
    assert plan.subscribe == ("carol@old.example",)


def test_storage_items_fit_too():
    plan = plan_outreach(OLD, NEW, [StoredItem("bob@c.example", "Bob", "from", True,
                                               groups=("G",))])
    assert plan.preapprove == ("bob@c.example",) and plan.subscribe == ("bob@c.example",)
    assert plan.items == (NewItem("bob@c.example", "Bob", ("G",)),)


@pytest.mark.parametrize("old,new", [(OLD, OLD), ("old.example", NEW), (OLD, "a@b/c"),
                                     ("@@", NEW)])
def test_bad_account_jids(old, new):
    with pytest.raises(ValueError):
        plan_outreach(old, new, [])


def test_builders():
    assert preapproval("bob@c.example").attrib == {"type": "subscribed", "to": "bob@c.example"}
    notice = moved_notice("bob@c.example", OLD)
    assert serialize(notice) == ('<presence type="subscribe" to="bob@c.example">'
                                 '<moved xmlns="urn:xmpp:moved:1"><old-jid>alice@old.example'
                                 '</old-jid></moved></presence>')
    assert moved_statement(NEW).tag == f"{{{MOVED_NS}}}moved"
