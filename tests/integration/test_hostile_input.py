"""Broken and hostile input gets the right stream error, and nobody else notices.

Each test keeps a well-behaved slixmpp client logged in on the same server and
checks it still gets answers after the hostile connection was thrown out.
"""

import asyncio

import pytest

from tests.harness import RawClient, header, login, round_trip

pytestmark = pytest.mark.hostile

BILLION_LAUGHS = (b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                  + b"".join(b"<!ENTITY lol%d '%s'>" % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b"]><stream:stream xmlns='jabber:client' "
                    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
                  + b"<message><body>&lol9;</body></message>")


@pytest.fixture
async def bystander(server):
    client = await login(server, "bob@localhost/bystander", "bob-pass")
    yield client
    assert server.alive(), server.log()[-3000:]
    assert await client.ping_server() >= 0, "the well-behaved client lost service"
    client.send_message(mto="bob@localhost/bystander", mbody="still here")
    msg = await asyncio.wait_for(client.messages.get(), 5)
    assert msg["body"] == "still here"
    await client.close()


async def _logged_in_raw(server) -> RawClient:
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert(), "alice", "alice-pass", resource="hostile")
    return raw


async def _error_after(raw: RawClient, data: bytes) -> str:
    raw.send(data)
    condition = await raw.stream_error()
    assert await raw.wait_closed(), "server did not close the connection"
    return condition


async def test_billion_laughs_before_the_stream_is_restricted_xml(server, bystander):
    raw = await RawClient.connect(server.c2s_port)
    assert await _error_after(raw, BILLION_LAUGHS) == "restricted-xml"
    assert b"lollollol" not in raw.received


async def test_doctype_after_login_is_refused(server, bystander):
    raw = await _logged_in_raw(server)
    assert await _error_after(raw, b"<!DOCTYPE x [<!ENTITY a 'b'>]>") in (
        "restricted-xml", "not-well-formed")


async def test_undefined_entity_is_not_well_formed(server, bystander):
    raw = await _logged_in_raw(server)
    assert await _error_after(
        raw, b"<message to='bob@localhost'><body>&lol;</body></message>") == "not-well-formed"


async def test_malformed_xml_is_not_well_formed(server, bystander):
    raw = await _logged_in_raw(server)
    assert await _error_after(raw, b"<message><body>hi</bdy></message>") == "not-well-formed"


async def test_malformed_xml_before_auth(server, bystander):
    raw = await RawClient.connect(server.c2s_port)
    assert await _error_after(raw, header() + b"<<<>>>") == "not-well-formed"


async def test_comment_and_processing_instruction_are_restricted(server, bystander):
    raw = await _logged_in_raw(server)
    assert await _error_after(raw, b"<message><!-- hi --></message>") == "restricted-xml"
    raw = await _logged_in_raw(server)
    assert await _error_after(raw, b"<?evil stuff?>") == "restricted-xml"


async def test_oversized_stanza_is_a_policy_violation(server, bystander):
    raw = await _logged_in_raw(server)
    body = b"x" * (300 * 1024)
    assert await _error_after(
        raw, b"<message to='bob@localhost/bystander'><body>" + body + b"</body></message>"
    ) == "policy-violation"
    # refused while handled (the stream error above): a round trip to the
    # bystander proves nothing had been queued for it
    await round_trip(bystander)
    assert bystander.messages.empty(), "the oversized message must not be delivered"


async def test_stanza_just_under_the_limit_is_delivered(server, bystander):
    raw = await _logged_in_raw(server)
    body = "y" * (200 * 1024)
    raw.send(f"<message to='bob@localhost/bystander' type='chat'><body>{body}</body></message>")
    msg = await asyncio.wait_for(bystander.messages.get(), 10)
    assert msg["body"] == body
    await raw.close()


async def test_too_deep_element_is_a_policy_violation(server, bystander):
    raw = await _logged_in_raw(server)
    deep = b"<message to='bob@localhost'>" + b"<x xmlns='urn:deep'>" * 100
    assert await _error_after(raw, deep) == "policy-violation"


async def test_stanza_before_authentication_is_not_authorized(server, bystander):
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    assert await _error_after(
        raw, b"<message to='bob@localhost/bystander'><body>spam</body></message>"
    ) == "not-authorized"
    await round_trip(bystander)             # as above: the refusal came first
    assert bystander.messages.empty()


