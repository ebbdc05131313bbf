"""Which messages offline storage keeps (server/xmpp/hints.py), no server
needed: RFC 6121 §8.5.2.2.1, XEP-0160 §3, XEP-0334 §4, XEP-0085 §5.8."""

import pytest

from server.xmpp.hints import OfflineAction, has_content, hints, message_type, offline_decision
from server.xmpp.stanza import from_text

STORE, DROP, REFUSE = OfflineAction.STORE, OfflineAction.DROP, OfflineAction.REFUSE

BODY = "<body>hi</body>"
COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
ACTIVE = "<active xmlns='http://jabber.org/protocol/chatstates'/>"
NO_STORE = "<no-store xmlns='urn:xmpp:hints'/>"
NO_PERMANENT_STORE = "<no-permanent-store xmlns='urn:xmpp:hints'/>"
STORE_HINT = "<store xmlns='urn:xmpp:hints'/>"
NO_COPY = "<no-copy xmlns='urn:xmpp:hints'/>"
ORIGIN_ID = "<origin-id xmlns='urn:xmpp:sid:0' id='abc'/>"
THREAD = "<thread>t1</thread>"
RECEIVED = "<received xmlns='urn:xmpp:receipts' id='m1'/>"
DISPLAYED = "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>"
ENCRYPTED = ("<encrypted xmlns='eu.siacs.conversations.axolotl'>"
             "<header sid='1'/></encrypted>")


def message(*children: str, type: str | None = "chat"):
    kind = f" type='{type}'" if type is not None else ""
    return from_text(f"<message xmlns='jabber:client' to='b@example.org'{kind}>"
                     f"{''.join(children)}</message>")


@pytest.mark.parametrize("children, kind, action", [
    # RFC 6121 §8.5.2.2.1 / XEP-0160 §3: normal and chat are stored …
    ((BODY,), "chat", STORE),
    ((BODY,), "normal", STORE),
    ((BODY,), None, STORE),                      # no type is normal (RFC 6121 §5.2.2)
    ((BODY,), "bogus", STORE),                   # an unknown type too
    (("<subject>s</subject>",), "normal", STORE),
    # … headline, groupchat and error are not
    ((BODY,), "headline", DROP),
    ((BODY,), "error", DROP),
    ((BODY,), "groupchat", REFUSE),
])
def test_message_types(children, kind, action):
    assert offline_decision(message(*children, type=kind)) is action


@pytest.mark.parametrize("children", [
    (COMPOSING,),
    (ACTIVE, THREAD),
    (COMPOSING, NO_STORE),                      # what Gajim and Conversations send
    (COMPOSING, NO_STORE, NO_COPY, ORIGIN_ID),
    (COMPOSING, NO_PERMANENT_STORE),
    (),                                          # nothing at all
])
@pytest.mark.parametrize("kind", ["chat", "normal"])
def test_chat_states_alone_are_dropped_silently(children, kind):
    """XEP-0085 §5.8: a server "SHOULD NOT store them offline"; no error is
    sent for a notification (it is not stored, and that is expected)."""
    assert offline_decision(message(*children, type=kind)) is DROP


@pytest.mark.parametrize("children", [
    (BODY, ACTIVE),
    (RECEIVED,),                                  # XEP-0184 ack: kept, like Prosody and ejabberd
    (DISPLAYED,),                                 # XEP-0333 marker: kept too
    (ENCRYPTED, ACTIVE),
    ("<x xmlns='jabber:x:conference' jid='room@muc.example.org'/>",),
])
def test_content_with_or_without_chat_states_is_stored(children):
    assert offline_decision(message(*children)) is STORE


def test_no_store_refuses_content_so_the_sender_learns_it_did_not_arrive():
    """XEP-0334 §4.2: not stored "temporarily, e.g. for later delivery to an
    offline client"; RFC 6121 §8.5.2.2.1: a normal/chat message that is not
    stored is answered with <service-unavailable/>."""
    assert offline_decision(message(BODY, NO_STORE)) is REFUSE
    assert offline_decision(message(BODY, NO_STORE, type="normal")) is REFUSE
    assert offline_decision(message(RECEIVED, NO_STORE)) is REFUSE
    # a headline is never bounced, stored or not
    assert offline_decision(message(BODY, NO_STORE, type="headline")) is DROP


def test_no_permanent_store_still_allows_offline_storage():
    """XEP-0334 §3.3/§4.1: no archive, but temporary storage "as a normal part
    of delivery (e.g. if the recipient is offline)" is fine."""
    assert offline_decision(message(BODY, NO_PERMANENT_STORE)) is STORE


def test_store_keeps_what_would_not_be_kept_otherwise():
    """XEP-0334 §4.4: "A message containing the <store/> hint that is not of
    type 'error' SHOULD be stored"; §2: even one "that would not have been
    stored under normal conditions"."""
    assert offline_decision(message(BODY, STORE_HINT, type="headline")) is STORE
    assert offline_decision(message(COMPOSING, STORE_HINT)) is STORE
    assert offline_decision(message(ENCRYPTED, STORE_HINT, type="normal")) is STORE
    # not an error (§4.4, §5), not groupchat (no room without a resource)
    assert offline_decision(message(BODY, STORE_HINT, type="error")) is DROP
    assert offline_decision(message(BODY, STORE_HINT, type="groupchat")) is REFUSE


def test_no_store_wins_over_store():
    assert offline_decision(message(BODY, STORE_HINT, NO_STORE)) is REFUSE
    assert offline_decision(message(COMPOSING, NO_STORE, STORE_HINT)) is DROP


def test_hints_are_read_from_direct_children_and_ignored_in_errors():
    """XEP-0334 §5: an error often carries the original payload, hints included."""
    assert hints(message(BODY, NO_STORE, STORE_HINT)) == {
        "{urn:xmpp:hints}no-store", "{urn:xmpp:hints}store"}
    assert hints(message(BODY, NO_STORE, type="error")) == set()
    nested = message("<forwarded xmlns='urn:xmpp:forward:0'>"
                     "<message xmlns='jabber:client'><no-store xmlns='urn:xmpp:hints'/>"
                     "</message></forwarded>")
    assert hints(nested) == set()
    assert offline_decision(nested) is STORE


def test_has_content_and_message_type():
    assert not has_content(message(COMPOSING, THREAD, NO_STORE, ORIGIN_ID))
    assert has_content(message(COMPOSING, "<thread xmlns='urn:example'>x</thread>"))
    assert message_type(message(type=None)) == "normal"
    assert message_type(message(type="headline")) == "headline"
