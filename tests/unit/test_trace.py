"""Tests for server.io.trace: secrets never reach the stanza trace."""

from __future__ import annotations

import logging

import pytest
from lxml import etree

from server.io.trace import Tracer, pretty, redact
from server.xmpp.stream import StreamParser

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")

SECRET = "c2VjcmV0LXBhc3N3b3Jk"         # base64("secret-password")
PASSWORD = "hunter2-Calliope"


def parse(stanza: str):
    """An element as the server holds it: parsed out of a c2s stream."""
    events = StreamParser().feed(HEADER + stanza.encode())
    return events[-1].element


SASL_CASES = [
    f"<auth xmlns='{SASL}' mechanism='PLAIN'>{SECRET}</auth>",
    f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>{SECRET}</auth>",
    f"<response xmlns='{SASL}'>{SECRET}</response>",
    f"<challenge xmlns='{SASL}'>{SECRET}</challenge>",
    f"<success xmlns='{SASL}'>{SECRET}</success>",
]

REGISTER_CASES = [
    "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
    f"<username>bill</username><password>{PASSWORD}</password></query></iq>",
    "<iq type='set' id='r2' to='example.com'><query xmlns='jabber:iq:register'>"
    f"<username>bill</username><password>{PASSWORD}</password>"
    "<email>bill@example.org</email></query></iq>",
]


def secret_of(case: str) -> str:
    return SECRET if SECRET in case else PASSWORD


@pytest.mark.parametrize("case", SASL_CASES + REGISTER_CASES)
def test_redact_replaces_secret_text(case):
    el = parse(case)
    clean = redact(el)
    texts = [e.text for e in clean.iter()]
    assert secret_of(case) not in texts
    assert "[redacted]" in texts


@pytest.mark.parametrize("case", SASL_CASES + REGISTER_CASES)
def test_redact_leaves_the_original_unchanged(case):
    el = parse(case)
    before = etree.tostring(el)
    clean = redact(el)
    assert clean is not el
    assert etree.tostring(el) == before
    assert secret_of(case) in [e.text for e in el.iter()]


def test_redact_keeps_everything_else():
    el = parse(REGISTER_CASES[1])
    clean = redact(el)
    assert clean.get("to") == "example.com" and clean.get("id") == "r2"
    q = clean[0]
    assert q.findtext("{jabber:iq:register}username") == "bill"
    assert q.findtext("{jabber:iq:register}email") == "bill@example.org"
    assert q.findtext("{jabber:iq:register}password") == "[redacted]"
    sasl = redact(parse(SASL_CASES[0]))
    assert sasl.get("mechanism") == "PLAIN"
    assert sasl.text == "[redacted]"


def test_redact_without_secrets_returns_an_equal_element():
    el = parse("<message to='a@b'><body>password: not really</body></message>")
    assert etree.tostring(redact(el)) == etree.tostring(el)


def test_empty_sasl_elements_stay_empty():
    el = parse(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'/>")
    assert redact(el).text is None
    el = parse(f"<response xmlns='{SASL}'/>")
    assert "[redacted]" not in pretty(el)


def test_password_elements_in_other_namespaces_are_not_touched():
    # only jabber:iq:register <password> is a secret by this definition
    el = parse("<message><body>x</body><password xmlns='urn:example:game'>level3</password>"
               "</message>")
    assert "level3" in pretty(el)


@pytest.mark.parametrize("case", SASL_CASES + REGISTER_CASES)
def test_pretty_contains_no_secret_and_is_valid_xml(case):
    el = parse(case)
    out = pretty(el)
    assert secret_of(case) not in out
    assert "[redacted]" in out
    again = etree.fromstring(out)
    assert etree.QName(again).localname == etree.QName(el).localname
    assert etree.QName(again).namespace == etree.QName(el).namespace


def test_pretty_is_indented_and_keeps_namespaces():
    out = pretty(parse(REGISTER_CASES[0]))
    assert out.splitlines() == [
        '<iq xmlns="jabber:client" type="set" id="r1">',
        '  <query xmlns="jabber:iq:register">',
        '    <username>bill</username>',
        '    <password>[redacted]</password>',
        '  </query>',
        '</iq>',
    ]


def test_pretty_of_stream_elements_is_valid_xml():
    el = parse("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
               "<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
    again = etree.fromstring(pretty(el))
    assert again.tag == "{http://etherx.jabber.org/streams}features"
    assert again[0][0].text == "PLAIN"


def test_pretty_escapes_markup_in_text():
    el = parse("<message><body>&lt;script&gt; &amp; more</body></message>")
    again = etree.fromstring(pretty(el))
    assert again[0].text == "<script> & more"


def test_tracer_logs_redacted_stanzas(caplog):
    tracer = Tracer("c2s#7 bill@example.com")
    tracer.enabled = True
    with caplog.at_level(logging.INFO, logger="xferd.trace"):
        tracer.element("<<", parse(REGISTER_CASES[0]))
        tracer.element(">>", parse(SASL_CASES[4]))
    text = caplog.text
    assert "c2s#7 bill@example.com <<" in text
    assert PASSWORD not in text and SECRET not in text
    assert text.count("[redacted]") == 2


def test_disabled_tracer_logs_nothing(caplog):
    tracer = Tracer("c2s#8")
    with caplog.at_level(logging.DEBUG, logger="xferd.trace"):
        tracer.element("<<", parse(SASL_CASES[0]))
        tracer.text("<<", "<stream:stream>")
    assert caplog.records == []


def test_redact_hides_passwords_in_registration_data_forms():
    from lxml import etree
    from server.io.trace import pretty
    iq = etree.fromstring(
        "<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:register'>"
        "<x xmlns='jabber:x:data' type='submit'>"
        "<field var='username'><value>uma</value></field>"
        "<field var='password'><value>form-Secret</value></field>"
        "</x></query></iq>")
    text = pretty(iq)
    assert "form-Secret" not in text and "[redacted]" in text and "uma" in text
