"""XEP-0313 without a server (server/xmpp/mam.py): what is archived, the
query's parsing and its errors, XEP-0441 matching, the history import's checks."""

import pytest
from lxml import etree

from server.xmpp import mam
from server.xmpp.errors import StanzaError
from server.xmpp.jid import JID

C = "jabber:client"


def msg(inner: str, kind: str | None = "chat"):
    attr = f" type='{kind}'" if kind else ""
    return etree.fromstring(f"<message xmlns='{C}'{attr}>{inner}</message>")


@pytest.mark.parametrize("inner, kind, archived", [
    ("<body>hi</body>", "chat", True),
    ("<body>hi</body>", None, True),                                 # normal
    ("<body>hi</body>", "groupchat", False),
    ("<body>hi</body>", "headline", False),
    ("<body>hi</body>", "error", False),
    ("<composing xmlns='http://jabber.org/protocol/chatstates'/>", "chat", False),
    ("<active xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread>"
     "<private xmlns='urn:xmpp:carbons:2'/>", "chat", False),
    ("<received xmlns='urn:xmpp:receipts' id='x'/>", "chat", True),  # as Prosody
    ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", "chat", True),
    ("<encrypted xmlns='eu.siacs.conversations.axolotl'/>", "chat", True),
    ("<body>hi</body><no-store xmlns='urn:xmpp:hints'/>", "chat", False),
    ("<body>hi</body><no-permanent-store xmlns='urn:xmpp:hints'/>", "chat", False),
    ("<gone xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/>",
     "chat", True),
])
def test_what_is_archived(inner, kind, archived):
    assert mam.should_archive(msg(inner, kind)) is archived


def test_only_stanza_ids_by_the_archive_owner_are_stripped():
    m = msg("<body/><stanza-id xmlns='urn:xmpp:sid:0' by='Ann@Localhost' id='1'/>"
            "<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='2'/>")
    mam.strip_stanza_ids(m, "ann@localhost")
    assert [s.get("id") for s in m.findall("{urn:xmpp:sid:0}stanza-id")] == ["2"]


def query(inner: str):
    return etree.fromstring(f"<query xmlns='urn:xmpp:mam:2' queryid='q'>{inner}</query>")


def form(*fields: str) -> str:
    return ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
            "urn:xmpp:mam:2</value></field>" + "".join(fields) + "</x>")


def test_query_parsing():
    q = mam.parse_query(query(
        form("<field var='with'><value>Bob@Example.org/Phone</value></field>",
             "<field var='start'><value>2026-01-02T03:04:05Z</value></field>",
             "<field var='ids'><value>a</value><value>b</value></field>")
        + "<set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set>"
          "<flip-page/>"), max_page=50, default_page=20)
    assert str(q.with_jid) == "bob@example.org/Phone" and q.start == 1767323045.0
    assert q.ids == ["a", "b"] and q.max == 50 and q.from_end and q.rsm_before == ""
    assert q.flip and q.queryid == "q"
    assert mam.parse_query(query(""), max_page=50, default_page=20).max == 20


@pytest.mark.parametrize("inner, condition", [
    (form("<field var='colour'><value>red</value></field>"), "feature-not-implemented"),
    (form("<field var='start'><value>soon</value></field>"), "bad-request"),
    (form("<field var='with'><value>a@b</value><value>c@d</value></field>"), "bad-request"),
    (form("<field var='with'><value>@@</value></field>"), "jid-malformed"),
    ("<x xmlns='jabber:x:data' type='submit'/>", "bad-request"),          # no FORM_TYPE
    ("<set xmlns='http://jabber.org/protocol/rsm'><max>many</max></set>", "bad-request"),
    ("<set xmlns='http://jabber.org/protocol/rsm'><after/></set>", "bad-request"),
    ("<set xmlns='http://jabber.org/protocol/rsm'><index>4</index></set>",
     "feature-not-implemented"),
    (form("<field var='ids'>" + "<value>x</value>" * 51 + "</field>"), "policy-violation"),
])
def test_query_errors(inner, condition):
    with pytest.raises(StanzaError) as err:
        mam.parse_query(query(inner), max_page=50, default_page=20)
    assert err.value.condition == condition


def test_prefs_parse_and_match():
    el = etree.fromstring(
        "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>A@X</jid>"
        "<jid>both@x</jid></always><never><jid>both@x</jid><jid>b@x/Phone</jid></never>"
        "</prefs>")
    prefs = mam.parse_prefs(el, max_jids=10)
    assert prefs == mam.Prefs("roster", ["a@x"], ["b@x/Phone", "both@x"])
    rule = lambda jid: mam.prefs_rule(prefs, JID.parse(jid))   # noqa: E731
    assert rule("a@x/any") == "always" and rule("both@x") == "never"
    assert rule("b@x/Phone") == "never" and rule("b@x/Laptop") == "roster"
    with pytest.raises(StanzaError):
        mam.parse_prefs(etree.fromstring("<prefs xmlns='urn:xmpp:mam:2'/>"), max_jids=10)
    with pytest.raises(StanzaError):
        mam.parse_prefs(el, max_jids=2)


def imported(*messages: str, stamp: str = "2026-01-02T03:04:05Z"):
    results = "".join(
        f"<result xmlns='urn:xmpp:mam:2' id='old{n}'><forwarded xmlns='urn:xmpp:forward:0'>"
        f"<delay xmlns='urn:xmpp:delay' stamp='{stamp}'/>{m}</forwarded></result>"
        for n, m in enumerate(messages))
    return etree.fromstring(f"<import xmlns='urn:xferd:mam-import:0' source='ann@old.example'>"
                            f"{results}</import>")


def test_import_checks():
    owner, now = JID.parse("ann@new.example"), 1767323045.0 + 10
    ok = (f"<message xmlns='{C}' from='ann@new.example/x' to='bob@b.example'><body>hi</body>"
          "<stanza-id xmlns='urn:xmpp:sid:0' by='ann@old.example' id='old0'/></message>")
    source, entries = mam.parse_import(imported(ok), owner=owner, now=now)
    assert source == "ann@old.example" and entries[0].source_id == "old0"
    assert str(entries[0].other) == "bob@b.example"
    assert entries[0].message.find("{urn:xmpp:sid:0}stanza-id") is None
    someone_else = f"<message xmlns='{C}' from='cat@x' to='bob@b.example'><body/></message>"
    for el, when in ((imported(ok, someone_else), now),
                     (imported(ok, stamp="2026-01-03T00:00:00Z"), now),       # future
                     (imported(f"<message xmlns='urn:other' from='ann@new.example'/>"), now)):
        with pytest.raises(StanzaError) as err:
            mam.parse_import(el, owner=owner, now=when)
        assert err.value.condition == "bad-request"
    with pytest.raises(StanzaError) as err:
        mam.parse_import(imported(*[ok] * 101), owner=owner, now=now)
    assert err.value.condition == "policy-violation"
