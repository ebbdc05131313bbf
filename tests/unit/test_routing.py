"""Routing decisions fed with stanzas (server/xmpp/routing.py).

Each test names the RFC section whose text it checks: RFC 6120 §8.2.3 (IQ
semantics), §10.3 (no 'to'), §10.5 (local domain); RFC 6121 §8.5 (local
user: bare and full JIDs, no such resource, the domain).
"""

from __future__ import annotations

import pytest
from lxml import etree

from server.core.events import is_known
from server.xmpp.jid import JID
from server.xmpp.routing import (DELIVER, DROP, KINDS, SERVICE_UNAVAILABLE, default_action,
                                 destination, event_names, iq_problem, recipient)

C = "jabber:client"


def stanza(text: str):
    """Parse *text* as a stanza of a c2s stream (default namespace jabber:client)."""
    wrapper = etree.fromstring(f"<stream xmlns='{C}'>{text}</stream>".encode())
    el = wrapper[0]
    wrapper.remove(el)
    return el


def j(text: str) -> JID:
    return JID.parse(text)


ROMEO = j("romeo@example.net/orchard")


# -- RFC 6120 §8.2.3: IQ semantics --------------------------------------------------------

@pytest.mark.parametrize("iq_type", ["get", "set"])
def test_rfc6120_8_2_3_rule5_get_set_with_exactly_one_payload_is_fine(iq_type):
    iq = stanza(f"<iq type='{iq_type}' id='a1'><query xmlns='jabber:iq:roster'/></iq>")
    assert iq_problem(iq) is None


@pytest.mark.parametrize("payload", ["", "<a xmlns='x'/><b xmlns='y'/>"])
@pytest.mark.parametrize("iq_type", ["get", "set"])
def test_rfc6120_8_2_3_rule5_get_set_needs_exactly_one_child(iq_type, payload):
    """'An IQ stanza of type "get" or "set" MUST contain exactly one child element'."""
    iq = stanza(f"<iq type='{iq_type}' id='a1'>{payload}</iq>")
    assert "exactly one payload" in iq_problem(iq)


