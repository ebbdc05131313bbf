"""XEP-0191 §6 JID matching (server/xmpp/blocklist.py), no server needed."""

import pytest

from server.xmpp.blocklist import blocks_some_resources, is_blocked, matches, patterns
from server.xmpp.jid import JID


@pytest.mark.parametrize("item, jid, blocked", [
    ("romeo@montague.net", "romeo@montague.net", True),
    ("romeo@montague.net", "romeo@montague.net/orchard", True),
    ("romeo@montague.net/orchard", "romeo@montague.net/orchard", True),
    ("romeo@montague.net/orchard", "romeo@montague.net/garden", False),
    ("romeo@montague.net/orchard", "romeo@montague.net", False),
    ("montague.net", "romeo@montague.net/orchard", True),
    ("montague.net", "montague.net", True),
    ("montague.net", "capulet.net", False),
    ("montague.net/bot", "montague.net/bot", True),
    ("montague.net/bot", "romeo@montague.net/bot", True),     # XEP-0016 §2.1
    ("montague.net/bot", "romeo@montague.net/human", False),
    ("montague.net", "chat.montague.net", False),
])
def test_jid_matching(item, jid, blocked):
    assert is_blocked({item}, JID.parse(jid)) is blocked
    assert patterns(JID.parse("a@b/c")) == ["a@b/c", "a@b", "b/c", "b"]


def test_patterns_of_bare_and_domain_jids():
    assert patterns(JID.parse("a@b")) == ["a@b", "b"]
    assert patterns(JID.parse("b/c")) == ["b/c", "b"]
    assert patterns(JID.parse("b")) == ["b"]


def test_matches_takes_text_and_never_blocks_what_does_not_parse():
    assert matches({"montague.net"}, "romeo@montague.net")
    assert not matches({"montague.net"}, "romeo@capulet.net")
    assert not matches({"montague.net"}, "@montague.net")


@pytest.mark.parametrize("item, jid, some", [
    ("romeo@montague.net/orchard", "romeo@montague.net", True),
    ("montague.net/bot", "romeo@montague.net", True),
    ("montague.net/bot", "montague.net", True),
    ("romeo@montague.net", "romeo@montague.net", False),     # all of it, not some
    ("montague.net", "romeo@montague.net", False),
    ("juliet@capulet.net/balcony", "romeo@montague.net", False),
    ("benvolio@montague.net/street", "romeo@montague.net", False),
    ("romeo@montague.net/orchard", "montague.net", False),
    ("amontague.net/bot", "romeo@montague.net", False),
])
def test_blocks_some_resources(item, jid, some):
    assert blocks_some_resources({item}, JID.parse(jid)) is some
