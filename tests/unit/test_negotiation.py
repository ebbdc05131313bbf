"""Tests for server.xmpp.negotiation: the c2s negotiation table (RFC 6120 §5–7)."""

from __future__ import annotations

import itertools

import pytest
from lxml import etree

from server.xmpp.errors import StreamError
from server.xmpp.negotiation import (C2S_TABLE, Phase, Rule, classify, decide, features,
                                     phase_after_header)
from server.xmpp.stream import Element, StreamParser, serialize

TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"

HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")

# The negotiation as RFC 6120 / XEP-0077 / RFC 3921 describe it, written out
# independently of the module: (phase, event) → (action, next phase).
EXPECTED = {
    (Phase.TLS, "starttls"): ("starttls", Phase.AUTH),
    (Phase.TLS, "auth"): ("sasl_encryption_required", Phase.TLS),
    (Phase.AUTH, "starttls"): ("starttls", Phase.AUTH),
    (Phase.AUTH, "auth"): ("sasl_start", Phase.SASL),
    (Phase.AUTH, "abort"): ("sasl_abort", Phase.AUTH),
    (Phase.AUTH, "iq-register"): ("register", Phase.AUTH),
    (Phase.SASL, "response"): ("sasl_step", Phase.SASL),
    (Phase.SASL, "abort"): ("sasl_abort", Phase.AUTH),
    (Phase.BIND, "iq-bind"): ("bind", Phase.READY),
    (Phase.BIND, "iq-session"): ("session", Phase.BIND),
    (Phase.READY, "iq-bind"): ("bind_again", Phase.READY),
    (Phase.READY, "iq-session"): ("session", Phase.READY),
    (Phase.READY, "iq-register"): ("stanza", Phase.READY),
    (Phase.READY, "stanza"): ("stanza", Phase.READY),
    # XEP-0198: <enable/> once bound (§3: <failed/> before binding or
    # authentication), <resume/> in place of binding (§5), acks between stanzas (§4)
    (Phase.AUTH, "sm-enable"): ("sm_too_early", Phase.AUTH),
    (Phase.AUTH, "sm-resume"): ("sm_too_early", Phase.AUTH),
    (Phase.BIND, "sm-enable"): ("sm_too_early", Phase.BIND),
    (Phase.READY, "sm-enable"): ("sm_enable", Phase.READY),
    (Phase.BIND, "sm-resume"): ("sm_resume", Phase.READY),
    (Phase.READY, "sm-resume"): ("sm_resume_bound", Phase.READY),
    (Phase.READY, "sm-r"): ("sm_request", Phase.READY),
    (Phase.READY, "sm-a"): ("sm_ack", Phase.READY),
}

#: every event classify() can produce
EVENTS = ["starttls", "auth", "response", "abort", "iq-register", "iq-bind",
          "iq-session", "stanza", "sm-enable", "sm-resume", "sm-r", "sm-a", "unknown"]

#: the stream error that ends the stream for a refused event, per phase
REFUSED = {
    Phase.TLS: "policy-violation",
    Phase.AUTH: "not-authorized",
    Phase.SASL: "not-authorized",
    Phase.BIND: "not-authorized",
    Phase.READY: "unsupported-stanza-type",
}


def parse(stanza: bytes):
    """Parse *stanza* the way it arrives: as a child of a c2s stream."""
    events = StreamParser().feed(HEADER + stanza)
    assert isinstance(events[-1], Element)
    return events[-1].element


# -- decide() ------------------------------------------------------------------

def test_table_has_exactly_the_expected_rows():
    assert set(C2S_TABLE) == set(EXPECTED)


@pytest.mark.parametrize("phase,event", sorted(EXPECTED, key=lambda k: (k[0].name, k[1])),
                         ids=lambda v: v.name if isinstance(v, Phase) else v)
def test_decide_each_row(phase, event):
    action, then = EXPECTED[(phase, event)]
    rule = decide(phase, event)
    assert isinstance(rule, Rule)
    assert (rule.action, rule.then) == (action, then)


REFUSALS = [(p, e) for p, e in itertools.product(Phase, EVENTS)
            if (p, e) not in EXPECTED and e != "unknown"]


@pytest.mark.parametrize("phase,event", REFUSALS,
                         ids=lambda v: v.name if isinstance(v, Phase) else v)
def test_event_not_in_table_ends_the_stream_with_the_phase_refusal(phase, event):
    with pytest.raises(StreamError) as info:
        decide(phase, event)
    assert info.value.condition == REFUSED[phase]
    assert info.value.text


