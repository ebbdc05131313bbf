"""XEP-0198 Stream Management on client streams: the negotiation and the
counters byte by byte (raw sockets), resumption and "nothing lost" with real
clients whose connection a proxy cuts mid-conversation (tests/proxy.py)."""

import asyncio
import base64

import pytest
from lxml import etree

from tests import harness
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import SASL, Client, RawClient, XferdProcess, ask, login, nothing_more
from tests.proxy import Proxy

SM = "urn:xmpp:sm:3"
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"
BIND = "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" \
       "<resource>{}</resource></bind></iq>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: SM with the default resumption time; it
    asks for an ack after 3 stanzas, holds at most 20 unacknowledged and one
    session per account waiting to be resumed."""
    proc = XferdProcess(tmp_path_factory.mktemp("xferd"),
                        overrides={"stream_management": {"ack_request_after": 3,
                                                         "max_unacked": 20,
                                                         "max_hibernating": 1}})
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
    await asyncio.to_thread(server.wait_for_log, f"{user}@localhost/phone>: connection lost")
    bob.send_message(mto=f"{user}@localhost/phone", mbody="while you were away")
    await bob.ping_server()
    again, _ = await authenticated(server, user)
    # what follows <resume/> in the same packet is read by the resumed session
    again.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='1'/><r xmlns='{SM}'/>")
    resumed = await again.expect("resumed")
    assert resumed.get("previd") == sm_id and resumed.get("h") == "2"
    bodies = [(await again.expect("message")).findtext("{jabber:client}body")
              for _ in range(2)]
    assert bodies == ["while you were here", "while you were away"]
    assert (await again.expect("a")).get("h") == "2"
    # the session goes on: same resource, still available
    again.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await again.expect("iq")).get("id") == "after"
    await bob.close()
    await again.close()
    await proxy.close()


async def test_resuming_a_connected_session_takes_it_over(server):
    user = new_user(server)
    first = await bound(server, user, "tablet")
    first.send(f"<enable xmlns='{SM}' resume='true'/>")
    sm_id = (await first.expect("enabled")).get("id")
    second, _ = await authenticated(server, user)
    second.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert (await second.expect("resumed")).get("h") == "0"
    assert await first.stream_error() == "conflict"         # §5
    second.send(f"<message to='{user}@localhost/tablet' id='self'><body>me</body></message>")
    assert (await second.expect("message")).get("id") == "self"   # the resource is ours
    await first.close()
    await second.close()


async def test_a_resume_that_acknowledges_too_much_ends_the_session(server):
    user = new_user(server)
    first = await bound(server, user, "watch")
    first.send(f"<enable xmlns='{SM}' resume='true'/>")
    sm_id = (await first.expect("enabled")).get("id")
    second, _ = await authenticated(server, user)
    second.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='5'/>")      # we sent nothing
    error = await second.expect("error")
    assert condition(error) == "undefined-condition"
    assert error.find(f"{{{SM}}}handled-count-too-high").get("send-count") == "0"
    third, _ = await authenticated(server, user)
    third.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    assert condition(await third.expect("failed")) == "item-not-found"   # it is over
    for raw in (first, second, third):
        await raw.close()


async def test_an_account_keeps_only_so_many_sessions_waiting(server):
    """max_hibernating = 1 here: the second cut session of an account ends
    the one that waited longer."""
    user = new_user(server, "jo")
    proxies, raws, ids = [], [], []
    for resource in ("one", "two"):
        proxies.append(await Proxy.start(server.c2s_port))
        raws.append(await bound(server, user, resource, port=proxies[-1].port))
        raws[-1].send(f"<enable xmlns='{SM}' resume='true'/>")
        ids.append((await raws[-1].expect("enabled")).get("id"))
    proxies[0].cut()
    await asyncio.to_thread(server.wait_for_log, f"{user}@localhost/one>: connection lost")
    proxies[1].cut()
    await asyncio.to_thread(server.wait_for_log, f"{user}@localhost/one>: closed (too many")
    late, _ = await authenticated(server, user)
    late.send(f"<resume xmlns='{SM}' previd='{ids[0]}' h='0'/>")
    assert condition(await late.expect("failed")) == "item-not-found"
    late.send(f"<resume xmlns='{SM}' previd='{ids[1]}' h='0'/>")
    assert (await late.expect("resumed")).get("previd") == ids[1]
    await late.close()
    for proxy in proxies:
        await proxy.close()


# -- real clients, cut mid-conversation ------------------------------------------------------------

async def befriend(a, a_jid, b, b_jid):
    """Mutual presence subscription between two logged-in clients."""
    for asker, asker_jid, other, other_jid in ((a, a_jid, b, b_jid), (b, b_jid, a, a_jid)):
        asker.send_presence(pto=other_jid, ptype="subscribe")
        await asker.ping_server()
        other.send_presence(pto=asker_jid, ptype="subscribed")
        await other.ping_server()


async def next_body(client, timeout=10) -> str:
    return (await asyncio.wait_for(client.messages.get(), timeout))["body"]


async def test_a_resumed_session_gets_what_was_sent_while_it_was_gone(server):
    """slixmpp with XEP-0198: the connection is cut; messages and a contact's
    presence change sent meanwhile arrive once it resumes (a message with the
    time it was first sent), nothing twice, and the session is the same
    (presence, roster interest)."""
    user, friend = new_user(server, "ann"), new_user(server, "ben")
    u_jid, f_jid = f"{user}@localhost", f"{friend}@localhost"
    proxy = await Proxy.start(server.c2s_port)
    ann = await login_sm(server, f"{u_jid}/phone", proxy.port)
    ben = await login(server, f"{f_jid}/desk", "pw")
    await befriend(ann, u_jid, ben, f_jid)
    ben.send_presence(pstatus="here")
    ann.send_presence(pstatus="on the road")
    await ann.next_presence(type=None, sender=f_jid)
    await ben.next_presence(type=None, sender=u_jid)
    await ann.fetch_roster()                    # an interested resource (RFC 6121 §2.1.6)
    ben.send_message(mto=u_jid, mbody="one", mtype="chat")
    assert await next_body(ann) == "one"
    while not ann.roster_pushes.empty():
        ann.roster_pushes.get_nowait()

    proxy.cut()
    await asyncio.wait_for(asyncio.shield(ann.gone), 10)
    # nothing on the wire tells when the server noticed: its log does
    await asyncio.to_thread(server.wait_for_log, f"{u_jid}/phone>: connection lost")
    ben.send_message(mto=u_jid, mbody="two", mtype="chat")
    ben.send_presence(pshow="away", pstatus="lunch")
    ben.send_message(mto=f"{u_jid}/phone", mbody="three", mtype="chat")
    await ben.ping_server()
    # ben still sees ann as available: the session is kept, not ended
    assert not any(p["type"] == "unavailable" for p in await ben.quiet())

    resumed = asyncio.ensure_future(ann.wait_until("session_resumed", 10))
    ann.connect("127.0.0.1", proxy.port)
    await resumed
    two = await asyncio.wait_for(ann.messages.get(), 10)
    assert two["body"] == "two"
    # stamped with the time it was first sent, not when it came again
    [delay] = two.xml.findall("{urn:xmpp:delay}delay")
    assert delay.get("from") == "localhost" and delay.get("stamp").endswith("Z")
    update = await ann.next_presence(sender=f_jid)
    assert update["show"] == "away" and update["status"] == "lunch"
    assert await next_body(ann) == "three"
    await nothing_more(ann, via=ben)            # "one" did not come again
    # roster interest kept: a roster change reaches the resumed session
    ben.send_presence(pto=u_jid, ptype="unsubscribe")
    push = await asyncio.wait_for(ann.roster_pushes.get(), 10)
    assert f_jid in str(push)
    await ben.close()
    await ann.close()
    await proxy.close()


async def login_sm(server, jid, port, *, client=None):
    """A slixmpp client (*client*, else a new one) with XEP-0198 and
    resumption, logged in through *port*."""
    client = client or Client(jid, "pw")
    harness._clients.add(client)                # hung up after the test if it fails
    client.register_plugin("xep_0198")
    client.ca_certs = server.cert()
    client.enable_plaintext = False
    client.enable_direct_tls = False
    enabled = asyncio.ensure_future(client.wait_until("sm_enabled", 10))
    client.connect("127.0.0.1", port)
    assert await asyncio.wait_for(client.started, 10) == "session"
    await enabled
    return client


class CapsClient(Client):
    """Announces XEP-0115 caps asking for NODE+notify of each of *notify*
    (and answers the server's disco#info for them); ``events``: the PEP
    notifications it gets."""

    def __init__(self, jid, password, notify):
        super().__init__(jid, password)
        for plugin in ("xep_0030", "xep_0115", "xep_0163"):
            self.register_plugin(plugin)
        self.notify = notify
        self.events = asyncio.Queue()
        self.register_handler(Callback(
            "pep events", MatchXPath(f"{{{self.default_ns}}}message/{{{EVENT}}}event"),
            self.events.put_nowait))


def publish(node, item):
    return (f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'>"
            f"<note xmlns='urn:example:note'>{item}</note></item></publish></pubsub>")


def event_item(message):
    items = message.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
    return items.get("node"), items.find(f"{{{EVENT}}}item").get("id")


async def test_pep_interest_survives_resumption(server):
    """A PEP notification for the interest the client announced before the
    cut (its caps) reaches it after the resumption: the server did not forget
    what the session asked for."""
    user = new_user(server, "ivy")
    u_jid = f"{user}@localhost"
    proxy = await Proxy.start(server.c2s_port)
    desk = await login(server, f"{u_jid}/desk", "pw")
    assert (await ask(desk, "set", publish("urn:example:sm-sign", "s")))[0] is None
    phone = CapsClient(f"{u_jid}/phone", "pw", ["urn:example:sm-sign", "urn:example:sm-news"])
    await login_sm(server, phone.boundjid.full, proxy.port, client=phone)
    phone.plugin["xep_0163"].add_interest(phone.notify)
    await phone.plugin["xep_0115"].update_caps(broadcast=False)
    phone.send_presence()
    # its caps are known once the last item of a node it asks for arrives
    assert event_item(await asyncio.wait_for(phone.events.get(), 10)) == \
        ("urn:example:sm-sign", "s")
    proxy.cut()
    await asyncio.wait_for(asyncio.shield(phone.gone), 10)
    await asyncio.to_thread(server.wait_for_log, f"{u_jid}/phone>: connection lost")
    assert (await ask(desk, "set", publish("urn:example:sm-news", "n1")))[0] is None
    resumed = asyncio.ensure_future(phone.wait_until("session_resumed", 10))
    phone.connect("127.0.0.1", proxy.port)
    await resumed
    assert event_item(await asyncio.wait_for(phone.events.get(), 10)) == \
        ("urn:example:sm-news", "n1")
    await desk.close()
    await phone.close()
    await proxy.close()


async def test_without_resumption_unacknowledged_messages_go_to_another_resource(server):
    """The session had SM without resumption; its connection is cut with
    messages it never acknowledged: the user's other resource gets those worth
    keeping (not the chat state, not the <no-store/> one), with the time they
    were first sent; the <no-store/> one and an unanswered request come back
    to their sender as <recipient-unavailable/>."""
    user = new_user(server, "cat")
    u_jid = f"{user}@localhost"
    proxy = await Proxy.start(server.c2s_port)
    desk = await login(server, f"{u_jid}/desk", "pw")
    desk.send_presence(ppriority=0)
    phone = await bound(server, user, "phone", port=proxy.port)
    phone.send(f"<enable xmlns='{SM}'/><presence><priority>5</priority></presence>")
    await phone.expect("enabled")
    bob = await login(server, "bob@localhost/m", "bob-pass")
    bob.send_message(mto=u_jid, mbody="first", mtype="chat")
    bob.send_raw(
        f"<message to='{u_jid}' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    bob.send_message(mto=u_jid, mbody="second", mtype="chat")
    bob.send_raw(f"<message to='{u_jid}' type='chat' id='secret'><body>off the record</body>"
                 "<no-store xmlns='urn:xmpp:hints'/></message>")
    ping = asyncio.ensure_future(bob.plugin["xep_0199"].ping(f"{u_jid}/phone", timeout=10))
    for _ in range(4):
        await phone.expect("message")                # all went to the higher priority
    await phone.expect("iq")                         # received, never answered
    proxy.cut()
    assert await next_body(desk) == "first"
    second = await asyncio.wait_for(desk.messages.get(), 10)
    assert second["body"] == "second"
    delay = second.xml.find("{urn:xmpp:delay}delay")
    assert delay.get("from") == "localhost" and delay.get("stamp")
    await nothing_more(desk, presences=False)        # nor the chat state, nor <no-store/>
    with pytest.raises(IqError) as info:
        await ping
    assert info.value.iq["error"]["condition"] == "recipient-unavailable"
    bounced = await asyncio.wait_for(bob.messages.get(), 10)    # its sender is told
    assert (bounced["type"], bounced["id"]) == ("error", "secret")
    assert bounced["error"]["condition"] == "recipient-unavailable"
    await bob.close()
    await desk.close()
    await proxy.close()


async def test_a_clean_close_with_unacknowledged_messages_keeps_them(server):
    """</stream:stream> ends the session at once (no hibernation, even when
    resumable); what the client had not acknowledged is kept offline."""
    user = new_user(server, "hal")
    u_jid = f"{user}@localhost"
    raw = await bound(server, user, "pc")
    raw.send(f"<enable xmlns='{SM}' resume='true'/><presence/>")
    await raw.expect("enabled")
    bob = await login(server, "bob@localhost/q", "bob-pass")
    bob.send_message(mto=u_jid, mbody="read, acknowledged", mtype="chat")
    await raw.expect("message")
    raw.send(f"<a xmlns='{SM}' h='2'/>")               # our presence echo and that message
    bob.send_message(mto=u_jid, mbody="read, not acknowledged", mtype="chat")
    await raw.expect("message")
    raw.send("</stream:stream>")
    assert await raw.wait_closed()
    # a sender cannot pass off a time of its own as the server's
    bob.send_raw(f"<message to='{u_jid}' type='chat'><body>forged time</body>"
                 "<delay xmlns='urn:xmpp:delay' from='localhost' stamp='2001-01-01T00:00:00Z'/>"
                 "</message>")
    await bob.ping_server()
    later = await login(server, f"{u_jid}/next", "pw")
    later.send_presence()
    got = {}
    for _ in range(2):
        message = await asyncio.wait_for(later.messages.get(), 10)
        got[message["body"]] = message.xml.findall("{urn:xmpp:delay}delay")
    assert set(got) == {"read, not acknowledged", "forged time"}
    assert len(got["read, not acknowledged"]) == 1      # stamped once, by us
    [delay] = got["forged time"]
    assert delay.get("from") == "localhost" and not delay.get("stamp").startswith("2001")
    await nothing_more(later, presences=False)
    await bob.close()
    await later.close()


async def test_a_session_not_resumed_in_time_leaves_its_messages_offline(server):
    user = new_user(server, "dan")
    u_jid = f"{user}@localhost"
    proxy = await Proxy.start(server.c2s_port)
    phone = await bound(server, user, "phone", port=proxy.port)
    phone.send(f"<enable xmlns='{SM}' resume='true' max='1'/><presence/>")
    enabled = await phone.expect("enabled")
    assert enabled.get("max") == "1"
    sm_id = enabled.get("id")
    bob = await login(server, "bob@localhost/n", "bob-pass")
    bob.send_message(mto=u_jid, mbody="kept for later", mtype="chat")
    bob.send_raw(f"<message to='{u_jid}' type='chat'>"
                 "<paused xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await phone.expect("message")
    await phone.expect("message")
    proxy.cut()
    # nothing on the wire shows the hibernation ending: the log does
    await asyncio.to_thread(server.wait_for_log, f"{u_jid}/phone>: closed (not resumed in time)")
    late, _ = await authenticated(server, user)
    late.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='2'/>")
    failed = await late.expect("failed")            # §5: too late, with the count we had
    assert condition(failed) == "item-not-found" and failed.get("h") == "1"
    await late.close()
    later = await login(server, f"{u_jid}/laptop", "pw")
    later.send_presence()
    got = await asyncio.wait_for(later.messages.get(), 10)
    assert got["body"] == "kept for later"
    await nothing_more(later, presences=False)
    await bob.close()
    await later.close()
    await proxy.close()


async def test_a_client_that_never_acknowledges_is_cut_off_and_loses_nothing(server):
    """max_unacked = 20 here: the 21st unacknowledged stanza ends the stream
    with <resource-constraint/>; every message is in offline storage after."""
    user = new_user(server, "eve")
    u_jid = f"{user}@localhost"
    raw = await bound(server, user, "mute")
    raw.send(f"<enable xmlns='{SM}' resume='true'/>")
    await raw.expect("enabled")
    bob = await login(server, "bob@localhost/o", "bob-pass")
    for i in range(25):
        bob.send_message(mto=f"{u_jid}/mute", mbody=f"m{i}", mtype="chat")
    assert await raw.stream_error() == "resource-constraint"
    await bob.ping_server()
    later = await login(server, f"{u_jid}/again", "pw")
    later.send_presence()
    bodies = [await next_body(later) for _ in range(25)]
    assert sorted(bodies) == sorted(f"m{i}" for i in range(25))
    await nothing_more(later, presences=False)
    await raw.close()
    await bob.close()
    await later.close()


async def test_a_restart_keeps_the_messages_of_a_hibernating_session(make_server):
    """The server stops while a session waits to be resumed: its unacknowledged
    message goes to offline storage first, and is there after the restart."""
    srv = make_server()
    srv.adduser("fay@localhost", "pw")
    srv.adduser("gil@localhost", "pw")
    proxy = await Proxy.start(srv.c2s_port)
    phone = await bound(srv, "fay", "phone", port=proxy.port)
    phone.send(f"<enable xmlns='{SM}' resume='true'/><presence/>")
    await phone.expect("enabled")
    gil = await login(srv, "gil@localhost/x", "pw")
    gil.send_message(mto="fay@localhost", mbody="do not lose me", mtype="chat")
    await phone.expect("message")
    await gil.close()
    proxy.cut()
    await asyncio.to_thread(srv.wait_for_log, "fay@localhost/phone>: connection lost")
    srv.stop()
    srv.start()
    fay = await login(srv, "fay@localhost/desk", "pw")
    fay.send_presence()
    assert await next_body(fay) == "do not lose me"
    await fay.close()
    await proxy.close()


class ArchiveClient(Client):
    """A client with message carbons and a MAM reader (slixmpp's plugins)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for plugin in ("xep_0030", "xep_0059", "xep_0297", "xep_0280", "xep_0313"):
            self.register_plugin(plugin)
        #: the carbons slixmpp's plugin took (it does not report them as messages)
        self.carbons: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("carbon_received", lambda m: self.carbons.put_nowait(m.xml))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(m.xml))


def stanza_id(xml, by: str) -> str | None:
    found = [e.get("id") for e in xml.iter("{urn:xmpp:sid:0}stanza-id") if e.get("by") == by]
    return found[0] if found else None


async def test_a_rerouted_message_is_archived_and_copied_once(server):
    """Archive and carbons see a message once: the other resources got a
    received carbon of it when it reached the phone; after the phone's cut the
    desk gets the message itself, with the same stanza-id, and the tablet
    (negative priority: never a bare-JID receiver) no second carbon; the
    user's archive holds it once, under that id."""
    user = new_user(server, "ida")
    u_jid = f"{user}@localhost"
    proxy = await Proxy.start(server.c2s_port)
    desk = await login(server, f"{u_jid}/desk", "pw", client_cls=ArchiveClient)
    desk.send_presence(ppriority=0)
    await desk.plugin["xep_0280"].enable(timeout=10)
    tablet = await login(server, f"{u_jid}/tablet", "pw", client_cls=ArchiveClient)
    tablet.send_presence(ppriority=-1)
    await tablet.plugin["xep_0280"].enable(timeout=10)
    phone = await bound(server, user, "phone", port=proxy.port)
    phone.send(f"<enable xmlns='{SM}'/><presence><priority>5</priority></presence>")
    await phone.expect("enabled")
    bob = await login(server, "bob@localhost/r", "bob-pass")
    await harness.round_trip(desk)                    # the phone's presence reached desk
    while not desk.presences.empty():
        desk.presences.get_nowait()
    bob.send_message(mto=u_jid, mbody="only once", mtype="chat")
    original = await phone.expect("message")
    carbon = await asyncio.wait_for(desk.carbons.get(), 10)
    assert carbon.find("{urn:xmpp:carbons:2}received") is not None
    archive_id = stanza_id(original, u_jid)
    assert archive_id and stanza_id(carbon, u_jid) == archive_id
    assert stanza_id(await asyncio.wait_for(tablet.carbons.get(), 10), u_jid) == archive_id
    proxy.cut()
    rerouted = await asyncio.wait_for(desk.messages.get(), 10)
    assert rerouted["body"] == "only once"
    assert rerouted.xml.find("{urn:xmpp:carbons:2}received") is None
    assert stanza_id(rerouted.xml, u_jid) == archive_id
    await nothing_more(desk, presences=False)
    await nothing_more(tablet, presences=False)
    assert desk.carbons.empty() and tablet.carbons.empty()     # no second carbon
    found = [(m["mam_result"]["id"], m["mam_result"]["forwarded"]["stanza"]["body"])
             async for m in desk.plugin["xep_0313"].iterate(rsm={"max": 10})]
    assert found == [(archive_id, "only once")]
    await bob.close()
    await desk.close()
    await tablet.close()
    await proxy.close()
