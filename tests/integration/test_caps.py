"""XEP-0115 Entity Capabilities as the server processes them
(server/modules/caps.py) for PEP's filtered notifications (XEP-0163 §4):
real slixmpp clients (xep_0115) and byte-level clients whose caps and
disco#info answers the tests write themselves."""

import asyncio
import base64
import hashlib
import itertools

import slixmpp
from lxml import etree

from tests.harness import RawClient, XferdProcess, federate, login, round_trip
from tests.integration.test_pep import (
    caps_login, event_item, next_event, note, publish, share_presence)

CAPS = "http://jabber.org/protocol/caps"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
EVENT = "http://jabber.org/protocol/pubsub#event"
CLIENT = "jabber:client"
PING = "urn:xmpp:ping"

_fresh = itertools.count(1)


def fresh_user(server, prefix: str) -> str:
    name = f"{prefix}{next(_fresh)}"
    server.adduser(f"{name}@localhost", "pw")
    return name


def ver_of(features, identity=("client", "pc", "", "")) -> str:
    """XEP-0115 §5.1 for one identity and no forms, written out for the test."""
    s = "/".join(identity) + "<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


class CapsRaw:
    """A byte-level client that announces caps and answers disco#info as told."""

    def __init__(self, raw: RawClient, jid: str):
        self.raw, self.jid = raw, jid

    @classmethod
    async def login(cls, server, user: str, resource: str) -> "CapsRaw":
        raw = await RawClient.connect(server.c2s_port)
        await raw.login_plain(server.cert(), user, "pw", resource=resource)
        return cls(raw, f"{user}@localhost/{resource}")

    def presence(self, c: str = "", show: str = "") -> None:
        self.raw.send(f"<presence>{show and f'<show>{show}</show>'}{c}</presence>")

    async def next(self, matches, timeout: float = 10):
        """The first received top-level element *matches* accepts (others stay)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, el in enumerate(self.raw.elements):
                if matches(el):
                    return self.raw.elements.pop(i)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await self.raw._read_some(left):
                raise AssertionError(f"{self.jid}: nothing like that; got "
                                     f"{self.raw.received[-1500:]!r}")

    async def disco_get(self):
        return await self.next(lambda el: el.tag == f"{{{CLIENT}}}iq" and el.get("type") ==
                               "get" and el.find(f"{{{DISCO_INFO}}}query") is not None)

    def answer(self, request, features) -> None:
        query = request.find(f"{{{DISCO_INFO}}}query")
        body = "<identity category='client' type='pc'/>" + "".join(
            f"<feature var='{f}'/>" for f in features)
        self.raw.send(f"<iq type='result' id='{request.get('id')}' to='{request.get('from')}'>"
                      f"<query xmlns='{DISCO_INFO}' node='{query.get('node')}'>{body}</query>"
                      "</iq>")

    async def event(self):
        return await self.next(lambda el: el.tag == f"{{{CLIENT}}}message" and
                               el.find(f"{{{EVENT}}}event") is not None)

    async def nothing_more(self) -> None:
        """No notification arrived up to a ping to the server and its answer."""
        self.raw.send(f"<iq type='get' id='rt'><ping xmlns='{PING}'/></iq>")
        await self.next(lambda el: el.get("id") == "rt" and el.get("type") == "result")
        events = [el for el in self.raw.elements if el.find(f"{{{EVENT}}}event") is not None]
        assert not events, etree.tostring(events[0])


def caps_element(features, node="http://example.org/client", hash_="sha-1", ver=None):
    ver = ver or ver_of(features)
    hash_attr = f" hash='{hash_}'" if hash_ else ""
    return f"<c xmlns='{CAPS}'{hash_attr} node='{node}' ver='{ver}'/>"


def items_of(event_el):
    items = event_el.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
    return items.get("node"), items.find(f"{{{EVENT}}}item").get("id")


# -- tests -----------------------------------------------------------------------------------

async def test_a_new_ver_is_asked_once_then_cached(server):
    """§6.2: the server asks the announcing full JID for disco#info of node
    ``node#ver`` (from the user's bare JID, as XEP-0060 §9.2's example);
    §5.4 3.8: a verified ver is cached for everyone — a second resource of
    the same software is not asked, yet its interest is known at once."""
    user = fresh_user(server, "cached")
    publisher = await login(server, f"{user}@localhost/pub", "pw")
    one = two = None
    try:
        await publish(publisher, "urn:example:cached", note("c"), "c1")
        one = await caps_login(server, f"{user}@localhost/one", "pw", ["urn:example:cached"])
        one.send_presence()
        request = await asyncio.wait_for(one.disco_gets.get(), 10)
        assert request["from"] == slixmpp.JID(f"{user}@localhost")
        caps_node = one.plugin["xep_0115"].caps_node
        ver = await one.plugin["xep_0115"].get_verstring()
        assert request["disco_info"]["node"] == f"{caps_node}#{ver}"
        assert event_item(await next_event(one.events))[:2] == ("urn:example:cached", "c1")

        two = await caps_login(server, f"{user}@localhost/two", "pw", ["urn:example:cached"])
        assert await two.plugin["xep_0115"].get_verstring() == ver
        two.send_presence()
        assert event_item(await next_event(two.events))[:2] == ("urn:example:cached", "c1")
        assert two.disco_gets.empty(), two.disco_gets.get_nowait()
    finally:
        for client in (publisher, one, two):
            if client is not None:
                await client.close()


async def test_a_forged_ver_is_neither_trusted_nor_cached(server):
    """§5.4 3.9: an answer whose hash does not match the announced ver is
    invalid and MUST NOT be cached globally — the liar, claiming interest in
    a node its ver does not cover, gets nothing of it; the next entity that
    announces the same ver is asked again, and its honest answer counts."""
    user = fresh_user(server, "forged")
    publisher = await login(server, f"{user}@localhost/pub", "pw")
    liar = honest = None
    honest_features = [DISCO_INFO, "urn:example:sign+notify"]
    try:
        await publish(publisher, "urn:example:sign", note("s"), "s1")
        await publish(publisher, "urn:example:secret", note("x"), "x1")
        liar = await CapsRaw.login(server, user, "liar")
        liar.presence(caps_element(honest_features))
        request = await liar.disco_get()
        assert request.get("from") == f"{user}@localhost"
        liar.answer(request, honest_features + ["urn:example:secret+notify"])

        honest = await CapsRaw.login(server, user, "honest")
        honest.presence(caps_element(honest_features))
        honest.answer(await honest.disco_get(), honest_features)       # asked again
        assert items_of(await honest.event()) == ("urn:example:sign", "s1")

        await publish(publisher, "urn:example:secret", note("y"), "x2")
        await liar.nothing_more()
        await honest.nothing_more()
    finally:
        await publisher.close()
        for client in (liar, honest):
            if client is not None:
                await client.raw.close()


async def test_legacy_and_unsupported_hash_caps_count_for_that_resource_only(server):
    """§5.4 step 1 (no hash: the §13 legacy format) and step 2 (a hash we do
    not support): the server still asks ``node#ver`` and uses the answer
    for the resource that gave it, without caching it — a second resource
    announcing the same is asked too. (Prosody's mod_pep asks for legacy
    caps as well.)"""
    user = fresh_user(server, "legacy")
    publisher = await login(server, f"{user}@localhost/pub", "pw")
    clients = []
    try:
        await publish(publisher, "urn:example:old", note("o"), "o1")
        for resource, c in (("legacy1", f"<c xmlns='{CAPS}' node='http://example.org/old' "
                                        "ver='1.0' ext='x y'/>"),
                            ("legacy2", f"<c xmlns='{CAPS}' node='http://example.org/old' "
                                        "ver='1.0'/>"),
                            ("md5", caps_element(["urn:example:old+notify"], hash_="md5"))):
            client = await CapsRaw.login(server, user, resource)
            clients.append(client)
            client.presence(c)
            request = await client.disco_get()
            node = request.find(f"{{{DISCO_INFO}}}query").get("node")
            assert node.startswith("http://example.org/") and "#" in node
            client.answer(request, [DISCO_INFO, "urn:example:old+notify"])
            assert items_of(await client.event()) == ("urn:example:old", "o1")
    finally:
        await publisher.close()
        for client in clients:
            await client.raw.close()


async def test_presence_without_caps_keeps_what_was_learned(server):
    """§8.4 (caps optimization): receivers "MUST NOT expect an annotation on
    every presence notification" — a presence update without ``<c/>`` leaves
    the resource's interest as it was. (Prosody forgets it here.)"""
    user = fresh_user(server, "optimized")
    publisher = await login(server, f"{user}@localhost/pub", "pw")
    client = None
    features = [DISCO_INFO, "urn:example:kept+notify"]
    try:
        await publish(publisher, "urn:example:kept", note("k"), "k1")
        client = await CapsRaw.login(server, user, "terse")
        client.presence(caps_element(features))
        client.answer(await client.disco_get(), features)
        assert items_of(await client.event()) == ("urn:example:kept", "k1")
        client.presence(show="away")                 # no <c/>
        await client.nothing_more()
        await publish(publisher, "urn:example:kept", note("k"), "k2")
        assert items_of(await client.event()) == ("urn:example:kept", "k2")
    finally:
        await publisher.close()
        if client is not None:
            await client.raw.close()


