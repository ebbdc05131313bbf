"""Federation between two xferd processes (RFC 6120 s2s, XEP-0220 dialback):
subscriptions, presence and messages both ways; bounces for domains that
cannot be reached; a forged dialback key and a spoofed 'from' refused."""

import asyncio
import ssl

import pytest

from lxml import etree

from s2s.dialback import key as dialback_key
from server.io.tls import generate_self_signed
from tests.harness import (RawClient, RouteTo, XferdProcess, federate, listen_for, login,
                           round_trip, unused_port)

DB = "jabber:server:dialback"
STREAMS = "http://etherx.jabber.org/streams"


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """a.test and b.test, each its own xferd, with static routes to each other
    and to c.test, where nothing listens."""
    a = XferdProcess(tmp_path_factory.mktemp("a"), domains=("a.test",))
    b = XferdProcess(tmp_path_factory.mktemp("b"), domains=("b.test",))
    a.adduser("alice@a.test", "pw")
    b.adduser("bob@b.test", "pw")
    federate({"a.test": a, "b.test": b}, {"a.test": {"c.test": ("127.0.0.1", unused_port())}})
    b.evil_route = RouteTo(b, "evil.test")      # where FakeAuthority will answer
    yield a, b
    a.stop()
    b.stop()


async def wait_roster(client, jid, subscription, timeout=10):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        item = (await client.fetch_roster()).get(jid, {})
        if item.get("subscription") == subscription and "ask" not in item:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid}: {jid} is {item}, wanted {subscription}")
        await client.roster_pushed(deadline)        # a change comes with a push


async def test_subscribe_presence_and_messages_both_ways(two):
    a, b = two
    alice = await login(a, "alice@a.test/home", "pw")
    bob = await login(b, "bob@b.test/home", "pw")
    alice.send_presence()
    bob.send_presence()
    # alice asks, bob approves; bob asks, alice approves
    alice.send_presence(pto="bob@b.test", ptype="subscribe")
    await bob.next_presence(type="subscribe", sender="alice@a.test", timeout=15)
    bob.send_presence(pto="alice@a.test", ptype="subscribed")
    bob.send_presence(pto="alice@a.test", ptype="subscribe")
    await alice.next_presence(type="subscribe", sender="bob@b.test", timeout=15)
    alice.send_presence(pto="bob@b.test", ptype="subscribed")
    await wait_roster(alice, "bob@b.test", "both")
    await wait_roster(bob, "alice@a.test", "both")
    # presence follows the subscriptions across the domains
    bob.send_presence(pstatus="on b")
    seen = await alice.next_presence(type=None, sender="bob@b.test", timeout=10)
    assert str(seen["from"]) == "bob@b.test/home"
    # messages, both ways, to bare JIDs
    alice.send_message(mto="bob@b.test", mbody="hello from a", mtype="chat")
    msg = await asyncio.wait_for(bob.messages.get(), 10)
    assert msg["body"] == "hello from a" and str(msg["from"]) == "alice@a.test/home"
    bob.send_message(mto="alice@a.test", mbody="hello from b", mtype="chat")
    msg = await asyncio.wait_for(alice.messages.get(), 10)
    assert msg["body"] == "hello from b" and str(msg["from"]) == "bob@b.test/home"
    # an IQ round trip across: alice pings bob's server and bob's client
    assert await alice.plugin["xep_0199"].ping("b.test", timeout=10) >= 0
    assert await alice.plugin["xep_0199"].ping("bob@b.test/home", timeout=10) >= 0
    # both streams were authenticated by dialback
    assert "authenticated by dialback" in a.log() and "authenticated by dialback" in b.log()
    await alice.close()
    await bob.close()


async def test_one_pairs_stanzas_keep_their_order_while_pairs_share_a_stream(two):
    """b.test handles the stanzas of one s2s stream per pair of accounts, not
    one at a time (RFC 6120 §10.1 asks for order per pair). A subscription
    request (stored first) and the message right behind it (delivered at
    once) must still reach each contact in that order, while alice's
    messages to an offline dave share the stream and keep theirs."""
    a, b = two
    people = [f"erin{n}" for n in range(4)]
    for name in people + ["dave"]:
        b.adduser(f"{name}@b.test", "pw")
    alice = await login(a, "alice@a.test/order", "pw")
    seen: dict[str, list[str]] = {name: [] for name in people}
    arrived = asyncio.Event()
    clients = []
    for name in people:
        client = await login(b, f"{name}@b.test/order", "pw")
        client.add_event_handler("presence_subscribe",
                                 lambda p, log=seen[name]: (log.append("subscribe"),
                                                            arrived.set()))
        client.add_event_handler("message", lambda m, log=seen[name]: (log.append(m["body"]),
                                                                        arrived.set()))
        client.send_presence()
        clients.append(client)
    for n in range(50):
        alice.send_message(mto="dave@b.test", mbody=f"dave {n}", mtype="chat")
        if n < len(people):
            alice.send_presence(pto=f"{people[n]}@b.test", ptype="subscribe")
            alice.send_message(mto=f"{people[n]}@b.test", mbody="please accept", mtype="chat")
    deadline = asyncio.get_running_loop().time() + 15
    while any(len(log) < 2 for log in seen.values()):
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, seen
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), left)
        except asyncio.TimeoutError:
            pass
    assert seen == {name: ["subscribe", "please accept"] for name in people}
    dave = await login(b, "dave@b.test/later", "pw")
    dave.send_presence()                                    # offline messages come now
    got = [(await asyncio.wait_for(dave.messages.get(), 15))["body"] for _ in range(50)]
    assert got == [f"dave {n}" for n in range(50)]
    for client in [alice, dave, *clients]:
        await client.close()


