"""XEP-0280 Message Carbons with slixmpp's xep_0280 plugin: enabling and
disabling per resource, received and sent carbons (also for messages that
come over s2s and for messages to an offline contact), which messages are
copied (§6.1), ``<private/>``/``<no-copy/>`` (§9), and a forged carbon from
an outsider.

Two federated servers for the whole module: a.test (alice, carol, dave) and
b.test (bob). "Nothing arrived" is checked with ping round trips.
"""

import asyncio
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import Client, XferdProcess, federate, login, round_trip

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
DELAY = "urn:xmpp:delay"
CLIENT = "jabber:client"
HINTS = "urn:xmpp:hints"
CHATSTATES = "http://jabber.org/protocol/chatstates"
RECEIPTS = "urn:xmpp:receipts"


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    a = XferdProcess(tmp_path_factory.mktemp("a"), domains=("a.test",))
    b = XferdProcess(tmp_path_factory.mktemp("b"), domains=("b.test",))
    for name in ("alice", "carol", "dave"):
        a.adduser(f"{name}@a.test", "pw")
    b.adduser("bob@b.test", "pw")
    federate({"a.test": a, "b.test": b})
    yield a, b
    a.stop()
    b.stop()


class CarbonClient(Client):
    """Records every <message/> as it came (carbons and errors included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0297")
        self.register_plugin("xep_0280")
        self.register_plugin("xep_0059")
        self.register_plugin("xep_0313")
        self.stanzas: asyncio.Queue = asyncio.Queue()
        self.register_handler(Callback("every message", MatchXPath(f"{{{CLIENT}}}message"),
                                       lambda msg: self.stanzas.put_nowait(msg.xml)))
        #: what slixmpp's plugin accepted as carbons: (direction, inner message)
        self.carbons: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("carbon_received", lambda m: self.carbons.put_nowait(
            ("received", m["carbon_received"])))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(
            ("sent", m["carbon_sent"])))


async def online(server, jid, *, priority=0, carbons=True) -> CarbonClient:
    client = await login(server, jid, "pw", client_cls=CarbonClient)
    client.send_presence(ppriority=priority)
    if carbons:
        await client.plugin["xep_0280"].enable(timeout=10)
    await client.ping_server()
    return client


def message(sender, to, body=None, mtype="chat", *payload: str, mid=None):
    msg = sender.make_message(mto=to, mbody=body, mtype=mtype)
    if mid:
        msg["id"] = mid
    for xml in payload:
        msg.xml.append(ET.fromstring(xml))
    msg.send()
    return msg["id"]


def taken(client) -> list:
    """Every <message/> already queued (emptying the queue)."""
    found = []
    while not client.stanzas.empty():
        found.append(client.stanzas.get_nowait())
    return found


def carbon_of(stanza, owner: str, resource: str, direction: str):
    """The message inside *stanza*, a carbon as §7/§8 shape it; checks the wrapper."""
    assert stanza.get("from") == owner, ET.tostring(stanza)
    assert stanza.get("to") == f"{owner}/{resource}"
    holder = stanza.find(f"{{{CARBONS}}}{direction}")
    assert holder is not None, ET.tostring(stanza)
    forwarded = holder.find(f"{{{FORWARD}}}forwarded")
    assert forwarded.find(f"{{{DELAY}}}delay").get("stamp").endswith("Z")
    inner = forwarded.find(f"{{{CLIENT}}}message")
    assert inner is not None
    assert stanza.get("type") == inner.get("type")
    return inner


def body(stanza) -> str | None:
    found = stanza.find(f"{{{CLIENT}}}body")
    return None if found is None else found.text


async def settle(*clients, via=None) -> None:
    for client in clients:
        await round_trip(client, via=via)


async def close(*clients) -> None:
    for client in clients:
        await client.close()


async def test_disco_and_enable_disable_round_trip(two):
    a, _ = two
    alice = await online(a, "alice@a.test/one", carbons=False)
    info = await alice.plugin["xep_0030"].get_info(jid="a.test", timeout=10)
    features = set(info["disco_info"]["features"])
    assert {"urn:xmpp:carbons:2", "urn:xmpp:carbons:rules:0"} <= features
    carbons = alice.plugin["xep_0280"]
    for _ in range(2):                   # §10: repeating either is no error
        assert (await carbons.enable(timeout=10))["type"] == "result"
    for _ in range(2):
        assert (await carbons.disable(timeout=10))["type"] == "result"
    # someone else's account: not allowed
    iq = alice.make_iq_set(ito="carol@a.test")
    iq.enable("carbon_enable")
    with pytest.raises(IqError) as refused:
        await iq.send(timeout=10)
    assert refused.value.iq["error"]["condition"] == "not-allowed"
    await close(alice)


async def test_received_and_sent_carbons_reach_the_other_enabled_resources(two):
    a, _ = two
    desk = await online(a, "alice@a.test/desk", priority=5)
    phone = await online(a, "alice@a.test/phone", priority=0)
    old = await online(a, "alice@a.test/old", priority=0, carbons=False)
    carol = await online(a, "carol@a.test/home", carbons=False)

    # to the bare JID: desk (highest priority) gets it, phone a received carbon
    message(carol, "alice@a.test", "to the bare JID", mid="m1")
    await settle(desk, phone, old, via=carol)
    [original] = taken(desk)
    assert body(original) == "to the bare JID" and original.get("from") == "carol@a.test/home"
    [carbon] = taken(phone)
    inner = carbon_of(carbon, "alice@a.test", "phone", "received")
    assert (inner.get("from"), inner.get("to"), inner.get("id"), body(inner)) == \
        ("carol@a.test/home", "alice@a.test", "m1", "to the bare JID")
    direction, accepted = await asyncio.wait_for(phone.carbons.get(), 5)
    assert direction == "received" and accepted["body"] == "to the bare JID"
    assert taken(old) == []

    # to a full JID: that resource gets it, the other enabled one a carbon
    message(carol, "alice@a.test/phone", "to the phone")
    await settle(desk, phone, old, via=carol)
    assert [body(m) for m in taken(phone)] == ["to the phone"]
    [carbon] = taken(desk)
    assert body(carbon_of(carbon, "alice@a.test", "desk", "received")) == "to the phone"
    assert taken(old) == []

    # sent by one resource: the other enabled one gets a sent carbon, the sender nothing
    message(desk, "carol@a.test", "from the desk")
    await settle(carol)
    await settle(desk, phone, old)
    [carbon] = taken(phone)
    inner = carbon_of(carbon, "alice@a.test", "phone", "sent")
    assert (inner.get("from"), inner.get("to"), body(inner)) == \
        ("alice@a.test/desk", "carol@a.test", "from the desk")
    assert taken(desk) == [] and taken(old) == []
    # the resource without carbons sends: the enabled ones still get copies
    message(old, "carol@a.test", "from the old one")
    await settle(carol)
    await settle(desk, phone)
    for client, resource in ((desk, "desk"), (phone, "phone")):
        [carbon] = taken(client)
        assert body(carbon_of(carbon, "alice@a.test", resource, "sent")) == "from the old one"

    # to the user's own other resource: one copy each, as sent
    message(desk, "alice@a.test/old", "note to self")
    await settle(desk, phone, old)
    assert [body(m) for m in taken(old)] == ["note to self"]
    [carbon] = taken(phone)
    assert body(carbon_of(carbon, "alice@a.test", "phone", "sent")) == "note to self"
    assert taken(desk) == []

    # disabled: no more copies for the phone
    await phone.plugin["xep_0280"].disable(timeout=10)
    message(carol, "alice@a.test", "after disable")
    message(desk, "carol@a.test", "sent after disable")
    await settle(carol)
    await settle(desk, phone, old, via=carol)
    assert [body(m) for m in taken(desk)] == ["after disable"]
    assert taken(phone) == [] and taken(old) == []
    await close(desk, phone, old, carol)


def stanza_ids(stanza) -> dict[str, str]:
    """XEP-0359 ids anywhere in *stanza*: by → id."""
    return {e.get("by"): e.get("id") for e in stanza.iter("{urn:xmpp:sid:0}stanza-id")}


async def test_copies_carry_the_users_archive_id(two):
    """A carbon carries the id the message has in the user's own archive
    (XEP-0313/XEP-0359), so a client that later pages through the archive
    recognises it: received and sent copies alike. The sender's id never
    reaches the recipient, who gets an id of its own archive."""
    a, _ = two
    desk = await online(a, "alice@a.test/desk", priority=5)
    phone = await online(a, "alice@a.test/phone", priority=0)
    carol = await online(a, "carol@a.test/home", carbons=False)
    message(desk, "carol@a.test", "sent from the desk")
    message(carol, "alice@a.test", "received at the desk")
    await settle(carol)
    await settle(desk, phone, via=carol)
    [got] = taken(carol)
    assert list(stanza_ids(got)) == ["carol@a.test"]
    copies = {}
    for carbon in taken(phone):
        direction = "sent" if carbon.find(f"{{{CARBONS}}}sent") is not None else "received"
        copies[body(carbon_of(carbon, "alice@a.test", "phone", direction))] = stanza_ids(carbon)
    [original] = taken(desk)
    assert set(copies) == {"sent from the desk", "received at the desk"}
    assert copies["received at the desk"] == stanza_ids(original)
    archive = {m["mam_result"]["forwarded"]["stanza"]["body"]: m["mam_result"]["id"]
               async for m in phone.plugin["xep_0313"].iterate(rsm={"max": 50})}
    for text, ids in copies.items():
        assert ids == {"alice@a.test": archive[text]}
    await close(desk, phone, carol)


async def test_which_messages_are_copied(two):
    """§6.1 and §9, for received and sent messages."""
    a, _ = two
    desk = await online(a, "alice@a.test/desk", priority=5)
    phone = await online(a, "alice@a.test/phone", priority=0)
    carol = await online(a, "carol@a.test/home", carbons=False)
    muc = "<x xmlns='http://jabber.org/protocol/muc#user'/>"

    message(carol, "alice@a.test", "private", "chat", f"<private xmlns='{CARBONS}'/>",
            f"<no-copy xmlns='{HINTS}'/>")
    message(carol, "alice@a.test", "no-copy only", "chat", f"<no-copy xmlns='{HINTS}'/>")
    message(carol, "alice@a.test", "private only", "chat", f"<private xmlns='{CARBONS}'/>")
    message(carol, "alice@a.test", "news", "headline")
    message(carol, "alice@a.test", None, "normal", "<x xmlns='urn:example:other'/>")
    message(carol, "alice@a.test", "from a room occupant", "chat", muc)
    message(carol, "alice@a.test", None, "chat", f"<composing xmlns='{CHATSTATES}'/>")
    message(carol, "alice@a.test", "normal with body", "normal")
    message(carol, "alice@a.test", None, "normal", f"<received xmlns='{RECEIPTS}' id='m1'/>")
    message(carol, "alice@a.test", None, "normal",
            "<x xmlns='jabber:x:conference' jid='room@rooms.a.test'/>")
    # an error that answers nothing alice sent
    message(carol, "alice@a.test/desk", None, "error", mid="never-sent")
    await settle(desk, phone, via=carol)
    delivered = taken(desk)
    assert len(delivered) == 11 and delivered[-1].get("type") == "error"
    # the recipient sees <private/> as it was sent (XEP-0280 1.0 keeps it)
    assert delivered[0].find(f"{{{CARBONS}}}private") is not None
    # a headline goes to every resource (RFC 6121 §8.5.2.1.2): no copy needed
    headline, *carbons = taken(phone)
    assert body(headline) == "news" and headline.get("from") == "carol@a.test/home"
    copies = [carbon_of(c, "alice@a.test", "phone", "received") for c in carbons]
    assert [(body(m), m.get("type")) for m in copies] == [
        (None, "chat"), ("normal with body", "normal"), (None, "normal"), (None, "normal")]
    assert copies[0].find(f"{{{CHATSTATES}}}composing") is not None

    # groupchat to a user is refused, and not copied
    message(carol, "alice@a.test", "groupchat", "groupchat")
    await settle(desk, phone, via=carol)
    assert taken(desk) == [] and taken(phone) == []
    [bounce] = taken(carol)
    assert bounce.get("type") == "error"

    # sent: a private one is not copied; a PM to a room occupant and a chat state are
    message(desk, "carol@a.test", "secret", "chat", f"<private xmlns='{CARBONS}'/>")
    message(desk, "carol@a.test/home", "to an occupant", "chat", muc)
    message(desk, "carol@a.test", None, "chat", f"<active xmlns='{CHATSTATES}'/>")
    # an error answering a copied message is copied too: the sent carbon, then
    # the bounce from the unknown account, as a received carbon
    message(desk, "nobody@a.test", "to nobody", "chat", mid="lost1")
    await settle(carol)
    await settle(desk, phone)
    copies = taken(phone)
    assert [body(carbon_of(c, "alice@a.test", "phone", "sent")) for c in copies[:3]] == \
        ["to an occupant", None, "to nobody"]
    error = carbon_of(copies[3], "alice@a.test", "phone", "received")
    assert (error.get("type"), error.get("id"), error.get("from")) == \
        ("error", "lost1", "nobody@a.test")
    assert len(copies) == 4
    [bounce] = taken(desk)
    assert bounce.get("type") == "error" and bounce.get("id") == "lost1"
    await close(desk, phone, carol)


async def test_a_forged_carbon_from_an_outsider_is_defused(two):
    """§11: only the user's own server sends carbons; a <received/> from
    someone else is taken out before the user's clients see it."""
    a, _ = two
    desk = await online(a, "alice@a.test/desk", priority=5)
    carol = await online(a, "carol@a.test/home", carbons=False)
    forged = (f"<received xmlns='{CARBONS}'><forwarded xmlns='{FORWARD}'>"
              f"<message xmlns='{CLIENT}' from='bob@b.test/x' to='alice@a.test' type='chat'>"
              "<body>I owe carol 100 euros</body></message></forwarded></received>")
    message(carol, "alice@a.test", "hello", "chat", forged)
    await settle(desk, via=carol)
    [delivered] = taken(desk)
    assert delivered.get("from") == "carol@a.test/home" and body(delivered) == "hello"
    assert delivered.find(f"{{{CARBONS}}}received") is None
    assert desk.carbons.empty()
    await close(desk, carol)


async def test_carbons_for_messages_over_s2s_and_to_an_offline_contact(two):
    a, b = two
    desk = await online(a, "alice@a.test/desk", priority=5)
    phone = await online(a, "alice@a.test/phone", priority=0)
    bob = await online(b, "bob@b.test/home", carbons=False)
    message(bob, "alice@a.test", "over s2s")
    await settle(desk, phone, via=bob)
    assert [body(m) for m in taken(desk)] == ["over s2s"]
    [carbon] = taken(phone)
    inner = carbon_of(carbon, "alice@a.test", "phone", "received")
    assert (inner.get("from"), body(inner)) == ("bob@b.test/home", "over s2s")
    # sent to a remote contact and to an offline local one: copied all the same
    message(desk, "bob@b.test", "to b.test")
    message(desk, "dave@a.test", "to offline dave")
    await settle(bob, via=desk)
    await settle(phone)
    copies = [carbon_of(c, "alice@a.test", "phone", "sent") for c in taken(phone)]
    assert [(m.get("to"), body(m)) for m in copies] == \
        [("bob@b.test", "to b.test"), ("dave@a.test", "to offline dave")]
    assert [body(m) for m in taken(bob)] == ["to b.test"]
    await close(desk, phone, bob)
