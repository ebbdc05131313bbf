"""The sans-IO parts of XEP-0015 (server/xmpp/transfer.py) and of the
XEP-0283 verifier (server/modules/moved.py's pure helpers)."""

import pytest
from lxml import etree

from server.modules.moved import confirms, old_jid_of
from server.xmpp import transfer as x
from server.xmpp.errors import StanzaError
from server.xmpp.jid import JID
from storage.api import RosterItem

NS = "jabber:iq:accountxfer"


def q(body: str):
    return etree.fromstring(f"<query xmlns='{NS}'>{body}</query>")


def test_parse_a_b_c_d_queries():
    parsed = x.parse(q("<oldaccount>Alice@Old.Example</oldaccount>"
                       "<newaccount>alice@new.example</newaccount><allowed/>"
                       "<rosteritem jid='bob@c.example'/>"
                       "<item jid='eve@d.example' name='Eve' subscription='to' notified='false'>"
                       "<group>F</group><group>F</group><group> </group></item>"
                       "<item jid='not a jid@'/>"))
    assert parsed.oldaccount == JID.parse("alice@old.example") and parsed.allowed
    assert parsed.rosteritems == ["bob@c.example"]
    (item, notified), = parsed.items                     # the malformed item is skipped
    assert (item.jid, item.name, item.subscription, item.groups, notified) == \
        ("eve@d.example", "Eve", "to", ("F",), False)


@pytest.mark.parametrize("body, condition", [
    ("<newaccount>a@b/c</newaccount>", "jid-malformed"),
    ("<oldaccount>old.example</oldaccount>", "jid-malformed"),
    ("<rosteritem jid='@x'/>", "jid-malformed"),
])
def test_parse_refuses_malformed_accounts(body, condition):
    with pytest.raises(StanzaError) as info:
        x.parse(q(body))
    assert info.value.condition == condition


def test_a_domain_set_is_a_notice_or_a_roster_never_both():
    notice = q("<rosteritem jid='b@c.d'/>")
    roster = q("<item jid='b@c.d'/>")
    assert x.domain_set_kind(x.parse(notice), notice) == "notice"
    assert x.domain_set_kind(x.parse(roster), roster) == "roster"
    assert x.domain_set_kind(x.parse(q("")), q("")) == "roster"        # an empty roster is valid
    both = q("<rosteritem jid='b@c.d'/><item jid='b@c.d'/>")
    with pytest.raises(StanzaError) as info:
        x.domain_set_kind(x.parse(both), both)
    assert info.value.condition == "bad-request"


def test_notice_targets_have_a_subscription_and_are_not_the_accounts():
    items = [RosterItem("a@x", subscription="both"), RosterItem("b@x", subscription="none",
                                                                 ask=True),
             RosterItem("old@o", subscription="both"), RosterItem("c@x", subscription="from")]
    assert [i.jid for i in x.notice_targets(items, "old@o", "new@n")] == ["a@x", "c@x"]


@pytest.mark.parametrize("existing, incoming, notified, expected", [
    (None, RosterItem("c@x", "C", "both", ask=True, groups=("G",)), True,
     RosterItem("c@x", "C", "both", groups=("G",))),
    (None, RosterItem("c@x", "C", "both"), False, RosterItem("c@x", "C", "none")),
    (RosterItem("c@x", "", "to", groups=("A",)), RosterItem("c@x", "C", "from", groups=("B",)),
     True, RosterItem("c@x", "C", "both", groups=("A", "B"))),
    (RosterItem("c@x", "Mine", "from"), RosterItem("c@x", "Theirs", "to"), True,
     RosterItem("c@x", "Mine", "both")),
])
def test_merge_rule(existing, incoming, notified, expected):
    assert x.merge(existing, incoming, notified) == expected


def _answer(xml: str):
    return etree.fromstring(xml)


NEW = JID.parse("alice@new.example")


@pytest.mark.parametrize("xml, verified", [
    ("<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
     "<items node='urn:xmpp:moved:1'><item id='current'><moved xmlns='urn:xmpp:moved:1'>"
     "<new-jid>Alice@New.Example</new-jid></moved></item></items></pubsub></iq>", True),
    ("<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
     "<items node='urn:xmpp:moved:1'><item id='old'><moved xmlns='urn:xmpp:moved:1'>"
     "<new-jid>someone@else</new-jid></moved></item><item id='current'>"
     "<moved xmlns='urn:xmpp:moved:1'><new-jid>alice@new.example</new-jid></moved></item>"
     "</items></pubsub></iq>", True),                           # 'current' is preferred
    ("<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
     "<items node='urn:xmpp:moved:1'><item id='current'><moved xmlns='urn:xmpp:moved:1'>"
     "<new-jid>alice@new.example/phone</new-jid></moved></item></items></pubsub></iq>", False),
    ("<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
     "<items node='urn:xmpp:moved:1'/></pubsub></iq>", False),
    ("<iq xmlns='jabber:client' type='error'><error type='cancel'>"
     "<gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>xmpp:alice@new.example</gone>"
     "</error></iq>", True),
    ("<iq xmlns='jabber:client' type='error'><error type='cancel'>"
     "<gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", False),
    ("<iq xmlns='jabber:client' type='error'><error type='auth'>"
     "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", False),
])
def test_what_counts_as_a_statement(xml, verified):
    assert confirms(_answer(xml), NEW) is verified


@pytest.mark.parametrize("old_jid, usable", [
    ("alice@old.example", True), ("", False), ("alice@old.example/phone", False),
    ("old.example", False), ("alice@new.example", False), ("a@b@c", False),
])
def test_old_jid_of_a_notice(old_jid, usable):
    presence = _answer(f"<presence xmlns='jabber:client' type='subscribe'>"
                       f"<moved xmlns='urn:xmpp:moved:1'><old-jid>{old_jid}</old-jid></moved>"
                       f"</presence>")
    assert (old_jid_of(presence, NEW) is not None) is usable