def test_specific_refusals_a_client_would_see():
    # a stanza before STARTTLS when TLS is required
    with pytest.raises(StreamError) as info:
        decide(Phase.TLS, "stanza")
    assert info.value.condition == "policy-violation"
    # a message before authenticating
    with pytest.raises(StreamError) as info:
        decide(Phase.AUTH, "stanza")
    assert info.value.condition == "not-authorized"
    # a second <auth/> in the middle of a SASL exchange
    with pytest.raises(StreamError) as info:
        decide(Phase.SASL, "auth")
    assert info.value.condition == "not-authorized"
    # a message after SASL but before binding
    with pytest.raises(StreamError) as info:
        decide(Phase.BIND, "stanza")
    assert info.value.condition == "not-authorized"
    # STARTTLS once the session is up
    with pytest.raises(StreamError) as info:
        decide(Phase.READY, "starttls")
    assert info.value.condition == "unsupported-stanza-type"


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_unknown_element_is_unsupported_stanza_type_in_every_phase(phase):
    with pytest.raises(StreamError) as info:
        decide(phase, "unknown")
    assert info.value.condition == "unsupported-stanza-type"


# -- classify() ----------------------------------------------------------------

@pytest.mark.parametrize("stanza,event", [
    (b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "starttls"),
    (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
     "auth"),
    (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'/>", "auth"),
    (b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdz</response>", "response"),
    (b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", "response"),
    (b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", "abort"),
    # resource binding (RFC 6120 §7)
    (b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
     "iq-bind"),
    (b"<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
     b"<resource>balcony</resource></bind></iq>", "iq-bind"),
    # legacy session (RFC 3921 §3)
    (b"<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
     "iq-session"),
    # in-band registration (XEP-0077)
    (b"<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>", "iq-register"),
    (b"<iq type='set' id='r2'><query xmlns='jabber:iq:register'>"
     b"<username>bill</username><password>Calliope</password></query></iq>", "iq-register"),
    (b"<iq type='get' id='r3' to='example.com'><query xmlns='jabber:iq:register'/></iq>",
     "iq-register"),
    (b"<iq type='set' id='r4' to='example.com'><query xmlns='jabber:iq:register'>"
     b"<remove/></query></iq>", "iq-register"),
    # addressed to a user: an ordinary stanza routed elsewhere
    (b"<iq type='get' id='r5' to='bill@example.com'><query xmlns='jabber:iq:register'/></iq>",
     "stanza"),
    (b"<iq type='get' id='r6' to='svc@example.com/res'>"
     b"<query xmlns='jabber:iq:register'/></iq>", "stanza"),
    # plain stanzas
    (b"<message to='romeo@example.net'><body>hi</body></message>", "stanza"),
    (b"<message/>", "stanza"),
    (b"<presence/>", "stanza"),
    (b"<presence type='unavailable'/>", "stanza"),
    (b"<iq type='get' id='q1'><query xmlns='jabber:iq:roster'/></iq>", "stanza"),
    (b"<iq type='result' id='q2'/>", "stanza"),
    # a bind/session/register payload in a result or error is not a request
    (b"<iq type='result' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
     "stanza"),
    (b"<iq type='error' id='r7'><query xmlns='jabber:iq:register'/></iq>", "stanza"),
    # a request with two payloads is not a well-formed bind/session request
    (b"<iq type='set' id='b4'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
     b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>", "stanza"),
    # unknown top-level elements
    (b"<foo xmlns='urn:example:foo'/>", "unknown"),
    (b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", "unknown"),
    (b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", "unknown"),
    (b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", "unknown"),
    (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "unknown"),
    (b"<auth xmlns='jabber:iq:auth'/>", "unknown"),
    (b"<message xmlns='jabber:server'/>", "unknown"),
    (b"<starttls/>", "unknown"),        # jabber:client starttls is not the TLS element
    (b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>", "unknown"),
    (b"<stream:features/>", "unknown"),
    # XEP-0198 stream management
    (b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>", "sm-enable"),
    (b"<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>", "sm-resume"),
    (b"<r xmlns='urn:xmpp:sm:3'/>", "sm-r"),
    (b"<a xmlns='urn:xmpp:sm:3' h='3'/>", "sm-a"),
    (b"<enable xmlns='urn:xmpp:sm:2'/>", "unknown"),     # the old namespace is not offered
    (b"<enabled xmlns='urn:xmpp:sm:3'/>", "unknown"),    # the server's element
])
def test_classify(stanza, event):
    assert classify(parse(stanza)) == event


def test_classified_events_drive_a_full_negotiation():
    # TLS required → STARTTLS → (restart) AUTH → SASL → (restart) BIND → READY
    steps = [
        (b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", Phase.TLS, "starttls"),
        (b"<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>",
         Phase.AUTH, "register"),
        (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>x</auth>",
         Phase.AUTH, "sasl_start"),
        (b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>y</response>",
         Phase.SASL, "sasl_step"),
    ]
    for stanza, phase, action in steps:
        assert decide(phase, classify(parse(stanza))).action == action
    phase = phase_after_header(secure=True, require_tls=True, authenticated=True)
    rule = decide(phase, classify(parse(
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")))
    assert (rule.action, rule.then) == ("bind", Phase.READY)
    rule = decide(rule.then, classify(parse(b"<message to='a@b'><body>x</body></message>")))
    assert (rule.action, rule.then) == ("stanza", Phase.READY)


# -- features() ----------------------------------------------------------------

MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_features_tls_phase_requires_starttls():
    el = features(Phase.TLS, secure=False, mechanisms=MECHS, registration=True)
    assert serialize(el) == (
        '<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls">'
        '<required/></starttls></stream:features>')


def test_features_auth_phase_insecure_with_registration():
    el = features(Phase.AUTH, secure=False, mechanisms=MECHS, registration=True)
    assert serialize(el) == (
        '<stream:features>'
        '<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>'
        '<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">'
        '<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>'
        '<mechanism>PLAIN</mechanism></mechanisms>'
        '<register xmlns="http://jabber.org/features/iq-register"/>'
        '</stream:features>')


def test_features_auth_phase_secure_without_registration():
    el = features(Phase.AUTH, secure=True, mechanisms=["SCRAM-SHA-1", "PLAIN"],
                  registration=False)
    assert serialize(el) == (
        '<stream:features>'
        '<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">'
        '<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>'
        '</stream:features>')


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("registration", [False, True])
def test_features_auth_phase_combinations(secure, registration):
    el = features(Phase.AUTH, secure=secure, mechanisms=list(reversed(MECHS)),
                  registration=registration)
    children = [c.tag for c in el]
    expected = ([f"{{{TLS}}}starttls"] if not secure else []) + [f"{{{SASL}}}mechanisms"] \
        + (["{http://jabber.org/features/iq-register}register"] if registration else [])
    assert children == expected
    mechs = el.find(f"{{{SASL}}}mechanisms")
    assert [m.text for m in mechs] == list(reversed(MECHS))      # order is preference
    starttls = el.find(f"{{{TLS}}}starttls")
    if starttls is not None:
        assert len(starttls) == 0                                   # optional, not required


@pytest.mark.parametrize("secure", [False, True])
def test_features_bind_phase_offers_bind_and_optional_session(secure):
    el = features(Phase.BIND, secure=secure, mechanisms=MECHS, registration=True)
    assert serialize(el) == (
        '<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>'
        '<session xmlns="urn:ietf:params:xml:ns:xmpp-session"><optional/></session>'
        '</stream:features>')


@pytest.mark.parametrize("phase", [Phase.SASL, Phase.READY], ids=lambda p: p.name)
def test_features_other_phases_offer_nothing(phase):
    el = features(phase, secure=True, mechanisms=MECHS, registration=True)
    assert serialize(el) == "<stream:features/>"


def test_features_parse_back_inside_a_stream():
    from server.xmpp.stream import STREAM_FOOTER, stream_header
    el = features(Phase.AUTH, secure=False, mechanisms=MECHS, registration=True)
    data = (stream_header(from_="example.com") + serialize(el) + STREAM_FOOTER).encode()
    events = StreamParser().feed(data)
    got = events[1].element
    assert got.tag == "{http://etherx.jabber.org/streams}features"
    assert etree.QName(got[1]).namespace == SASL
    assert [m.text for m in got[1]] == MECHS


# -- phase_after_header() ----------------------------------------------------------

@pytest.mark.parametrize("secure,require_tls,authenticated,phase", [
    (False, False, False, Phase.AUTH),
    (False, True, False, Phase.TLS),
    (True, False, False, Phase.AUTH),
    (True, True, False, Phase.AUTH),
    (False, False, True, Phase.BIND),
    (False, True, True, Phase.BIND),
    (True, False, True, Phase.BIND),
    (True, True, True, Phase.BIND),
])
def test_phase_after_header(secure, require_tls, authenticated, phase):
    assert phase_after_header(secure=secure, require_tls=require_tls,
                              authenticated=authenticated) is phase
