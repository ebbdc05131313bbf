"""RFC 6120 requirements a client can see on the wire, checked byte by byte.

Each test sends what a client (or a peer server) would send and reads what
xferd answers, against the sentence of the RFC quoted in its docstring.
"""

import base64

from tests.harness import SASL, STREAMS, RawClient, header

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

def opening(to="localhost", version="1.0", extra="", ns="jabber:client") -> str:
    attrs = "".join(f" {name}='{value}'" for name, value in
                    (("to", to), ("version", version)) if value is not None)
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns}' xmlns:stream='{STREAMS}'"
            f"{attrs}{extra}>")


async def test_response_header_is_addressed_to_the_client_that_named_itself(server):
    """RFC 6120 §4.7.2: "if the client included a 'from' attribute in the
    initial stream header then the server MUST include a 'to' attribute in
    the response stream header and MUST set its value to the bare JID
    specified in the 'from' attribute of the initial stream header. If the
    client did not include a 'from' attribute ... then the server MUST NOT
    include a 'to' attribute in the response stream header." """
    raw = await RawClient.connect(server.c2s_port)
    raw.send(opening(extra=" from='alice@localhost/desk'"))
    await raw.expect("features")
    assert raw.root.get("to") == "alice@localhost"
    await raw.close()

    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    assert raw.root.get("to") is None
    await raw.close()


async def test_a_higher_version_is_answered_with_ours(server):
    """RFC 6120 §4.7.5: "The receiving entity MUST set the value of the
    'version' attribute in the response stream header to either the value
    supplied by the initiating entity or the highest version number
    supported by the receiving entity, whichever is lower." A client that
    says 2.0 gets 1.0 and the stream goes on (it is the client's turn to
    decide whether it can speak 1.0)."""
    raw = await RawClient.connect(server.c2s_port)
    raw.send(opening(version="2.0"))
    features = await raw.expect("features")
    assert raw.root.get("version") == "1.0"
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is not None
    await raw.close()


async def test_a_header_without_version_gets_none_back_and_unsupported_version(server):
    """RFC 6120 §4.7.5: no 'version' stands for 0.0, and the response carries
    the lower of the two versions; we do not speak 0.0, so the response
    header has no 'version' and the stream ends with <unsupported-version/>
    (§4.9.3.25)."""
    raw = await RawClient.connect(server.c2s_port)
    raw.send(opening(version=None))
    assert await raw.stream_error() == "unsupported-version"
    assert raw.root.get("version") is None
    await raw.close()


async def test_a_stream_error_from_the_client_is_not_answered_with_one(server):
    """RFC 6120 §4.9.1.1: a stream error is unrecoverable — the client that
    sends one has ended the stream; §4.4: the other side closes its own
    stream with </stream:stream>. xferd used to treat <stream:error/> as an
    unknown element and answer <unsupported-stanza-type/>."""
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    before = len(raw.received)
    raw.send("<stream:error><undefined-condition "
             "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
    assert await raw.wait_closed()
    tail = raw.received[before:]
    assert b"error" not in tail, tail
    assert tail.endswith(b"</stream:stream>"), tail
    await raw.close()


async def test_a_peer_servers_stream_error_is_not_answered_with_one(server):
    """RFC 6120 §4.9.1.1 and §4.4 on a server-to-server stream: the same."""
    raw = await RawClient.connect(server.s2s_port)
    raw.send(header(ns="jabber:server"))
    await raw.expect("features")
    before = len(raw.received)
    raw.send("<stream:error><remote-connection-failed "
             "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
    assert await raw.wait_closed()
    tail = raw.received[before:]
    assert b"error" not in tail, tail
    assert tail.endswith(b"</stream:stream>"), tail
    await raw.close()


async def test_too_many_failed_sasl_attempts_end_the_stream(server, new_user):
    """RFC 6120 §6.4.5: "The receiving entity SHOULD allow a configurable but
    reasonable number of retries (at least 2 and no more than 5) ... If the
    initiating entity exceeds the number of retries, the receiving entity
    MUST return a stream error, which SHOULD be <policy-violation/>".
    xferd allows 5 retries: the first attempt and 5 retries get <failure/>;
    the stream then ends. Before, a client could guess on one stream forever."""
    user = new_user("guess").split("@")[0]
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    token = base64.b64encode(f"\0{user}\0wrong".encode()).decode()
    for attempt in range(6):
        raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        failure = await raw.expect("failure")
        assert failure.tag == f"{{{SASL}}}failure", attempt
    assert await raw.stream_error() == "policy-violation"
    assert await raw.wait_closed()
    await raw.close()


async def test_two_failed_attempts_then_success_is_allowed(server, new_user):
    """RFC 6120 §6.4.5: retries are allowed — a client that mistyped its
    password twice still logs in on the same stream."""
    jid = new_user("typo")
    user = jid.split("@")[0]
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    for password in ("wrong", "wronger"):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        await raw.expect("failure")
    token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    await raw.expect("success")
    await raw.close()


async def _bound(server, user: str, password: str, resource: str, lang: str | None = None):
    """A RawClient logged in with PLAIN whose last stream header says *lang*."""
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    await raw.expect("success")
    raw._new_stream()
    raw.send(opening(extra=f" xml:lang='{lang}'" if lang else ""))
    await raw.expect("features")
    raw.send(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             f"<resource>{resource}</resource></bind></iq>")
    await raw.expect("iq")
    return raw


async def test_a_stanza_without_xml_lang_gets_the_streams(server, new_user):
    """RFC 6120 §8.1.5: "If an outbound stanza generated by a client does not
    possess an 'xml:lang' attribute, the client's server SHOULD add an
    'xml:lang' attribute whose value is that specified for the stream as
    defined under Section 4.7.4." and "An implementation MUST NOT modify or
    delete 'xml:lang' attributes on stanzas it receives from other
    entities." The recipient learns the language of the text it is shown."""
    sender, receiver = new_user("de"), new_user("rcpt")
    de = await _bound(server, sender.split("@")[0], "pw", "desk", lang="de")
    rcpt = await _bound(server, receiver.split("@")[0], "pw", "desk")
    de.send(f"<message to='{receiver}/desk' type='chat' id='m1'><body>Hallo</body></message>")
    got = await rcpt.expect("message")
    assert got.get(XML_LANG) == "de", got.attrib
    de.send(f"<message to='{receiver}/desk' type='chat' id='m2' xml:lang='fr'>"
            "<body>Salut</body></message>")
    got = await rcpt.expect("message")
    assert got.get(XML_LANG) == "fr", got.attrib
    await de.close()
    await rcpt.close()
