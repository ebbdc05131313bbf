"""Message routing to local users (RFC 6121 §8.5) and offline messages
(XEP-0160 with XEP-0203 stamps), with real slixmpp clients.

"Nothing arrived" is checked with ping round trips: the sender's ping
answer means the server has routed its message, the recipient's means the
recipient has read everything sent to it before.
"""

import asyncio
import time
from datetime import datetime
from xml.etree import ElementTree

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import Client, login

DELAY = "{urn:xmpp:delay}delay"
CHATSTATES = "http://jabber.org/protocol/chatstates"
HINTS = "urn:xmpp:hints"
RECEIPTS = "urn:xmpp:receipts"


def element(tag: str, **attrs) -> ElementTree.Element:
    return ElementTree.Element(tag, attrs)


def drain(client) -> list:
    """Every <message/> already queued (emptying the queue)."""
    found = []
    while not client.stanzas.empty():
        found.append(client.stanzas.get_nowait())
    return found


class IMClient(Client):
    """Also records error messages and every <message/>, body or not."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors: asyncio.Queue = asyncio.Queue()
        self.stanzas: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("message_error", self.errors.put_nowait)
        self.register_handler(Callback("every message", MatchXPath(f"{{{self.default_ns}}}message"),
                                       self.stanzas.put_nowait))


async def connect(server, jid, password, priority: int | None = None) -> IMClient:
    """Log in; with *priority*, also send initial presence with it."""
    client = await login(server, jid, password, client_cls=IMClient)
    if priority is not None:
        client.send_presence(ppriority=priority)
        await client.ping_server()
    return client


def send(client, to, body="hi", mtype="chat", *payload) -> str:
    msg = client.make_message(mto=to, mbody=body, mtype=mtype)
    for element in payload:
        msg.xml.append(element)
    msg.send()
    return msg["id"]


async def settle(*clients) -> None:
    for client in clients:
        await client.ping_server()


async def received(client, timeout: float = 5):
    """The next message with a body that is not an error."""
    while True:
        msg = await asyncio.wait_for(client.messages.get(), timeout)
        if msg["type"] != "error":
            return msg


def bodies(client) -> list[str]:
    """Bodies of the non-error messages already queued (emptying the queue)."""
    found = []
    while not client.messages.empty():
        msg = client.messages.get_nowait()
        if msg["type"] != "error":
            found.append(msg["body"])
    return found


async def error_condition(client, msg_id: str, timeout: float = 5) -> str:
    err = await asyncio.wait_for(client.errors.get(), timeout)
    assert err["id"] == msg_id, (err["id"], msg_id)
    return err["error"]["condition"]


async def close(*clients) -> None:
    for client in clients:
        await client.close()


# -- live delivery ----------------------------------------------------------------

async def test_to_a_connected_full_jid_even_without_presence(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    bob = await connect(server, "bob@localhost/phone", "bob-pass")     # no presence sent
    send(alice, "bob@localhost/phone", "to your phone")
    msg = await received(bob)
    assert msg["body"] == "to your phone"
    assert msg["from"] == "alice@localhost/desk"
    assert msg["to"] == "bob@localhost/phone"
    await close(alice, bob)


async def test_bare_jid_goes_to_the_highest_priority(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    high = await connect(server, "bob@localhost/high", "bob-pass", priority=5)
    low = await connect(server, "bob@localhost/low", "bob-pass", priority=1)
    send(alice, "bob@localhost", "chat", "chat")
    send(alice, "bob@localhost", "normal", "normal")
    send(alice, "bob@localhost", "headline", "headline")
    await settle(alice, high, low)
    assert bodies(high) == ["chat", "normal", "headline"]
    assert bodies(low) == ["headline"]
    assert alice.errors.empty()

    low.send_presence(ppriority=5)                   # a tie: both are "most available"
    await settle(low)
    send(alice, "bob@localhost", "to both", "chat")
    await settle(alice, high, low)
    assert bodies(high) == ["to both"]
    assert bodies(low) == ["to both"]
    await close(alice, high, low)


async def test_negative_priority_gets_no_bare_messages_they_are_stored(server, new_user):
    carol = new_user("carol")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    send(alice, carol, "stored before", "chat")
    await settle(alice)
    shy = await connect(server, f"{carol}/shy", "pw", priority=-1)
    send(alice, carol, "chat while shy", "chat")
    send(alice, carol, "normal while shy", "normal")
    send(alice, carol, "headline while shy", "headline")
    await settle(alice, shy)
    assert bodies(shy) == [], "negative initial presence gets neither live nor stored messages"
    assert alice.errors.empty()

    desk = await connect(server, f"{carol}/desk", "pw", priority=0)
    assert (await received(desk))["body"] == "stored before"
    assert (await received(desk))["body"] == "chat while shy"
    assert (await received(desk))["body"] == "normal while shy"
    await settle(alice, shy, desk)
    assert bodies(desk) == [], "a headline is never stored"
    assert bodies(shy) == []
    await close(alice, shy, desk)


async def test_to_an_unbound_full_jid_is_handled_as_bare(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    bob = await connect(server, "bob@localhost/desk", "bob-pass", priority=0)
    send(alice, "bob@localhost/gone", "where are you")
    msg = await received(bob)
    assert msg["body"] == "where are you"
    assert msg["to"] == "bob@localhost/gone"
    await close(alice, bob)


async def test_groupchat_to_a_user_is_service_unavailable(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    bob = await connect(server, "bob@localhost/desk", "bob-pass", priority=0)
    to_bare = send(alice, "bob@localhost", "room?", "groupchat")
    assert await error_condition(alice, to_bare) == "service-unavailable"
    to_gone = send(alice, "bob@localhost/gone", "room?", "groupchat")
    assert await error_condition(alice, to_gone) == "service-unavailable"
    await settle(bob)
    assert bodies(bob) == []
    await close(alice, bob)


async def test_nonexistent_user_is_service_unavailable(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    for mtype in ("chat", "normal", "groupchat"):
        msg_id = send(alice, "nobody@localhost", f"{mtype} to nobody", mtype)
        assert await error_condition(alice, msg_id) == "service-unavailable"
    msg_id = send(alice, "nobody@localhost/res", "to a resource of nobody")
    assert await error_condition(alice, msg_id) == "service-unavailable"
    await close(alice)


async def test_headline_to_nonexistent_user_is_dropped(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    send(alice, "nobody@localhost", "news", "headline")
    probe = send(alice, "nobody@localhost", "are you there")
    # the first error is the probe's: the headline got none
    assert await error_condition(alice, probe) == "service-unavailable"
    await settle(alice)
    assert alice.errors.empty()
    await close(alice)


# -- offline storage -------------------------------------------------------------------

async def test_offline_messages_arrive_in_order_with_a_delay_stamp(server, new_user):
    dave = new_user("dave")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    before = time.time()
    for n in range(3):
        send(alice, dave, f"offline {n}")
    send(alice, f"{dave}/gone", "to a resource that was never there")
    await settle(alice)
    after = time.time()
    assert alice.errors.empty()

    inbox = await connect(server, f"{dave}/desk", "pw", priority=1)
    got = [await received(inbox) for _ in range(4)]
    assert [m["body"] for m in got] == ["offline 0", "offline 1", "offline 2",
                                        "to a resource that was never there"]
    for msg in got:
        assert msg["from"] == "alice@localhost/desk"
        delay = msg.xml.find(DELAY)
        assert delay is not None, msg
        assert delay.get("from") == "localhost"
        assert delay.get("stamp").endswith("Z")
        stamp = datetime.fromisoformat(delay.get("stamp")).timestamp()
        assert before - 1 <= stamp <= after + 1, (before, stamp, after)
    await close(alice, inbox)


async def test_offline_messages_wait_for_initial_presence_and_are_sent_once(server, new_user):
    erin = new_user("erin")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    send(alice, erin, "kept for later")
    await settle(alice)

    erin1 = await connect(server, f"{erin}/desk", "pw")           # bound, no presence
    await settle(erin1)
    assert bodies(erin1) == [], "offline messages before initial presence"
    send(alice, erin, "still offline: stored too")
    await settle(alice, erin1)
    assert bodies(erin1) == []

    erin1.send_presence(ppriority=0)
    assert (await received(erin1))["body"] == "kept for later"
    assert (await received(erin1))["body"] == "still offline: stored too"
    await close(erin1)

    erin2 = await connect(server, f"{erin}/desk", "pw", priority=0)
    await settle(erin2)
    assert bodies(erin2) == [], "the store was not emptied after delivery"
    send(alice, erin, "live now")
    msg = await received(erin2)
    assert msg["body"] == "live now"
    assert msg.xml.find(DELAY) is None
    await close(alice, erin2)


async def test_chat_states_alone_are_not_stored(server, new_user):
    fay = new_user("fay")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    send(alice, fay, None, "chat", ElementTree.Element(f"{{{CHATSTATES}}}composing"))
    send(alice, fay, "typed", "chat", ElementTree.Element(f"{{{CHATSTATES}}}active"))
    await settle(alice)
    assert alice.errors.empty()

    inbox = await connect(server, f"{fay}/desk", "pw", priority=0)
    msg = await asyncio.wait_for(inbox.stanzas.get(), 5)
    assert msg["body"] == "typed"
    assert msg.xml.find(f"{{{CHATSTATES}}}active") is not None
    await settle(inbox)
    assert inbox.stanzas.empty()
    await close(alice, inbox)


async def test_typing_with_no_store_is_neither_stored_nor_bounced(server, new_user):
    """What Gajim and Conversations send while typing to an offline contact:
    XEP-0085 §5.8 (servers "SHOULD NOT store them offline") and XEP-0334
    §4.2 (<no-store/>: not even "for later delivery to an offline client").
    It is dropped without an error: nothing was lost."""
    gus = new_user("gus")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    send(alice, gus, None, "chat", element(f"{{{CHATSTATES}}}composing"),
         element(f"{{{HINTS}}}no-store"))
    send(alice, gus, None, "chat", element(f"{{{CHATSTATES}}}paused"),
         element(f"{{{HINTS}}}no-store"), element(f"{{{HINTS}}}no-copy"),
         element("{urn:xmpp:sid:0}origin-id", id="o-1"))
    await settle(alice)
    assert alice.errors.empty()

    inbox = await connect(server, f"{gus}/desk", "pw", priority=0)
    await settle(inbox)
    assert drain(inbox) == [], "a chat state was stored and replayed"
    await close(alice, inbox)


async def test_no_store_content_is_refused_no_permanent_store_is_kept(server, new_user):
    """XEP-0334 §4.2: a <no-store/> message is not kept for an offline
    recipient, and since it is not stored RFC 6121 §8.5.2.2.1 has the sender
    told with <service-unavailable/>. §4.1/§3.3: <no-permanent-store/> rules
    out archives, not "temporarily … if the recipient is offline"."""
    hal = new_user("hal")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    refused = send(alice, hal, "off the record", "chat", element(f"{{{HINTS}}}no-store"))
    assert await error_condition(alice, refused) == "service-unavailable"
    send(alice, hal, "not archived, but kept for you", "chat",
         element(f"{{{HINTS}}}no-permanent-store"))
    await settle(alice)
    assert alice.errors.empty()

    inbox = await connect(server, f"{hal}/desk", "pw", priority=0)
    msg = await received(inbox)
    assert msg["body"] == "not archived, but kept for you"
    assert msg.xml.find(DELAY) is not None
    await settle(inbox)
    assert bodies(inbox) == []
    await close(alice, inbox)


async def test_store_hint_keeps_a_headline_and_receipts_are_kept(server, new_user):
    """XEP-0334 §4.4: "A message containing the <store/> hint that is not of
    type 'error' SHOULD be stored", also one "that would not have been stored
    under normal conditions" (§2) — a headline (RFC 6121 §8.5.2.2.1 drops it
    otherwise). A XEP-0184 receipt alone is kept as well (neither XEP-0184
    nor XEP-0160 excludes it; Prosody and ejabberd keep it), so a sender who
    was offline still learns that its message arrived."""
    ida = new_user("ida")
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    send(alice, ida, "plain news", "headline")
    send(alice, ida, "news worth keeping", "headline", element(f"{{{HINTS}}}store"))
    send(alice, ida, None, "chat", element(f"{{{RECEIPTS}}}received", id="m-1"))
    await settle(alice)
    assert alice.errors.empty()

    inbox = await connect(server, f"{ida}/desk", "pw", priority=0)
    headline = await asyncio.wait_for(inbox.stanzas.get(), 5)
    assert (headline["type"], headline["body"]) == ("headline", "news worth keeping")
    assert headline.xml.find(DELAY) is not None
    receipt = await asyncio.wait_for(inbox.stanzas.get(), 5)
    assert receipt.xml.find(f"{{{RECEIPTS}}}received").get("id") == "m-1"
    await settle(inbox)
    assert drain(inbox) == []
    await close(alice, inbox)


async def test_msgoffline_is_advertised(server):
    alice = await connect(server, "alice@localhost/desk", "alice-pass")
    alice.register_plugin("xep_0030")
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
    assert "msgoffline" in info["disco_info"]["features"]
    await close(alice)


async def test_offline_quota_is_enforced(make_server):
    srv = make_server(start=False, im={"offline_quota": 2})
    srv.adduser("alice@localhost", "alice-pass")
    srv.adduser("bob@localhost", "bob-pass")
    srv.start()
    alice = await connect(srv, "alice@localhost/desk", "alice-pass")
    send(alice, "bob@localhost", "one")
    send(alice, "bob@localhost", "two")
    third = send(alice, "bob@localhost", "three")
    assert await error_condition(alice, third) == "service-unavailable"
    assert alice.errors.empty()

    bob = await connect(srv, "bob@localhost/desk", "bob-pass", priority=0)
    assert [(await received(bob))["body"] for _ in range(2)] == ["one", "two"]
    await settle(bob)
    assert bodies(bob) == []
    await close(alice, bob)


async def test_offline_messages_survive_a_restart(make_server):
    srv = make_server(start=False)
    srv.adduser("alice@localhost", "alice-pass")
    srv.adduser("bob@localhost", "bob-pass")
    srv.start()
    alice = await connect(srv, "alice@localhost/desk", "alice-pass")
    send(alice, "bob@localhost", "before the restart")
    await settle(alice)
    assert alice.errors.empty()
    await close(alice)

    srv.stop()
    srv.start()
    bob = await connect(srv, "bob@localhost/desk", "bob-pass", priority=0)
    msg = await received(bob)
    assert msg["body"] == "before the restart"
    assert msg.xml.find(DELAY) is not None
    await close(bob)