async def test_both_sides_approving_at_once_ends_in_both(two):
    """Each asks the other, then both approve at the same moment: on each
    server one approval comes from the user's session and the other from the
    peer's stream, and both change the same roster item. Handled side by
    side, a read-then-write without Host.roster_items lost one of them."""
    a, b = two
    pairs = [(f"amy{n}@a.test", f"ben{n}@b.test") for n in range(12)]
    for amy, ben in pairs:
        a.adduser(amy, "pw")
        b.adduser(ben, "pw")
    amys = [await login(a, f"{amy}/x", "pw") for amy, _ in pairs]
    bens = [await login(b, f"{ben}/x", "pw") for _, ben in pairs]
    for client in amys + bens:
        client.send_presence()
    for (amy_jid, ben_jid), amy, ben in zip(pairs, amys, bens):
        amy.send_presence(pto=ben_jid, ptype="subscribe")
        ben.send_presence(pto=amy_jid, ptype="subscribe")
        await ben.next_presence(type="subscribe", sender=amy_jid, timeout=15)
        await amy.next_presence(type="subscribe", sender=ben_jid, timeout=15)
    for (amy_jid, ben_jid), amy, ben in zip(pairs, amys, bens):
        amy.send_presence(pto=ben_jid, ptype="subscribed")
        ben.send_presence(pto=amy_jid, ptype="subscribed")
    for (amy_jid, ben_jid), amy, ben in zip(pairs, amys, bens):
        await wait_roster(amy, ben_jid, "both")
        await wait_roster(ben, amy_jid, "both")
    for client in amys + bens:
        await client.close()


async def test_unreachable_domain_bounces_remote_server_not_found(two):
    a, _ = two
    alice = await login(a, "alice@a.test/bounce", "pw")
    errors = asyncio.Queue()
    alice.add_event_handler("message_error", errors.put_nowait)
    for n in range(3):                                       # queued ones bounce too
        alice.send_message(mto="carol@c.test", mbody=f"anyone? {n}", mtype="chat")
    for _ in range(3):
        error = await asyncio.wait_for(errors.get(), 15)
        assert error["error"]["condition"] == "remote-server-not-found"
        assert str(error["from"]) == "carol@c.test"
    await alice.close()


# -- a hand-made peer for the hostile cases --------------------------------------------------

class RawServerClient(RawClient):
    """An s2s initiating stream spoken by hand."""

    async def open_s2s(self, origin: str, to: str):
        self._new_stream()
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  f"xmlns:stream='{STREAMS}' xmlns:db='{DB}' from='{origin}' to='{to}' "
                  "version='1.0'>")
        return await self.expect("features")

    async def secure_s2s(self, origin: str, to: str):
        await self.open_s2s(origin, to)
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.expect("proceed")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await self.writer.start_tls(ctx, server_hostname=to)
        return await self.open_s2s(origin, to)


@pytest.mark.hostile
async def test_forged_dialback_key_is_refused(two):
    a, b = two
    raw = await RawServerClient.connect(b.s2s_port)
    features = await raw.secure_s2s("a.test", "b.test")
    assert features.find("{urn:xmpp:features:dialback}dialback") is not None
    stream_id = raw.root.get("id")
    forged = dialback_key("not the secret", "b.test", "a.test", stream_id)
    raw.send(f"<db:result from='a.test' to='b.test'>{forged}</db:result>")
    answer = await raw.expect("result", timeout=15)
    assert answer.get("type") == "invalid"
    assert await raw.stream_error() == "not-authorized"


@pytest.mark.hostile
async def test_stanzas_before_dialback_are_refused(two):
    _, b = two
    raw = await RawServerClient.connect(b.s2s_port)
    await raw.secure_s2s("a.test", "b.test")
    raw.send("<message from='alice@a.test/x' to='bob@b.test'><body>sneaky</body></message>")
    assert await raw.stream_error() == "not-authorized"


@pytest.mark.hostile
async def test_dialback_before_tls_is_refused(two):
    _, b = two
    raw = await RawServerClient.connect(b.s2s_port)
    features = await raw.open_s2s("a.test", "b.test")
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls/"
                         "{urn:ietf:params:xml:ns:xmpp-tls}required") is not None
    raw.send("<db:result from='a.test' to='b.test'>abc</db:result>")
    assert await raw.stream_error() == "policy-violation"


