"""Log in as a user would: STARTTLS or direct TLS, SASL, bind (RFC 6120 §5–7)."""

import asyncio

import pytest
import slixmpp

from tests.harness import SASL, RawClient, login


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_login_with_each_mechanism_over_starttls(server, mechanism):
    client = await login(server, "alice@localhost/desk", "alice-pass", mechanism=mechanism)
    assert str(client.boundjid) == "alice@localhost/desk"
    assert await client.ping_server() >= 0
    await client.close()


async def test_direct_tls_login(server):
    client = await login(server, "bob@localhost/tls", "bob-pass", direct_tls=True)
    assert str(client.boundjid) == "bob@localhost/tls"
    assert await client.ping_server() >= 0
    await client.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_wrong_password_is_not_authorized(server, mechanism):
    client = await login(server, "alice@localhost/x", "wrong", mechanism=mechanism,
                         expect="failed_auth")
    assert client.auth_failures[0] == "not-authorized"
    await client.close()


async def test_unknown_user_is_not_authorized(server):
    client = await login(server, "nobody@localhost/x", "whatever", expect="failed_auth")
    assert client.auth_failures[0] == "not-authorized"
    await client.close()


async def test_features_before_tls_offer_only_starttls(server):
    raw = await RawClient.connect(server.c2s_port)
    features = await raw.open_stream()
    children = [child.tag for child in features]
    assert children == ["{urn:ietf:params:xml:ns:xmpp-tls}starttls"]
    assert features[0].find("{urn:ietf:params:xml:ns:xmpp-tls}required") is not None
    await raw.close()


async def test_plain_before_tls_is_refused(server):
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXBhc3M=</auth>")
    failure = await raw.expect("failure")
    assert failure[0].tag == f"{{{SASL}}}encryption-required"
    await raw.close()


async def test_plain_is_not_offered_without_tls_even_when_tls_is_optional(make_server):
    srv = make_server(c2s={"require_encryption": False})
    srv.adduser("carol@localhost", "carol-pass")
    raw = await RawClient.connect(srv.c2s_port)
    features = await raw.open_stream()
    mechanisms = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGNhcm9sAGNhcm9sLXBhc3M=</auth>")
    failure = await raw.expect("failure")
    assert failure[0].tag == f"{{{SASL}}}encryption-required"
    await raw.close()


async def test_mechanisms_after_tls(server):
    raw = await RawClient.connect(server.c2s_port)
    features = await raw.secure(server.cert())
    mechanisms = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert features.find("{http://jabber.org/features/iq-register}register") is not None
    await raw.close()


async def test_second_bind_of_same_resource_kicks_the_first_with_conflict(server):
    first = await login(server, "alice@localhost/same", "alice-pass")
    second = await login(server, "alice@localhost/same", "alice-pass")
    await asyncio.wait_for(first.gone, 10)
    assert first.stream_errors == ["conflict"]
    assert str(second.boundjid) == "alice@localhost/same"
    assert await second.ping_server() >= 0
    await second.close()


async def test_server_generated_resource(server):
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXBhc3M=</auth>")
    await raw.expect("success")
    features = await raw.open_stream()
    assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    iq = await raw.expect("iq")
    jid = iq.findtext("{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid")
    assert iq.get("type") == "result" and jid.startswith("alice@localhost/") and len(jid) > 16
    # the legacy session element is accepted as a no-op
    raw.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert (await raw.expect("iq")).get("type") == "result"
    await raw.close()


async def test_messages_between_two_sessions(server):
    alice = await login(server, "alice@localhost/m", "alice-pass")
    bob = await login(server, "bob@localhost/m", "bob-pass")
    alice.send_message(mto="bob@localhost/m", mbody="hello bob", mtype="chat")
    msg = await asyncio.wait_for(bob.messages.get(), 5)
    assert msg["body"] == "hello bob" and str(msg["from"]) == "alice@localhost/m"
    await alice.close()
    await bob.close()


async def _at_auth(server) -> RawClient:
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    return raw


@pytest.mark.parametrize("auth, condition", [
    (f"<auth xmlns='{SASL}' mechanism='DIGEST-MD5'/>", "invalid-mechanism"),
    (f"<auth xmlns='{SASL}' mechanism='PLAIN'>!!not base64!!</auth>", "incorrect-encoding"),
    (f"<auth xmlns='{SASL}' mechanism='PLAIN'>bm8gbnVscyBoZXJl</auth>", "malformed-request"),
    (f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>cCxuPWEscj1i</auth>", "malformed-request"),
    (f"<auth xmlns='{SASL}' mechanism='PLAIN'>Ym9iQGxvY2FsaG9zdABhbGljZQBhbGljZS1wYXNz</auth>",
     "invalid-authzid"),
])
async def test_sasl_failure_conditions(server, auth, condition):
    raw = await _at_auth(server)
    raw.send(auth)
    failure = await raw.expect("failure")
    assert failure[0].tag == f"{{{SASL}}}{condition}"
    # RFC 6120 §6.4.5: the client may try again on the same stream
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXBhc3M=</auth>")
    await raw.expect("success")
    await raw.close()


async def test_scram_without_initial_response_and_abort(server):
    raw = await _at_auth(server)
    raw.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'/>")
    challenge = await raw.expect("challenge")
    assert (challenge.text or "=") == "="
    raw.send(f"<abort xmlns='{SASL}'/>")
    failure = await raw.expect("failure")
    assert failure[0].tag == f"{{{SASL}}}aborted"
    await raw.close()


async def test_each_domain_presents_its_own_certificate(make_server):
    srv = make_server(domains=("localhost", "example.test"))
    srv.adduser("ann@example.test", "ann-pass")
    srv.adduser("ann@localhost", "ann-local")
    # slixmpp checks the certificate against the JID's domain (SNI picks it)
    ann = await login(srv, "ann@example.test/a", "ann-pass")
    assert str(ann.boundjid) == "ann@example.test/a"
    local = await login(srv, "ann@localhost/a", "ann-local", direct_tls=True)
    await ann.close()
    await local.close()
    # same username, different domains: different accounts
    await (await login(srv, "ann@example.test/b", "ann-local", expect="failed_auth")).close()


async def test_a_closed_session_is_gone_from_routing(server):
    alice = await login(server, "alice@localhost/t", "alice-pass")
    bob = await login(server, "bob@localhost/t", "bob-pass")
    assert await alice.plugin["xep_0199"].ping("bob@localhost/t", timeout=5) >= 0
    await bob.close()
    # the session leaving routing shows nowhere on the wire: its log line does
    server.wait_for_log("bob@localhost/t>: closed")
    # RFC 6121 §8.5.3.2.2: an IQ to a resource that is not connected
    with pytest.raises(slixmpp.exceptions.IqError) as info:
        await alice.plugin["xep_0199"].ping("bob@localhost/t", timeout=5)
    assert info.value.iq["error"]["condition"] == "service-unavailable"
    await alice.close()
