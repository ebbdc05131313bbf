"""rehome(): what an exported account becomes under a new JID."""

from server.tools.import_as import rehome
from server.xmpp.jid import JID
from server.xmpp.stanza import from_text
from storage.api import PepItem, PepNode, RosterItem, UserData

OLD, NEW = JID.parse("alice@old.example"), JID.parse("alice@new.example")
MOVED = "urn:xmpp:moved:1"


def _data(statement_to: str | None = None) -> UserData:
    data = UserData()
    data.roster = [
        RosterItem("bob@old.example", "Bob", "both", False, True, ("Friends",)),
        RosterItem("carol@else.example", None, "from", False, False, ()),
        RosterItem("dave@else.example", None, "none", True, False, ("Work",)),
        RosterItem("icq.gw.example", None, "both", False, False, ()),
        RosterItem("123@icq.gw.example", "ICQ friend", "both", False, False, ()),
    ]
    data.pending_in = {"erin@else.example": "<presence xmlns='jabber:client' type='subscribe' "
                                            "from='erin@else.example' to='alice@old.example'/>"}
    data.offline = [("<message xmlns='jabber:client' from='bob@old.example/r' "
                     "to='alice@old.example/phone'><body>hi</body></message>", 1.0),
                    ("<message xmlns='jabber:client' from='x@y' to='someone@else.example'>"
                     "<body>odd</body></message>", 2.0)]
    data.vcard = "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>"
    nick = (PepNode("http://jabber.org/protocol/nick"),
            [PepItem("current", "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>")])
    data.pep = [nick]
    if statement_to:
        data.pep.append((PepNode(MOVED, "open"), [PepItem("current", (
            f"<moved xmlns='{MOVED}'><new-jid>{statement_to}</new-jid></moved>"))]))
    return data


def test_subscriptions_reset_names_and_groups_kept_transports_left_out():
    result = rehome(_data(), OLD, NEW)
    roster = {item.jid: item for item in result.data.roster}
    assert set(roster) == {"bob@old.example", "carol@else.example", "dave@else.example"}
    assert all(i.subscription == "none" and not i.ask and not i.approved
               for i in roster.values())
    assert roster["bob@old.example"].name == "Bob"
    assert roster["bob@old.example"].groups == ("Friends",)
    assert roster["dave@else.example"].groups == ("Work",)
    assert {s.jid for s in result.plan.skipped} == {"icq.gw.example", "123@icq.gw.example"}
    # the outreach: from/both pre-approved, to/both and pending-out asked
    assert set(result.plan.preapprove) == {"bob@old.example", "carol@else.example"}
    assert set(result.plan.subscribe) == {"bob@old.example", "dave@else.example"}


def test_pending_requests_dropped_messages_readdressed_rest_kept():
    data = _data()
    result = rehome(data, OLD, NEW)
    assert result.data.pending_in == {}
    assert result.dropped_pending == ["erin@else.example"]
    first, second = (from_text(s) for s, _ in result.data.offline)
    assert first.get("to") == "alice@new.example"
    assert first.findtext("{jabber:client}body") == "hi"
    assert second.get("to") == "someone@else.example"       # not ours: left as it was
    assert [at for _, at in result.data.offline] == [1.0, 2.0]
    assert result.data.vcard == data.vcard
    assert result.data.credentials is data.credentials
    assert data.roster[0].subscription == "both"             # the input is not changed


def test_statement_left_out_and_recognised_only_for_the_new_jid():
    plain = rehome(_data(), OLD, NEW)
    assert not plain.statement and not plain.dropped_statement
    here = rehome(_data(statement_to="alice@new.example"), OLD, NEW)
    assert here.statement and here.dropped_statement
    assert [n.node for n, _ in here.data.pep] == ["http://jabber.org/protocol/nick"]
    elsewhere = rehome(_data(statement_to="alice@third.example"), OLD, NEW)
    assert not elsewhere.statement and elsewhere.dropped_statement


# -- the archive: rehome_jid / rehome_entry ---------------------------------------------------

def test_only_the_accounts_own_jid_is_readdressed():
    from server.tools.import_as import rehome_jid
    assert rehome_jid("alice@old.example", OLD, NEW) == "alice@new.example"
    assert rehome_jid("Alice@OLD.example/phone", OLD, NEW) == "alice@new.example/phone"
    for other in ("bob@old.example/r", "alice@else.example", "old.example",
                  "alice@old.example.org", None, ""):
        assert rehome_jid(other, OLD, NEW) == other
    assert rehome_jid("not a jid@@", OLD, NEW) == "not a jid@@"


def test_an_archived_message_keeps_everything_but_the_old_address():
    from server.tools.import_as import rehome_entry
    from storage.api import ArchivedMessage
    sent = ArchivedMessage("id1", 5.5, "bob@old.example",
                           "<message xmlns='jabber:client' from='alice@old.example/phone' "
                           "to='bob@old.example' id='x'><body>alice@old.example</body>"
                           "<reply xmlns='urn:xmpp:reply:0' to='bob@old.example/r'/></message>",
                           source="alice@old.example", source_id="id1", with_resource=None)
    moved = rehome_entry(sent, OLD, NEW)
    message = from_text(moved.stanza)
    assert (message.get("from"), message.get("to"), message.get("id")) == \
        ("alice@new.example/phone", "bob@old.example", "x")
    assert message.findtext("{jabber:client}body") == "alice@old.example"   # text untouched
    assert (moved.id, moved.timestamp, moved.with_jid, moved.source, moved.source_id) == \
        ("id1", 5.5, "bob@old.example", "alice@old.example", "id1")
    received = ArchivedMessage("", 6.0, "bob@old.example",
                               "<message xmlns='jabber:client' from='bob@old.example/r' "
                               "to='alice@old.example'><body>hi</body></message>")
    assert from_text(rehome_entry(received, OLD, NEW).stanza).get("to") == "alice@new.example"
    note = ArchivedMessage("", 7.0, "alice@old.example",
                           "<message xmlns='jabber:client' from='alice@old.example/a' "
                           "to='alice@old.example/b'><body>note</body></message>")
    to_self = rehome_entry(note, OLD, NEW)
    assert to_self.with_jid == "alice@new.example"
    assert (from_text(to_self.stanza).get("from"), from_text(to_self.stanza).get("to")) == \
        ("alice@new.example/a", "alice@new.example/b")
