"""XEP-0280 §6.1 eligibility, the copy's shape and the forged-carbon strip,
fed with stanzas (``server/xmpp/carbons.py``)."""

import pytest
from lxml import etree

from server.xmpp.carbons import eligible, error_eligible, strip_forged, wrap

CARBONS = "urn:xmpp:carbons:2"


def msg(mtype: str | None, *children: str):
    attrs = f" type='{mtype}'" if mtype else ""
    return etree.fromstring(f"<message xmlns='jabber:client' from='c@x/r' to='a@x' id='m'{attrs}>"
                            + "".join(children) + "</message>")


BODY = "<body>hi</body>"
MUC_X = "<x xmlns='http://jabber.org/protocol/muc#user'/>"


@pytest.mark.parametrize("stanza, from_participant, expected", [
    (msg("chat", BODY), False, True),
    (msg("chat"), False, True),                                   # type chat, whatever it holds
    (msg(None, BODY), False, True),                               # normal with a body
    (msg("normal"), False, False),                                # normal, nothing IM
    (msg("bogus", BODY), False, True),                            # unknown type is normal
    (msg("normal", "<request xmlns='urn:xmpp:receipts'/>"), False, True),
    (msg("normal", "<gone xmlns='http://jabber.org/protocol/chatstates'/>"), False, True),
    (msg("normal", "<displayed xmlns='urn:xmpp:chat-markers:0' id='1'/>"), False, True),
    (msg("headline", BODY), False, False),
    (msg("groupchat", BODY), False, False),
    (msg("groupchat", "<active xmlns='http://jabber.org/protocol/chatstates'/>"), False, False),
    (msg("error", BODY), False, False),                           # errors: error_eligible
    (msg("chat", BODY, f"<private xmlns='{CARBONS}'/>"), False, False),
    (msg("chat", BODY, "<no-copy xmlns='urn:xmpp:hints'/>"), False, False),
    (msg("chat", BODY, MUC_X), True, False),                      # a PM from a room occupant
    (msg("chat", BODY, MUC_X), False, True),                      # a PM to one
    (msg(None, "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='b@x'/></x>"),
     False, True),                                                # mediated invitation
    (msg(None, "<x xmlns='jabber:x:conference' jid='room@muc.x'/>"), False, True),
    (msg("chat", f"<received xmlns='{CARBONS}'/>"), False, False),  # a copy of a copy
])
def test_eligible(stanza, from_participant, expected):
    assert eligible(stanza, from_muc_participant=from_participant) is expected


def test_error_eligible_unless_private_or_a_carbon():
    assert error_eligible(msg("error"))
    assert not error_eligible(msg("error", f"<private xmlns='{CARBONS}'/>"))
    assert not error_eligible(msg("error", f"<sent xmlns='{CARBONS}'/>"))


def test_wrap_forwards_the_original_with_a_delay():
    original = msg("chat", BODY)
    carbon = wrap(original, "received", "a@x", "a@x/phone", 0.0)
    assert (carbon.get("from"), carbon.get("to"), carbon.get("type")) == ("a@x", "a@x/phone", "chat")
    forwarded = carbon.find(f"{{{CARBONS}}}received/{{urn:xmpp:forward:0}}forwarded")
    assert forwarded.find("{urn:xmpp:delay}delay").get("stamp") == "1970-01-01T00:00:00.000Z"
    inner = forwarded.find("{jabber:client}message")
    assert inner is not original and inner.attrib == original.attrib
    assert inner.findtext("{jabber:client}body") == "hi"
    assert wrap(msg(None, BODY), "sent", "a@x", "a@x/r", 0.0).get("type") is None


def test_strip_forged_removes_only_carbon_elements():
    stanza = msg("chat", BODY, f"<received xmlns='{CARBONS}'/>", f"<sent xmlns='{CARBONS}'/>")
    assert strip_forged(stanza) == 2
    assert [child.tag for child in stanza] == ["{jabber:client}body"]