@pytest.mark.hostile
async def test_unknown_host_on_s2s(two):
    _, b = two
    raw = await RawServerClient.connect(b.s2s_port)
    raw.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
             f"xmlns:stream='{STREAMS}' xmlns:db='{DB}' from='a.test' to='nope.test' "
             "version='1.0'>")
    assert await raw.stream_error() == "host-unknown"


class FakeAuthority:
    """The authoritative server of evil.test, answering every <db:verify> with
    *verdict*: it lets a raw client pass dialback as evil.test.

    With *receiving*, it is also evil.test's receiving side: every
    ``<db:result/>`` the server sends to authenticate its own stream to
    evil.test is taken as valid (no check: a fake), and the stanzas that
    then come over it are put in ``stanzas`` — the replies evil.test gets."""

    def __init__(self, route: RouteTo, workdir, verdict: str = "valid", *,
                 receiving: bool = False):
        self.route, self.verdict, self.receiving = route, verdict, receiving
        self.stanzas: asyncio.Queue = asyncio.Queue()
        cert, key = workdir / "evil.crt", workdir / "evil.key"
        generate_self_signed("evil.test", cert, key)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.server = None

    async def __aenter__(self):
        self.server = await listen_for(self.route, self._serve)
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        header = (f"<stream:stream xmlns='jabber:server' xmlns:stream='{STREAMS}' "
                  f"xmlns:db='{DB}' from='evil.test' id='fake1' version='1.0'>")
        parser, depth, secure = etree.XMLPullParser(("start", "end")), 0, False
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                for event, el in parser.read_events():
                    depth += 1 if event == "start" else -1
                    if event == "start" and depth == 1:
                        features = ("<dialback xmlns='urn:xmpp:features:dialback'/>" if secure
                                    else "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                        writer.write(f"{header}<stream:features>{features}</stream:features>"
                                     .encode())
                    elif event == "end" and depth == 1:
                        name = etree.QName(el).localname
                        if name == "starttls":
                            writer.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                            await writer.start_tls(self.tls)
                            parser, depth, secure = etree.XMLPullParser(("start", "end")), 0, True
                            break
                        if name == "verify":
                            writer.write(f"<db:verify from='evil.test' to='{el.get('from')}' "
                                         f"id='{el.get('id')}' type='{self.verdict}'/>".encode())
                        elif self.receiving and name == "result" and el.get("type") is None:
                            writer.write(f"<db:result from='evil.test' to='{el.get('from')}' "
                                         "type='valid'/>".encode())
                        elif self.receiving and name in ("iq", "message", "presence"):
                            self.stanzas.put_nowait(el)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.mark.hostile
async def test_spoofed_from_domain_is_invalid_from_and_never_delivered(two, tmp_path):
    _, b = two
    bob = await login(b, "bob@b.test/spoof", "pw")
    bob.send_presence()
    async with FakeAuthority(b.evil_route, tmp_path, verdict="valid"):
        raw = await RawServerClient.connect(b.s2s_port)
        await raw.secure_s2s("evil.test", "b.test")
        raw.send("<db:result from='evil.test' to='b.test'>any-key</db:result>")
        answer = await raw.expect("result", timeout=15)
        assert answer.get("type") == "valid"            # evil.test is who it says it is
        # … and may speak for evil.test:
        raw.send("<message from='mallory@evil.test/x' to='bob@b.test' type='chat'>"
                 "<body>from evil</body></message>")
        msg = await asyncio.wait_for(bob.messages.get(), 10)
        assert str(msg["from"]) == "mallory@evil.test/x"
        # … but not for a.test
        raw.send("<message from='alice@a.test/x' to='bob@b.test' type='chat'>"
                 "<body>I am alice, honest</body></message>")
        assert await raw.stream_error() == "invalid-from"
    # b refused the stanza while handling it (the stream error): a round trip
    # to bob proves nothing had been queued for him before
    await round_trip(bob)
    assert bob.messages.empty(), "the spoofed message must not reach bob"
    await bob.close()


@pytest.mark.hostile
async def test_authority_saying_invalid_ends_the_stream(two, tmp_path):
    _, b = two
    async with FakeAuthority(b.evil_route, tmp_path, verdict="invalid"):
        raw = await RawServerClient.connect(b.s2s_port)
        await raw.secure_s2s("evil.test", "b.test")
        raw.send("<db:result from='evil.test' to='b.test'>any-key</db:result>")
        assert (await raw.expect("result", timeout=15)).get("type") == "invalid"
        assert await raw.stream_error() == "not-authorized"


@pytest.mark.hostile
async def test_silent_inbound_stream_times_out(make_server):
    srv = make_server(s2s={"negotiation_timeout": 1})
    raw = await RawServerClient.connect(srv.s2s_port)
    await raw.open_s2s("a.test", "localhost")
    assert await raw.stream_error(timeout=5) == "connection-timeout"
