"""XEP-0198 Stream Management on client streams: the negotiation and the
counters byte by byte (raw sockets), resumption and "nothing lost" with real
clients whose connection a proxy cuts mid-conversation (tests/proxy.py)."""

import asyncio
import base64

import pytest
from lxml import etree

from tests.harness import SASL, RawClient, XferdProcess, login, nothing_more
from tests.proxy import Proxy

SM = "urn:xmpp:sm:3"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BIND = "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" \
       "<resource>{}</resource></bind></iq>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: SM with the default resumption time, asks
    for an ack after 3 stanzas."""
    proc = XferdProcess(tmp_path_factory.mktemp("xferd"),
                        overrides={"stream_management": {"ack_request_after": 3,
                                                         "max_unacked": 20}})
    proc.adduser("alice@localhost", "alice-pass")
    proc.adduser("bob@localhost", "bob-pass")
    proc.start()
    yield proc
    proc.stop()


_numbers = iter(range(1, 1000))


def new_user(server, prefix="u") -> str:
    name = f"{prefix}{next(_numbers)}"
    server.adduser(f"{name}@localhost", "pw")
    return name


async def authenticated(server, user, *, port=None):
    """A raw client after STARTTLS and SASL PLAIN, at the features of the
    authenticated stream (returned too)."""
    raw = await RawClient.connect(port or server.c2s_port)
    await raw.secure(server.cert())
    token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    await raw.expect("success")
    return raw, await raw.open_stream()


async def bound(server, user, resource="raw", *, port=None):
    raw, _ = await authenticated(server, user, port=port)
    raw.send(BIND.format(resource))
    await raw.expect("iq")
    return raw


def condition(el) -> str:
    return etree.QName(el[0]).localname


# -- negotiation and counters, byte by byte -----------------------------------------------------

async def test_feature_offered_after_authentication_and_enable_only_after_bind(server):
    user = new_user(server)
    raw = await RawClient.connect(server.c2s_port)
    before = await raw.secure(server.cert())
    assert before.find(f"{{{SM}}}sm") is None
    raw.send(f"<enable xmlns='{SM}'/>")             # before authentication
    assert condition(await raw.expect("failed")) == "unexpected-request"
    await raw.close()

    raw, features = await authenticated(server, user)
    assert features.find(f"{{{SM}}}sm") is not None
    raw.send(f"<enable xmlns='{SM}' resume='true'/>")        # before bind (§3)
    failed = await raw.expect("failed")
    assert failed.tag == f"{{{SM}}}failed" and condition(failed) == "unexpected-request"
    raw.send(BIND.format("r"))                              # the stream goes on
    await raw.expect("iq")
    raw.send(f"<enable xmlns='{SM}' resume='true' max='100000'/>")
    enabled = await raw.expect("enabled")
    assert enabled.get("resume") == "true" and enabled.get("id")
    assert enabled.get("max") == "600"                      # capped by max_resume_timeout
    raw.send(f"<enable xmlns='{SM}'/>")                     # a second time: stream error
    assert await raw.stream_error() == "unsupported-stanza-type"
    await raw.close()


async def test_counters_acks_and_a_count_too_high(server):
    user = new_user(server)
    raw = await bound(server, user)
    raw.send(f"<enable xmlns='{SM}'/>")
    enabled = await raw.expect("enabled")
    assert enabled.get("resume") is None and enabled.get("id") is None
    raw.send(f"<r xmlns='{SM}'/>")
    assert (await raw.expect("a")).get("h") == "0"
    # two stanzas handled (an IQ answered, a message to ourselves) and a non-stanza
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
             f"<message to='{user}@localhost/raw' id='m1'><body>hi</body></message>"
             f"<r xmlns='{SM}'/>")
    await raw.expect("iq")
    await raw.expect("message")
    assert (await raw.expect("a")).get("h") == "2"
    # the server sent two stanzas: acknowledging them is fine, three is not
    raw.send(f"<a xmlns='{SM}' h='2'/><r xmlns='{SM}'/>")
    assert (await raw.expect("a")).get("h") == "2"
    raw.send(f"<a xmlns='{SM}' h='3'/>")
    error = await raw.expect("error")
    assert etree.QName(error[0]).localname == "undefined-condition"
    too_high = error.find(f"{{{SM}}}handled-count-too-high")
    assert too_high.get("h") == "3" and too_high.get("send-count") == "2"
    assert await raw.wait_closed()


async def test_server_asks_for_acks(server):
    user = new_user(server)
    raw = await bound(server, user)
    raw.send(f"<enable xmlns='{SM}'/>")
    await raw.expect("enabled")
    for i in range(3):                              # ack_request_after = 3
        raw.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    for i in range(3):
        assert (await raw.expect("iq")).get("id") == f"p{i}"
    request = await raw.expect("r")                 # right after the third answer
    assert request.tag == f"{{{SM}}}r"
    raw.send(f"<a xmlns='{SM}' h='3'/><r xmlns='{SM}'/>")
    assert (await raw.expect("a")).get("h") == "3"
    await raw.close()


async def test_unknown_or_foreign_session_cannot_be_resumed_and_bind_still_works(server):
    owner, stranger = new_user(server), new_user(server)
    raw = await bound(server, owner)
    raw.send(f"<enable xmlns='{SM}' resume='1'/>")
    sm_id = (await raw.expect("enabled")).get("id")
    other, _ = await authenticated(server, stranger)
    other.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")   # not the stranger's
    assert condition(await other.expect("failed")) == "item-not-found"
    other.send(f"<resume xmlns='{SM}' previd='no-such-id' h='0'/>")
    assert condition(await other.expect("failed")) == "item-not-found"
    other.send(BIND.format("after"))                # §5: the client may bind instead
    bound_to = await other.expect("iq")
    assert bound_to.get("type") == "result"
    other.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")    # bound: too late
    assert condition(await other.expect("failed")) == "unexpected-request"
    # the owner's session was not disturbed
    raw.send("<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await raw.expect("iq")).get("id") == "still"
    await raw.close()
    await other.close()


async def test_resume_a_cut_session_and_get_what_it_missed(server):
    """Raw: the unacknowledged message is sent again on the new connection,
    and <resumed h/> says how many of ours the server had handled."""
    user = new_user(server)
    proxy = await Proxy.start(server.c2s_port)
    raw = await bound(server, user, "phone", port=proxy.port)
    raw.send(f"<enable xmlns='{SM}' resume='true'/>")
    sm_id = (await raw.expect("enabled")).get("id")
    raw.send(f"<presence/><message to='bob@localhost' id='x'><body>1</body></message>")
    await raw.expect("presence")                   # our own presence, echoed: stanza 1
    bob = await login(server, "bob@localhost/desk", "bob-pass")
    bob.send_message(mto=f"{user}@localhost/phone", mbody="while you were here")
    assert (await raw.expect("message")).findtext("{jabber:client}body") == \
        "while you were here"                      # stanza 2, never acknowledged
    proxy.cut()
    bob.send_message(mto=f"{user}@localhost/phone", mbody="while you were away")
    await bob.ping_server()
    again, _ = await authenticated(server, user)
    again.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='1'/>")
    resumed = await again.expect("resumed")
    assert resumed.get("previd") == sm_id and resumed.get("h") == "2"
    bodies = [(await again.expect("message")).findtext("{jabber:client}body")
              for _ in range(2)]
    assert bodies == ["while you were here", "while you were away"]
    # the session goes on: same resource, still available
    again.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await again.expect("iq")).get("id") == "after"
    await bob.close()
    await again.close()
    await proxy.close()