async def test_unknown_host_is_host_unknown(server, bystander):
    raw = await RawClient.connect(server.c2s_port)
    assert await _error_after(raw, header(to="elsewhere.example")) == "host-unknown"


async def test_wrong_namespace_is_invalid_namespace(server, bystander):
    raw = await RawClient.connect(server.c2s_port)
    assert await _error_after(raw, header(ns="jabber:server")) == "invalid-namespace"


async def test_spoofed_from_is_invalid_from(server, bystander):
    raw = await _logged_in_raw(server)
    assert await _error_after(
        raw, b"<message from='bob@localhost/bystander' to='bob@localhost/bystander'>"
             b"<body>forged</body></message>") == "invalid-from"
    await round_trip(bystander)             # as above: the refusal came first
    assert bystander.messages.empty()


async def test_malformed_jid_gets_jid_malformed(server, bystander):
    raw = await _logged_in_raw(server)
    raw.send(b"<iq type='get' id='j1' to='a@b@c'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = await raw.expect("iq")
    assert reply.get("type") == "error" and reply.get("id") == "j1"
    assert reply.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}jid-malformed") is not None
    await raw.close()


async def test_unknown_iq_gets_service_unavailable_and_bad_iq_bad_request(server, bystander):
    raw = await _logged_in_raw(server)
    raw.send(b"<iq type='get' id='u1' to='localhost'><nope xmlns='urn:unknown'/></iq>")
    reply = await raw.expect("iq")
    assert reply.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    raw.send(b"<iq type='ask' id='u2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = await raw.expect("iq")
    assert reply.get("id") == "u2"
    assert reply.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    raw.send(b"<iq type='get' id='u3' to='localhost'/>")
    reply = await raw.expect("iq")
    assert reply.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    await raw.close()


async def test_garbage_bytes_and_abrupt_disconnects_do_not_hurt(server, bystander):
    for payload in (b"\x00\xff\xfe garbage", b"GET / HTTP/1.1\r\n\r\n", header()[:30]):
        raw = await RawClient.connect(server.c2s_port)
        raw.send(payload)
        await raw.close()                      # hang up mid-negotiation
    raw = await RawClient.connect(server.c2s_port)
    raw.send(b"\x16\x03\x01\x00\xa5\x01")        # a TLS ClientHello on the STARTTLS port
    await raw.stream_error()


async def test_stanza_before_the_bad_bytes_in_the_same_packet_is_still_delivered(server, bystander):
    raw = await _logged_in_raw(server)
    condition = await _error_after(
        raw, b"<message to='bob@localhost/bystander'><body>before</body></message>"
             b"<message><body>a & b</body></message>")
    assert condition == "not-well-formed"
    msg = await asyncio.wait_for(bystander.messages.get(), 5)
    assert msg["body"] == "before"


async def test_bare_ampersand_ends_the_stream_instead_of_hanging_it(server, bystander):
    raw = await _logged_in_raw(server)
    assert await _error_after(raw, b"<message to='bob@localhost'><body>fish & chips</body>"
                                   b"</message>") == "not-well-formed"


async def test_a_client_that_stops_reading_is_cut_off(make_server):
    srv = make_server(c2s={"max_output_buffer": 256 * 1024})
    srv.adduser("sink@localhost", "pw")
    srv.adduser("flood@localhost", "pw")
    sink = await RawClient.connect(srv.c2s_port)
    await sink.login_plain(srv.cert(), "sink", "pw", resource="deaf")
    # from here on the sink never reads again
    flood = await login(srv, "flood@localhost/f", "pw")
    body = "z" * (100 * 1024)
    for _ in range(120):                                   # ~12 MB for a deaf reader
        flood.send_message(mto="sink@localhost/deaf", mbody=body, mtype="chat")
        await asyncio.sleep(0)      # a yield, no time: lets the loop write what was sent
    # the cut-off shows nowhere we could read it without reading (the sink is
    # deaf by design): its log line does
    try:
        await asyncio.to_thread(srv.wait_for_log, "the peer is not reading", 30)
    except AssertionError:
        raise AssertionError("the deaf client was never cut off") from None
    assert srv.alive()
    assert await flood.ping_server() >= 0                  # the sender keeps being served
    await flood.close()
    await sink.close()
