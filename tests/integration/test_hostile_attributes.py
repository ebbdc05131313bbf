"""An element with an absurd number of attributes is refused; nobody else waits for it.

A 250 KB message with 36,000 attributes on one element parsed in 30 ms but
cost 2–3.5 s of blocked event loop each time it was written out (to its
recipient, to offline storage, in a bounce): every other session waited.
Now the parser refuses any element with more than ``c2s.max_attributes``
(default 64) as it starts, with ``<policy-violation/>`` — RFC 6120
§4.9.3.14: "the entity has violated some local service policy" — and the
stream is closed (§4.9.1.1). A well-behaved client keeps round trips under a
second throughout.
"""

import asyncio
import itertools
import string
import time

import pytest

from tests.harness import STREAMS, RawClient, header, login

pytestmark = pytest.mark.hostile

LIMIT = 64


def attribute_names(n: int) -> list[str]:
    """*n* distinct three-letter names: 36,000 attributes make ~250 KB."""
    letters = string.ascii_letters
    return ["".join(t) for t in itertools.islice(itertools.product(letters, repeat=3), n)]


def attributes(n: int) -> str:
    return " ".join(f"{name}=''" for name in attribute_names(n))


@pytest.fixture
async def bystander(server):
    client = await login(server, "bob@localhost/bystander", "bob-pass")
    yield client
    assert server.alive(), server.log()[-3000:]
    assert await client.ping_server() < 1, "the well-behaved client lost service"
    await client.close()


async def _logged_in_raw(server, user="alice", password="alice-pass") -> RawClient:
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert(), user, password, resource="hostile")
    return raw


async def _timed_ping(client) -> float:
    start = time.monotonic()
    await client.ping_server(timeout=10)
    return time.monotonic() - start


async def _refused_while_pinging(raw, stanza: str, bystander) -> None:
    """Send *stanza*; the stream ends with <policy-violation/>, and the
    bystander's pings, sent while it is on its way, all come back within a second."""
    raw.send(stanza)
    error = asyncio.ensure_future(raw.stream_error(timeout=15))
    rtts = []
    while not error.done() and len(rtts) < 20:
        rtts.append(await _timed_ping(bystander))
    assert await error == "policy-violation"
    assert await raw.wait_closed(), "the server did not close the stream"
    rtts.append(await _timed_ping(bystander))
    assert max(rtts) < 1, f"round trips during the attack: {rtts}"
    assert bystander.messages.empty(), "the refused message was delivered"


async def test_36000_attributes_are_policy_violation_and_others_keep_service(server, bystander):
    """The message of the report, addressed to the bystander: refused as its
    element starts; the bystander's pings, sent while it is on its way, come
    back within a second (before: its delivery blocked the loop ~3 s)."""
    raw = await _logged_in_raw(server)
    stanza = (f"<message to='bob@localhost/bystander' type='chat' id='big'>"
              f"<body>hi</body><x xmlns='urn:x:attrs' {attributes(36000)}/></message>")
    assert 240_000 < len(stanza) < 256 * 1024
    await _refused_while_pinging(raw, stanza, bystander)


async def test_a_stream_header_with_too_many_attributes_is_refused_before_login(server,
                                                                                bystander):
    """The header is parsed before authentication: the limit holds there too."""
    raw = await RawClient.connect(server.c2s_port)
    raw.send(header().replace(b"to='localhost'", b"to='localhost' "
                              + attributes(LIMIT + 1).encode()))
    assert await raw.stream_error() == "policy-violation"
    assert await raw.wait_closed()


async def test_an_element_at_the_limit_is_delivered_whole(server, bystander):
    """64 attributes (five times what any XMPP element uses) still pass."""
    raw = await _logged_in_raw(server)
    names = attribute_names(LIMIT)
    raw.send(f"<message to='bob@localhost/bystander' type='chat' id='ok'><body>ok</body>"
             f"<x xmlns='urn:x:attrs' {' '.join(f'{n}={n!r}' for n in names)}/></message>")
    msg = await asyncio.wait_for(bystander.messages.get(), 10)
    assert msg["body"] == "ok"
    x = msg.xml.find("{urn:x:attrs}x")
    assert x is not None and dict(x.attrib) == {n: n for n in names}
    await raw.close()


async def test_the_configured_limit_is_honoured(make_server):
    """c2s.max_attributes (conf/xferd.toml) sets the limit."""
    server = make_server(c2s={"max_attributes": 4})
    server.adduser("alice@localhost", "alice-pass")
    raw = await _logged_in_raw(server)
    raw.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await raw.expect("iq")).get("type") == "result"
    raw.send("<message to='alice@localhost' a='' b='' c='' d='' e=''/>")
    assert await raw.stream_error() == "policy-violation"
    assert await raw.wait_closed()
    assert "more than 4 attributes" in server.log()


async def test_a_stanza_of_sixty_thousand_empty_elements_is_refused(server, bystander):
    """A 240 KB stanza of 60,000 ``<a/>`` — within max_stanza_size — cost
    0.6 s of blocked loop to read (taking it out of the stream root is
    quadratic in its elements). A stanza of more than ``c2s.max_elements``
    (8,192) elements now ends the stream with ``<policy-violation/>`` as the
    8,193rd starts, while the bystander's round trips stay short."""
    raw = await _logged_in_raw(server)
    stanza = (f"<message to='bob@localhost/bystander' id='many'>"
              f"{'<a/>' * 60000}</message>")
    await _refused_while_pinging(raw, stanza, bystander)


async def test_a_stanza_at_the_element_limit_is_delivered(server, bystander):
    """At the limit (8,192 elements: the message, the body, <many/> and 8,189
    children) the stanza is delivered whole."""
    raw = await _logged_in_raw(server)
    raw.send(f"<message to='bob@localhost/bystander' id='at-limit'><body>x</body>"
             f"<many xmlns='urn:x:many'>{'<a/>' * 8189}</many></message>")
    got = await asyncio.wait_for(bystander.messages.get(), 15)
    assert got["id"] == "at-limit"
    assert len(got.xml.find("{urn:x:many}many")) == 8189
    await raw.close()


async def test_a_server_peer_gets_the_same_limits_before_dialback(server, bystander):
    """s2s: the limits are the parser's, so a peer that has not even started
    dialback (XEP-0220 §2.1) is refused the same way — too many attributes on
    one element, then too many elements in one stanza — each with
    ``<policy-violation/>`` and the stream closed, while the bystander's
    round trips stay short."""
    opening = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
               f"xmlns:stream='{STREAMS}' xmlns:db='jabber:server:dialback' "
               f"to='localhost' from='evil.example' version='1.0'>")
    for stanza in (f"<db:result from='evil.example' to='localhost' {attributes(5000)}>"
                   f"k</db:result>",
                   f"<message from='a@evil.example' to='bob@localhost'>{'<a/>' * 9000}"
                   f"</message>"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.s2s_port)
        writer.write((opening + stanza).encode())
        received = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 10):
                received += chunk          # until the server hangs up
        finally:
            writer.close()
        assert b"<policy-violation" in received, received[-300:]
        assert received.rstrip().endswith(b"</stream:stream>"), received[-300:]
        assert await _timed_ping(bystander) < 1