async def test_a_remote_contacts_caps_over_s2s(tmp_path):
    """XEP-0163 §4.3.4: the contact's server sends its presence to the
    owner's bare JID; the owner's server asks the contact's full JID over
    s2s (§6.2) and sends the last item and later notifications to that full
    JID only (§4.3.1 4) — not to the contact's other resource, which does
    not ask for the node."""
    a = XferdProcess(tmp_path / "a", domains=("a.test",))
    b = XferdProcess(tmp_path / "b", domains=("b.test",))
    a.adduser("owner@a.test", "pw")
    b.adduser("contact@b.test", "pw")
    federate({"a.test": a, "b.test": b})
    clients = []
    try:
        owner = await caps_login(a, "owner@a.test/desk", "pw")
        clients.append(owner)
        await publish(owner, "urn:example:far", note("far"), "f1")
        contact = await caps_login(b, "contact@b.test/pc", "pw", ["urn:example:far"])
        other = await caps_login(b, "contact@b.test/phone", "pw", ["urn:example:else"])
        clients += [contact, other]
        for client in clients:
            client.send_presence()
        await share_presence(owner, contact)

        msg = await next_event(contact.events, 20)
        assert msg["from"] == slixmpp.JID("owner@a.test")
        assert msg["to"] == slixmpp.JID("contact@b.test/pc")
        assert event_item(msg) == ("urn:example:far", "f1", "far")
        asked = []
        while not contact.disco_gets.empty():
            asked.append(str(contact.disco_gets.get_nowait()["from"]))
        assert "owner@a.test" in asked                  # the owner's server asked, over s2s

        await publish(owner, "urn:example:far", note("farther"), "f2")
        msg = await next_event(contact.events, 20)
        assert msg["to"] == slixmpp.JID("contact@b.test/pc")
        assert event_item(msg)[:2] == ("urn:example:far", "f2")
        await round_trip(other, via=owner)              # along the same s2s stream
        assert other.events.empty(), other.events.get_nowait()
    finally:
        for client in clients:
            await client.close()
        a.stop()
        b.stop()