def test_rfc6120_8_2_3_rule1_id_is_required():
    """'The 'id' attribute is REQUIRED for IQ stanzas.'"""
    iq = stanza("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert iq_problem(iq) == "IQ without id"


def test_rfc6120_8_2_3_rule1_empty_id_counts_as_missing():
    iq = stanza("<iq type='result' id=''/>")
    assert iq_problem(iq) == "IQ without id"


@pytest.mark.parametrize("bad", [None, "", "ask", "GET", "normal"])
def test_rfc6120_8_2_3_rule2_type_is_required_and_one_of_four(bad):
    """'The 'type' attribute is REQUIRED … The value MUST be one of get, set,
    result, error' (case matters: attribute values are compared exactly)."""
    attr = "" if bad is None else f" type='{bad}'"
    iq = stanza(f"<iq id='a1'{attr}><ping xmlns='urn:xmpp:ping'/></iq>")
    assert iq_problem(iq) == f"invalid IQ type {bad!r}"


def test_rfc6120_8_2_3_type_is_checked_before_id():
    """An IQ with neither is reported for its type (the first rule checked)."""
    assert iq_problem(stanza("<iq/>")) == "invalid IQ type None"


@pytest.mark.parametrize("body", ["", "<query xmlns='jabber:iq:roster'/>"])
def test_rfc6120_8_2_3_rule6_result_with_zero_or_one_child_is_fine(body):
    assert iq_problem(stanza(f"<iq type='result' id='a1'>{body}</iq>")) is None


def test_rfc6120_8_2_3_rule6_result_with_two_children_is_not_checked():
    """Deviation kept on purpose (listed in routing.py's docstring): rule 6
    says a result MUST include zero or one child; we do not enforce it."""
    iq = stanza("<iq type='result' id='a1'><a xmlns='x'/><b xmlns='y'/></iq>")
    assert iq_problem(iq) is None


def test_rfc6120_8_2_3_rule7_error_without_error_child_is_not_checked():
    """Deviation kept on purpose: rule 7 says an error MUST include an
    <error/> child; we route it anyway (and never answer it, rule 4)."""
    assert iq_problem(stanza("<iq type='error' id='a1'/>")) is None


def test_rfc6120_8_2_3_error_with_request_payload_and_error_is_fine():
    iq = stanza("<iq type='error' id='a1'><query xmlns='jabber:iq:roster'/>"
                "<error type='cancel'><service-unavailable "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert iq_problem(iq) is None


def test_kinds_are_the_three_stanzas_in_jabber_client():
    assert KINDS == {f"{{{C}}}iq": "iq", f"{{{C}}}message": "message",
                     f"{{{C}}}presence": "presence"}
    assert stanza("<iq/>").tag in KINDS
    assert etree.fromstring("<iq xmlns='jabber:server'/>").tag not in KINDS


# -- RFC 6120 §10.3: no 'to' address ------------------------------------------------------

def test_rfc6120_10_3_no_to_means_the_senders_bare_jid():
    """§10.3.1 (message) and §10.3.3 (IQ: 'process the stanza on behalf of
    the account from which received the stanza'): the sender's bare JID."""
    assert recipient(None, ROMEO) == j("romeo@example.net")


def test_rfc6120_10_3_explicit_to_wins():
    to = j("juliet@example.com/balcony")
    assert recipient(to, ROMEO) is to


def test_rfc6120_10_3_neither_to_nor_from_has_no_recipient():
    assert recipient(None, None) is None


def test_rfc6120_10_3_3_iq_without_to_is_for_self():
    """The account's own bare JID is ``self`` (so roster/vCard/private
    storage handlers see requests without 'to' as the user's own)."""
    to = recipient(None, ROMEO)
    assert destination(to, ROMEO) == "self"
    iq = stanza("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    assert event_names(iq, "iq", destination(to, ROMEO)) == (
        "iq-get/self/jabber:iq:roster:query", "iq-get/bare/jabber:iq:roster:query")


# -- destination: the forms of RFC 6121 §8.5 / RFC 6120 §10.5 ----------------------------

@pytest.mark.parametrize("to, from_, dest", [
    ("example.net", ROMEO, "host"),                       # §10.5.1 domainpart
    ("example.net/admin", ROMEO, "full"),                 # §10.5.2 domainpart/resourcepart
    ("juliet@example.net", ROMEO, "bare"),                # RFC 6121 §8.5.2
    ("romeo@example.net", ROMEO, "self"),                 # the sender's own account
    ("romeo@example.net", j("romeo@example.net"), "self"),
    ("romeo@example.net", None, "bare"),                  # no sender known
    ("romeo@example.org", ROMEO, "bare"),                 # same user, other domain
    ("romeo@example.net/orchard", ROMEO, "full"),         # RFC 6121 §8.5.3 (even itself)
    ("juliet@example.net/balcony", ROMEO, "full"),
])
def test_rfc6121_8_5_destination_follows_the_form_of_the_jid(to, from_, dest):
    assert destination(j(to), from_) == dest


def test_rfc7622_destination_compares_prepared_parts():
    """'self' is decided on prepared JIDs: case in the localpart and domain
    does not matter."""
    assert destination(j("Romeo@Example.NET"), ROMEO) == "self"


# -- event names --------------------------------------------------------------------------

PING = "<iq type='get' id='p1' to='example.net'><ping xmlns='urn:xmpp:ping'/></iq>"


@pytest.mark.parametrize("dest", ["host", "bare", "full"])
def test_iq_get_set_is_named_by_type_destination_and_payload(dest):
    assert event_names(stanza(PING), "iq", dest) == (f"iq-get/{dest}/urn:xmpp:ping:ping",)
    set_ = stanza("<iq type='set' id='s1'><query xmlns='jabber:iq:private'/></iq>")
    assert event_names(set_, "iq", dest) == (f"iq-set/{dest}/jabber:iq:private:query",)


def test_iq_to_self_falls_back_to_bare():
    assert event_names(stanza(PING), "iq", "self") == (
        "iq-get/self/urn:xmpp:ping:ping", "iq-get/bare/urn:xmpp:ping:ping")


def test_iq_payload_namespace_with_colons_and_slashes():
    iq = stanza("<iq type='get' id='d1'><query "
                "xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert event_names(iq, "iq", "host") == (
        "iq-get/host/http://jabber.org/protocol/disco#info:query",)


def test_iq_payload_without_namespace_is_named_none():
    """A payload in no namespace (the stanza's default namespace undeclared)."""
    iq = etree.Element(f"{{{C}}}iq", type="get", id="n1")
    etree.SubElement(iq, "query")
    assert event_names(iq, "iq", "host") == ("iq-get/host/None:query",)


@pytest.mark.parametrize("iq_type", ["result", "error"])
@pytest.mark.parametrize("dest, names", [("full", ("iq/full",)), ("host", ("iq/host",)),
                                         ("self", ("iq/self", "iq/bare"))])
def test_iq_results_and_errors_are_named_without_payload(iq_type, dest, names):
    iq = stanza(f"<iq type='{iq_type}' id='x'><query xmlns='jabber:iq:roster'/></iq>")
    assert event_names(iq, "iq", dest) == names


@pytest.mark.parametrize("kind", ["message", "presence"])
@pytest.mark.parametrize("dest, names", [("host", ("{k}/host",)), ("bare", ("{k}/bare",)),
                                         ("full", ("{k}/full",)),
                                         ("self", ("{k}/self", "{k}/bare"))])
def test_message_and_presence_are_named_by_destination(kind, dest, names):
    el = stanza(f"<{kind} type='chat'><body>hi</body></{kind}>")
    assert event_names(el, kind, dest) == tuple(n.format(k=kind) for n in names)


def test_every_name_is_a_known_event():
    """The event bus refuses handlers for names the router never fires;
    every name the router can fire must be accepted."""
    stanzas = [(stanza(PING), "iq"), (stanza("<iq type='result' id='r'/>"), "iq"),
               (stanza("<message/>"), "message"), (stanza("<presence/>"), "presence")]
    for el, kind in stanzas:
        for dest in ("host", "self", "bare", "full"):
            for name in event_names(el, kind, dest):
                assert is_known(name), name


# -- what happens to a stanza nobody handled ---------------------------------------------

MESSAGE_TYPES = [None, "normal", "chat", "groupchat", "headline", "error"]
PRESENCE_TYPES = [None, "unavailable", "subscribe", "subscribed", "unsubscribe",
                  "unsubscribed", "probe", "error"]


@pytest.mark.parametrize("kind, stanza_type", [
    *(("iq", t) for t in ("get", "set", "result", "error")),
    *(("message", t) for t in MESSAGE_TYPES),
    *(("presence", t) for t in PRESENCE_TYPES),
])
def test_rfc6121_8_5_3_1_full_jid_with_a_connected_resource_is_delivered(kind, stanza_type):
    """§8.5.3.1 'Resource Matches': a message, presence (probe aside, which
    the presence module takes first) or IQ MUST be delivered to the resource
    (also RFC 6120 §10.5.4)."""
    assert default_action(kind, stanza_type, "full", True) == DELIVER


@pytest.mark.parametrize("iq_type", ["get", "set"])
def test_rfc6121_8_5_3_2_3_iq_to_full_jid_without_resource_is_service_unavailable(iq_type):
    """§8.5.3.2.3: 'For an IQ stanza, the server MUST return a
    <service-unavailable/> stanza error to the sender.'"""
    assert default_action("iq", iq_type, "full", False) == SERVICE_UNAVAILABLE


@pytest.mark.parametrize("dest", ["bare", "self"])
@pytest.mark.parametrize("iq_type", ["get", "set"])
def test_rfc6121_8_5_2_1_3_unhandled_iq_to_bare_jid_is_service_unavailable(dest, iq_type):
    """§8.5.2.1.3 / §8.5.2.2.3: the server answers on the user's behalf and
    'if not, then the server MUST reply with a <service-unavailable/>
    stanza error' — never delivered to a resource, even one that is online
    (the session is only asked about for full JIDs)."""
    assert default_action("iq", iq_type, dest, False) == SERVICE_UNAVAILABLE
    assert default_action("iq", iq_type, dest, True) == SERVICE_UNAVAILABLE


@pytest.mark.parametrize("dest", ["host", "full"])
@pytest.mark.parametrize("iq_type", ["get", "set"])
def test_rfc6120_10_5_1_unhandled_iq_to_the_domain_is_service_unavailable(dest, iq_type):
    """RFC 6120 §10.5.1/§10.5.2: to the domain (or domain/resource) the
    server handles the stanza or returns an error; an IQ nobody handles gets
    <service-unavailable/> (§8.2.3 rule 3: a get/set MUST be answered)."""
    assert default_action("iq", iq_type, dest, False) == SERVICE_UNAVAILABLE


@pytest.mark.parametrize("dest", ["host", "self", "bare", "full"])
@pytest.mark.parametrize("iq_type", ["result", "error"])
def test_rfc6120_8_2_3_rule4_unhandled_iq_result_or_error_is_dropped(dest, iq_type):
    """Rule 4: an entity 'MUST NOT respond to the stanza by sending a further
    IQ response of type "result" or "error"'."""
    assert default_action("iq", iq_type, dest, False) == DROP


@pytest.mark.parametrize("msg_type", ["normal", "groupchat", "headline"])
def test_rfc6121_8_5_3_2_1_message_to_missing_resource_may_be_dropped_or_bounced(msg_type):
    """§8.5.3.2.1: for "normal", "groupchat" or "headline" the server MUST
    either silently ignore or return an error (SHOULD be
    <service-unavailable/>). Both are allowed; we bounce all but headline.
    (modules/message.py takes these first and treats normal like chat.)"""
    expected = DROP if msg_type == "headline" else SERVICE_UNAVAILABLE
    assert default_action("message", msg_type, "full", False) == expected


def test_rfc6121_5_2_2_message_without_type_is_normal():
    """RFC 6121 §5.2.2: no type means "normal"."""
    assert default_action("message", None, "full", False) == \
        default_action("message", "normal", "full", False)


@pytest.mark.parametrize("dest", ["host", "self", "bare", "full"])
def test_rfc6121_8_5_3_2_1_error_message_is_silently_ignored(dest):
    """§8.5.2.1.1, §8.5.2.2.1, §8.5.3.2.1: 'For a message stanza of type
    "error", the server MUST silently ignore the stanza' (RFC 6120 §8.3.1:
    never answer an error with an error)."""
    assert default_action("message", "error", dest, False) == DROP


@pytest.mark.parametrize("dest", ["self", "bare"])
@pytest.mark.parametrize("msg_type", [None, "normal", "chat", "groupchat"])
def test_rfc6121_8_5_2_2_1_unhandled_message_to_bare_jid_is_service_unavailable(dest, msg_type):
    """§8.5.2.2.1 (no resources): normal/chat may be stored, dropped or
    bounced, groupchat MUST get an error (SHOULD be <service-unavailable/>).
    Storing is modules/offline.py's job; what nobody took is bounced."""
    assert default_action("message", msg_type, dest, False) == SERVICE_UNAVAILABLE


@pytest.mark.parametrize("dest", ["host", "self", "bare", "full"])
def test_rfc6121_8_5_2_2_1_headline_nobody_wanted_is_dropped(dest):
    """§8.5.2.2.1: 'For a message stanza of type "headline", the server MUST
    silently ignore the message' (no resources); §8.5.3.2.1 allows it too."""
    assert default_action("message", "headline", dest, False) == DROP


@pytest.mark.parametrize("msg_type", [None, "chat", "groupchat"])
def test_rfc6120_10_5_1_message_to_the_domain_nobody_handled_is_an_error(msg_type):
    """§10.5.1: to the bare domain the server MUST handle the stanza or return
    an error; with no handler we return <service-unavailable/>."""
    assert default_action("message", msg_type, "host", False) == SERVICE_UNAVAILABLE


@pytest.mark.parametrize("dest", ["host", "self", "bare", "full"])
@pytest.mark.parametrize("presence_type", PRESENCE_TYPES)
def test_rfc6121_8_5_2_2_2_presence_nobody_wanted_is_dropped(dest, presence_type):
    """§8.5.2.2.2 and §8.5.3.2.2: available/unavailable presence with no
    matching resource MUST be silently ignored; subscription requests and
    probes are the presence/subscription modules' job (§3, §4.3), which run
    before this default — anything left over is dropped, never bounced."""
    assert default_action("presence", presence_type, dest, False) == DROP


def test_session_is_only_considered_for_full_jids():
    """A session flag for a bare or domain address changes nothing: delivery
    to bare JIDs is a module's choice (RFC 6121 §8.5.2.1)."""
    for dest in ("host", "self", "bare"):
        for kind, stanza_type in (("message", "chat"), ("presence", None), ("iq", "get")):
            assert default_action(kind, stanza_type, dest, True) == \
                default_action(kind, stanza_type, dest, False)
