"""XEP-0163 PEP (the XEP-0060 subset in server/modules/pep.py) with real
slixmpp clients sending the XML that XEP-0283 and everyday clients send.

Each test uses its own node names (and, where roster state matters, its own
users) so the tests can share one server in any order.
"""

import asyncio
import functools
import itertools
import sqlite3
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import Client, login, round_trip

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MOVED = "urn:xmpp:moved:1"
ROSTER = "jabber:iq:roster"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DELAY = "urn:xmpp:delay"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NICK = "http://jabber.org/protocol/nick"


# -- helpers -------------------------------------------------------------------------------

class Failed(Exception):
    """An IQ came back as an error: ``condition`` and the pubsub#errors condition."""

    def __init__(self, error_type, condition, pubsub_condition):
        super().__init__(f"{error_type}/{condition}/{pubsub_condition}")
        self.type = error_type
        self.condition = condition
        self.pubsub_condition = pubsub_condition


async def send_iq(client, iq_type, payload: str, to=None):
    """Send *payload* (XML text) in an IQ; return the result's XML or raise Failed."""
    iq = client.Iq()
    iq["type"] = iq_type
    if to is not None:
        iq["to"] = to
    iq.append(ET.fromstring(payload))
    try:
        answer = await iq.send(timeout=10)
    except IqError as exc:
        error = exc.iq.xml.find("{jabber:client}error")
        conditions = [(c.tag.partition("}")[0][1:], c.tag.partition("}")[2]) for c in error]
        defined = [name for ns, name in conditions if ns == STANZAS and name != "text"]
        pubsub = [name for ns, name in conditions if ns == ERRORS]
        raise Failed(error.get("type"), defined[0] if defined else None,
                     pubsub[0] if pubsub else None) from None
    return answer.xml


def publish_xml(node, payload, item_id=None, options=None):
    item = f"<item id='{item_id}'>" if item_id else "<item>"
    form = ""
    if options is not None:
        fields = "".join(f"<field var='{var}'>" + "".join(
            f"<value>{v}</value>" for v in (value if isinstance(value, list) else [value]))
            + "</field>" for var, value in options.items())
        form = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'>"
                f"<value>{PUBSUB}#publish-options</value></field>{fields}</x></publish-options>")
    return (f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}{payload}</item>"
            f"</publish>{form}</pubsub>")


async def publish(client, node, payload, item_id=None, options=None, to=None):
    """Publish; return the item id the server reports."""
    answer = await send_iq(client, "set", publish_xml(node, payload, item_id, options), to)
    item = answer.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item")
    return item.get("id")


async def get_items(client, owner, node, *, ids=(), max_items=None):
    """Items of *owner*'s *node* as [(id, payload element)], in the order returned."""
    attrs = f" max_items='{max_items}'" if max_items else ""
    wanted = "".join(f"<item id='{i}'/>" for i in ids)
    answer = await send_iq(client, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'"
                                          f"{attrs}>{wanted}</items></pubsub>", to=owner)
    items = answer.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
    assert items.get("node") == node
    return [(item.get("id"), item[0] if len(item) else None) for item in items]


def note(text):
    return f"<note xmlns='urn:example:note'>{text}</note>"


def note_text(payload):
    assert payload.tag == "{urn:example:note}note", payload.tag
    return payload.text


async def users(server, *names):
    """Fresh accounts (so no roster state leaks between tests), logged in."""
    clients = []
    for name in names:
        server.adduser(f"{name}@localhost", f"{name}-pass")
        clients.append(await login(server, f"{name}@localhost/test", f"{name}-pass"))
    return clients


# -- publish, retrieve, retract ---------------------------------------------------------------

async def test_publish_auto_creates_and_the_owner_reads_it_back(server):
    alice = await login(server, "alice@localhost/a", "alice-pass")
    try:
        item_id = await publish(alice, "urn:example:auto", note("hello"))
        assert item_id                                  # generated, returned (§7.1.2)
        [(got_id, payload)] = await get_items(alice, None, "urn:example:auto")
        assert got_id == item_id and note_text(payload) == "hello"
        # the same through the owner's bare JID as 'to'
        [(got_id, _)] = await get_items(alice, "alice@localhost", "urn:example:auto")
        assert got_id == item_id
    finally:
        await alice.close()


async def test_default_node_is_presence_and_a_stranger_is_refused(server):
    alice, = await users(server, "pres_owner")
    stranger, = await users(server, "pres_stranger")
    try:
        await publish(alice, "urn:example:private", note("only contacts"), "one")
        try:
            await get_items(stranger, "pres_owner@localhost", "urn:example:private")
        except Failed as failed:
            assert (failed.type, failed.condition, failed.pubsub_condition) == (
                "auth", "not-authorized", "presence-subscription-required")
        else:
            raise AssertionError("a stranger read a presence node")
        # the owner's configuration shows the defaults (XEP-0163 §5)
        config = await send_iq(alice, "get", f"<pubsub xmlns='{OWNER}'>"
                                             "<configure node='urn:example:private'/></pubsub>")
        fields = {f.get("var"): f.findtext("{jabber:x:data}value")
                  for f in config.iter("{jabber:x:data}field")}
        assert fields["pubsub#access_model"] == "presence"
        assert fields["pubsub#max_items"] == "1"
    finally:
        await alice.close()
        await stranger.close()


async def test_publish_options_open_lets_a_stranger_read(server):
    alice, stranger = await users(server, "open_owner", "open_stranger")
    try:
        await publish(alice, "urn:example:public", note("for everyone"), "x",
                      options={"pubsub#access_model": "open"})
        [(item_id, payload)] = await get_items(stranger, "open_owner@localhost",
                                               "urn:example:public")
        assert item_id == "x" and note_text(payload) == "for everyone"
    finally:
        await alice.close()
        await stranger.close()


async def test_whitelist_node_is_closed_to_others(server):
    alice, stranger = await users(server, "white_owner", "white_stranger")
    try:
        await publish(alice, "urn:example:closed", note("mine"), "m",
                      options={"pubsub#access_model": "whitelist"})
        try:
            await get_items(stranger, "white_owner@localhost", "urn:example:closed")
        except Failed as failed:
            assert (failed.type, failed.condition, failed.pubsub_condition) == (
                "cancel", "not-allowed", "closed-node")
        else:
            raise AssertionError("a stranger read a whitelist node")
        assert len(await get_items(alice, None, "urn:example:closed")) == 1
    finally:
        await alice.close()
        await stranger.close()


async def test_publish_options_that_differ_from_the_node_are_a_conflict(server):
    alice = await login(server, "alice@localhost/a", "alice-pass")
    try:
        await publish(alice, "urn:example:precondition", note("1"))    # presence, max 1
        for options in ({"pubsub#access_model": "open"}, {"pubsub#max_items": "5"}):
            try:
                await publish(alice, "urn:example:precondition", note("2"), options=options)
            except Failed as failed:
                assert (failed.type, failed.condition, failed.pubsub_condition) == (
                    "cancel", "conflict", "precondition-not-met")
            else:
                raise AssertionError(f"{options} accepted on a node that differs")
        # options matching the node are fine
        await publish(alice, "urn:example:precondition", note("3"),
                      options={"pubsub#access_model": "presence", "pubsub#max_items": "1"})
        [(_, payload)] = await get_items(alice, None, "urn:example:precondition")
        assert note_text(payload) == "3"
    finally:
        await alice.close()


async def test_unknown_publish_option_is_rejected(server):
    alice = await login(server, "alice@localhost/a", "alice-pass")
    try:
        try:
            await publish(alice, "urn:example:unknown-option", note("x"),
                          options={"pubsub#made_up": "1"})
        except Failed as failed:
            assert failed.condition == "bad-request"
        else:
            raise AssertionError("an unknown publish-options field was accepted")
        try:                        # and nothing was created
            await get_items(alice, None, "urn:example:unknown-option")
        except Failed as failed:
            assert failed.condition == "item-not-found"
        else:
            raise AssertionError("the node exists")
    finally:
        await alice.close()


async def test_retract_removes_an_item(server):
    alice = await login(server, "alice@localhost/a", "alice-pass")
    try:
        await publish(alice, "urn:example:retract", note("a"), "keep",
                      options={"pubsub#max_items": "10"})
        await publish(alice, "urn:example:retract", note("b"), "drop")
        await send_iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract "
                                    "node='urn:example:retract'><item id='drop'/></retract></pubsub>")
        assert [i for i, _ in await get_items(alice, None, "urn:example:retract")] == ["keep"]
        try:                        # retracting it again: no such item (§7.2.3.2)
            await send_iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract "
                                        "node='urn:example:retract'><item id='drop'/></retract>"
                                        "</pubsub>")
        except Failed as failed:
            assert failed.condition == "item-not-found"
        else:
            raise AssertionError("retracted a missing item")
    finally:
        await alice.close()


async def test_max_items_is_respected(server):
    alice = await login(server, "alice@localhost/a", "alice-pass")
    try:
        await publish(alice, "urn:example:single", note("first"), "1")
        await publish(alice, "urn:example:single", note("second"), "2")
        [(item_id, payload)] = await get_items(alice, None, "urn:example:single")
        assert (item_id, note_text(payload)) == ("2", "second")

        for n in range(1, 5):
            await publish(alice, "urn:example:three", note(str(n)), str(n),
                          options={"pubsub#max_items": "3"})
        got = await get_items(alice, None, "urn:example:three")
        assert [i for i, _ in got] == ["2", "3", "4"]           # oldest dropped, oldest first
        got = await get_items(alice, None, "urn:example:three", max_items=2)
        assert [i for i, _ in got] == ["3", "4"]                # the two most recent
        got = await get_items(alice, None, "urn:example:three", ids=["3", "nope"])
        assert [i for i, _ in got] == ["3"]
    finally:
        await alice.close()


async def test_items_of_a_missing_node_or_user(server):
    alice, bob = await users(server, "missing_a", "missing_b")
    try:
        for who, owner in ((alice, None), (bob, "missing_a@localhost")):
            try:
                await get_items(who, owner, "urn:example:never-published")
            except Failed as failed:
                assert (failed.type, failed.condition) == ("cancel", "item-not-found")
            else:
                raise AssertionError("items of a missing node")
        try:
            await get_items(bob, "nobody@localhost", "urn:example:anything")
        except Failed as failed:
            assert failed.condition == "service-unavailable"
        else:
            raise AssertionError("items of a missing user")
    finally:
        await alice.close()
        await bob.close()


async def test_only_the_owner_publishes(server):
    owner, other = await users(server, "pub_owner", "pub_other")
    try:
        try:
            await publish(other, "urn:example:theirs", note("x"), to="pub_owner@localhost")
        except Failed as failed:
            assert failed.condition == "forbidden"
        else:
            raise AssertionError("published to someone else's PEP service")
    finally:
        await owner.close()
        await other.close()


async def test_owner_reconfigures_and_deletes_a_node(server):
    alice, stranger = await users(server, "conf_owner", "conf_stranger")
    try:
        await publish(alice, "urn:example:conf", note("x"), "1")
        await send_iq(alice, "set", f"<pubsub xmlns='{OWNER}'><configure node='urn:example:conf'>"
                                    "<x xmlns='jabber:x:data' type='submit'>"
                                    "<field var='FORM_TYPE' type='hidden'>"
                                    f"<value>{PUBSUB}#node_config</value></field>"
                                    "<field var='pubsub#access_model'><value>open</value></field>"
                                    "</x></configure></pubsub>")
        assert len(await get_items(stranger, "conf_owner@localhost", "urn:example:conf")) == 1
        await send_iq(alice, "set", f"<pubsub xmlns='{OWNER}'><delete node='urn:example:conf'/>"
                                    "</pubsub>")
        try:
            await get_items(stranger, "conf_owner@localhost", "urn:example:conf")
        except Failed as failed:
            assert failed.condition == "item-not-found"
        else:
            raise AssertionError("the node survived its deletion")
    finally:
        await alice.close()
        await stranger.close()


async def test_create_and_configure_then_create_again_is_a_conflict(server):
    alice, stranger = await users(server, "create_owner", "create_stranger")
    create = (f"<pubsub xmlns='{PUBSUB}'><create node='urn:example:made'/><configure>"
              "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
              f"<value>{PUBSUB}#node_config</value></field>"
              "<field var='pubsub#access_model'><value>open</value></field></x>"
              "</configure></pubsub>")
    try:
        await send_iq(alice, "set", create)
        assert await get_items(stranger, "create_owner@localhost", "urn:example:made") == []
        try:
            await send_iq(alice, "set", create)
        except Failed as failed:
            assert failed.condition == "conflict"
        else:
            raise AssertionError("created the same node twice")
    finally:
        await alice.close()
        await stranger.close()


# -- clients with entity capabilities (XEP-0115) ---------------------------------------------

def collect_events(client) -> asyncio.Queue:
    """A queue of the pubsub event messages *client* receives (slixmpp's own
    ``message`` event only fires for messages with a body)."""
    queue = asyncio.Queue()
    client.register_handler(Callback(
        "pubsub events", MatchXPath(f"{{{client.default_ns}}}message/{{{EVENT}}}event"),
        queue.put_nowait))
    return queue


async def next_event(queue, timeout=10):
    msg = await asyncio.wait_for(queue.get(), timeout)
    assert msg["type"] == "headline"
    return msg


def event_item(msg):
    """(node, item id, payload text) of a notification with one item."""
    items = msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
    item = items.find(f"{{{EVENT}}}item")
    return items.get("node"), item.get("id"), item[0].text


class CapsClient(Client):
    """A slixmpp client that announces XEP-0115 caps the way clients do
    (xep_0030 + xep_0115 + xep_0163): its presence carries ``<c/>`` whose ver
    hashes its disco features, ``NODE+notify`` for each of *notify* among
    them, and it answers the server's disco#info for ``node#ver`` itself.
    ``events``: the pubsub notifications it gets; ``disco_gets``: the
    disco#info requests it gets."""

    def __init__(self, jid, password, *, mechanism=None, notify=()):
        super().__init__(jid, password, mechanism=mechanism)
        for plugin in ("xep_0030", "xep_0115", "xep_0163"):
            self.register_plugin(plugin)
        self.notify = list(notify)
        self.events = collect_events(self)
        self.disco_gets = asyncio.Queue()
        self.register_handler(Callback(
            "disco#info gets", MatchXPath(f"{{{self.default_ns}}}iq/{{{DISCO_INFO}}}query"),
            lambda iq: iq["type"] == "get" and self.disco_gets.put_nowait(iq)))


async def caps_login(server, jid, password, notify=()) -> CapsClient:
    """Log in a :class:`CapsClient` interested in *notify* (not yet available)."""
    client = await login(server, jid, password,
                         client_cls=functools.partial(CapsClient, notify=notify))
    if client.notify:
        client.plugin["xep_0163"].add_interest(client.notify)
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    return client


async def subscribe(subscriber, owner):
    """*subscriber*'s account asks for *owner*'s presence and the owner's client
    approves by hand (RFC 6121 §3.1); returns once the subscriber's roster
    shows it (the push; Prosody does not hand the ``subscribed`` to clients)."""
    requests = asyncio.Queue()
    owner.add_event_handler("presence_subscribe", requests.put_nowait)
    try:
        subscriber.send_presence(pto=owner.boundjid.bare, ptype="subscribe")
        while (await asyncio.wait_for(requests.get(), 20))["from"].bare != \
                subscriber.boundjid.bare:
            pass
        owner.send_presence(pto=subscriber.boundjid.bare, ptype="subscribed")
    finally:
        owner.del_event_handler("presence_subscribe", requests.put_nowait)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        item = (await subscriber.fetch_roster()).get(owner.boundjid.bare, {})
        if item.get("subscription") in ("to", "both") and "ask" not in item:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{subscriber.boundjid}: {owner.boundjid.bare} is {item}")
        await subscriber.roster_pushed(deadline)        # a change comes with a push


async def share_presence(owner, contact):
    """Subscription ``both`` between two accounts, the contact asking first:
    the owner shares presence with the contact before the contact's presence
    (with its caps) reaches the owner's PEP service."""
    await subscribe(contact, owner)
    await subscribe(owner, contact)


async def fresh(server, *names):
    """Accounts with fresh names, so that no roster state leaks between tests."""
    n = next(_fresh)
    for name in names:
        server.adduser(f"{name}{n}@localhost", "pw")
    return [f"{name}{n}@localhost" for name in names]


_fresh = itertools.count(1)


# -- notifications (XEP-0163 §4) -------------------------------------------------------------

async def test_the_owners_resources_are_notified_as_their_caps_ask(server):
    """XEP-0163 §4 3: notifications go to "all of the account owner's available
    resources (subject to notification filtering)"; XEP-0060 §9.2: nothing
    for a NodeID a client has not asked for with NodeID+notify. The
    publishing resource announces no caps and gets nothing; the one that asks
    gets it at its full JID, from the bare JID (§4.3.1)."""
    [owner] = await fresh(server, "own")
    first = await login(server, f"{owner}/first", "pw")
    await publish(first, "urn:example:notify-sign", note("sign"), "s")
    second = await caps_login(server, f"{owner}/second", "pw",
                              ["urn:example:notify", "urn:example:notify-sign"])
    try:
        first.send_presence()
        second.send_presence()
        # its caps are known once the last item of the other node it asks for arrives
        assert event_item(await next_event(second.events))[:2] == ("urn:example:notify-sign", "s")
        await publish(first, "urn:example:notify", note("news"), "n1")
        msg = await next_event(second.events)
        assert msg["from"] == slixmpp.JID(owner)
        assert msg["to"] == slixmpp.JID(f"{owner}/second")
        assert event_item(msg) == ("urn:example:notify", "n1", "news")
        await round_trip(first)              # notifications go out before the publish result
        assert first.messages.empty()
    finally:
        await first.close()
        await second.close()


async def test_the_account_advertises_what_pep_does(server):
    """XEP-0163 §6.1: the account's disco#info lists the XEP-0060 features it
    supports — auto-subscribe and filtered-notifications (both MUST, §5),
    last-published (XEP-0060 §6.1.7: MUST when the last item is sent by
    default) and the roster access model."""
    [owner_jid] = await fresh(server, "feat")
    client = await login(server, f"{owner_jid}/x", "pw")
    try:
        answer = await send_iq(client, "get", f"<query xmlns='{DISCO_INFO}'/>", to=owner_jid)
        features = {f.get("var") for f in answer.iter(f"{{{DISCO_INFO}}}feature")}
        for name in ("auto-subscribe", "filtered-notifications", "last-published",
                     "access-roster"):
            assert f"{PUBSUB}#{name}" in features, name
    finally:
        await client.close()


async def test_a_client_without_notify_gets_no_avatar(server):
    """XEP-0060 §9.2: "The server MUST NOT send notifications related to any
    NodeIDs that the contact's client has not asked for via the relevant
    NodeID+notify disco#info feature". A contact with two clients: one asks
    for avatar metadata (XEP-0084) and nicknames, the other (as profanity)
    only for nicknames; only the first gets the avatar, at its full JID
    (XEP-0163 §4.3.2 3), when it becomes known and when it is published."""
    owner_jid, contact_jid = await fresh(server, "av_owner", "av_contact")
    owner = await caps_login(server, f"{owner_jid}/desk", "pw")
    gajim = await caps_login(server, f"{contact_jid}/gajim", "pw", [AVATAR_METADATA, NICK])
    profanity = None
    try:
        await publish(owner, NICK, f"<nick xmlns='{NICK}'>Owner</nick>", "current")
        await publish(owner, AVATAR_METADATA, f"<metadata xmlns='{AVATAR_METADATA}'/>", "a1")
        owner.send_presence()
        gajim.send_presence()
        await share_presence(owner, gajim)
        # once the contact's presence reaches the owner, gajim gets both last items
        got = {event_item(await next_event(gajim.events))[0] for _ in range(2)}
        assert got == {NICK, AVATAR_METADATA}

        profanity = await caps_login(server, f"{contact_jid}/profanity", "pw", [NICK])
        profanity.send_presence()
        assert event_item(await next_event(profanity.events))[:2] == (NICK, "current")

        await publish(owner, AVATAR_METADATA, f"<metadata xmlns='{AVATAR_METADATA}'/>", "a2")
        msg = await next_event(gajim.events)
        assert msg["to"] == slixmpp.JID(f"{contact_jid}/gajim")
        assert event_item(msg)[:2] == (AVATAR_METADATA, "a2")
        await round_trip(profanity)
        assert profanity.events.empty(), profanity.events.get_nowait()
    finally:
        for client in (owner, gajim, profanity):
            if client is not None:
                await client.close()


async def test_a_contact_coming_online_gets_the_last_item_once(server):
    """XEP-0163 §4.3.3 2 and §4.3.4: a newly-available resource of a
    subscriber that asks for the node gets the last published item, stamped
    with XEP-0203 delay (the §4.3.4 example; XEP-0060 §6.1.7). A presence
    update with the same caps is not a new availability (Prosody sends
    nothing either); coming back after unavailable is."""
    owner_jid, contact_jid = await fresh(server, "lp_owner", "lp_contact")
    owner = await caps_login(server, f"{owner_jid}/desk", "pw")
    contact = await caps_login(server, f"{contact_jid}/first", "pw")
    later = None
    try:
        owner.send_presence()
        contact.send_presence()
        await share_presence(owner, contact)
        await publish(owner, "urn:example:mood", note("happy"), "m1")

        later = await caps_login(server, f"{contact_jid}/later", "pw", ["urn:example:mood"])
        later.send_presence()
        msg = await next_event(later.events)
        assert msg["from"] == slixmpp.JID(owner_jid)
        assert msg["to"] == slixmpp.JID(f"{contact_jid}/later")
        assert event_item(msg) == ("urn:example:mood", "m1", "happy")
        assert msg.xml.find(f"{{{DELAY}}}delay").get("stamp").endswith("Z")

        later.send_presence(pshow="away")               # same caps: an update
        await round_trip(later)                         # handled after the presence
        assert later.events.empty(), later.events.get_nowait()

        later.send_presence(ptype="unavailable")
        later.send_presence()
        assert event_item(await next_event(later.events))[:2] == ("urn:example:mood", "m1")
    finally:
        for client in (owner, contact, later):
            if client is not None:
                await client.close()


async def test_a_subscription_approval_brings_the_last_item(server):
    """XEP-0060 §9.1.2: a contact that gets a presence subscription is
    auto-subscribed; §6.1.7 and the node's send_last_published_item
    (on_sub_and_presence, XEP-0163 §4.3.4) send it the last item then. The
    contact's presence (with caps) already reached the owner — the owner is
    subscribed to it — but the owner did not share presence, so nothing came
    until the owner approves."""
    owner_jid, contact_jid = await fresh(server, "ap_owner", "ap_contact")
    owner = await caps_login(server, f"{owner_jid}/desk", "pw")
    contact = await caps_login(server, f"{contact_jid}/pc", "pw",
                               ["urn:example:status", "urn:example:own"])
    try:
        await publish(owner, "urn:example:status", note("here"), "st1")
        await publish(contact, "urn:example:own", note("mine"), "o1")
        owner.send_presence()
        contact.send_presence()
        # the contact's own node: its caps are verified (and cached) by then
        assert event_item(await next_event(contact.events))[:2] == ("urn:example:own", "o1")

        await subscribe(owner, contact)         # the owner now sees the contact's presence
        await round_trip(contact)               # the contact's 'subscribed' was handled
        assert contact.events.empty(), contact.events.get_nowait()

        await subscribe(contact, owner)         # the owner approves
        msg = await next_event(contact.events)
        assert msg["to"] == slixmpp.JID(f"{contact_jid}/pc")
        assert event_item(msg) == ("urn:example:status", "st1", "here")
    finally:
        await owner.close()
        await contact.close()


async def test_send_last_published_item_never_is_kept(server):
    """XEP-0060 §17.4.4 send_last_published_item: PEP's default is
    on_sub_and_presence (XEP-0163 §4.3.4), shown in the configuration form;
    a node published with ``never`` sends no last item on presence, and is a
    precondition of later publish-options (§7.1.5)."""
    [owner_jid] = await fresh(server, "sl_owner")
    owner = await login(server, f"{owner_jid}/pub", "pw")
    reader = None
    try:
        await publish(owner, "urn:example:quiet", note("q"), "q1",
                      options={"pubsub#send_last_published_item": "never"})
        await publish(owner, "urn:example:loud", note("l"), "l1")
        config = await send_iq(owner, "get", f"<pubsub xmlns='{OWNER}'>"
                                             "<configure node='urn:example:loud'/></pubsub>")
        fields = {f.get("var"): f.findtext("{jabber:x:data}value")
                  for f in config.iter("{jabber:x:data}field")}
        assert fields["pubsub#send_last_published_item"] == "on_sub_and_presence"
        try:
            await publish(owner, "urn:example:quiet", note("q"), "q2",
                          options={"pubsub#send_last_published_item": "on_sub_and_presence"})
        except Failed as failed:
            assert (failed.condition, failed.pubsub_condition) == (
                "conflict", "precondition-not-met")
        else:
            raise AssertionError("send_last_published_item never was not kept")

        reader = await caps_login(server, f"{owner_jid}/reader", "pw",
                                  ["urn:example:quiet", "urn:example:loud"])
        reader.send_presence()
        assert event_item(await next_event(reader.events))[:2] == ("urn:example:loud", "l1")
        await round_trip(reader)
        assert reader.events.empty(), reader.events.get_nowait()
    finally:
        await owner.close()
        if reader is not None:
            await reader.close()


async def node_config(client, node) -> dict:
    config = await send_iq(client, "get", f"<pubsub xmlns='{OWNER}'>"
                                          f"<configure node='{node}'/></pubsub>")
    return {f.get("var"): f.findtext("{jabber:x:data}value")
            for f in config.iter("{jabber:x:data}field")}


async def test_a_node_stored_without_send_last_published_item_takes_the_asked_value(server):
    """A node stored before send_last_published_item was kept (or imported
    without it) sends the last item as PEP's default says (XEP-0163
    §4.3.4), and the first publish-options naming the field set it rather
    than failing the §7.1.5 precondition: such nodes used to meet only
    ``never``, which bookmark clients (XEP-0402) ask for."""
    [owner_jid] = await fresh(server, "old_owner")
    owner = await login(server, f"{owner_jid}/pub", "pw")
    try:
        await publish(owner, "urn:example:old-node", note("1"), "1")
        db = sqlite3.connect(server.data_dir / "xferd.sqlite", timeout=10)
        with db:
            db.execute("UPDATE pep_nodes SET config = '{}' WHERE username = ?",
                       (owner_jid.split("@")[0],))
        db.close()
        fields = await node_config(owner, "urn:example:old-node")
        assert fields["pubsub#send_last_published_item"] == "on_sub_and_presence"
        await publish(owner, "urn:example:old-node", note("2"), "2",
                      options={"pubsub#send_last_published_item": "never"})
        fields = await node_config(owner, "urn:example:old-node")
        assert fields["pubsub#send_last_published_item"] == "never"
        try:                        # from now on it is a precondition like any other
            await publish(owner, "urn:example:old-node", note("3"), "3",
                          options={"pubsub#send_last_published_item": "on_sub"})
        except Failed as failed:
            assert failed.pubsub_condition == "precondition-not-met"
        else:
            raise AssertionError("the adopted value was not kept")
    finally:
        await owner.close()


async def test_roster_access_model(server):
    """XEP-0060 §4.5: with access model ``roster`` only contacts in one of
    ``pubsub#roster_groups_allowed`` read (others: ``<not-authorized/>`` +
    ``<not-in-roster-group/>``, §6.5.9.7), and only they are auto-subscribed
    (§9.1.2 3) — the last item and notifications go to them alone."""
    owner_jid, friend_jid, colleague_jid = await fresh(server, "ro_owner", "ro_friend",
                                                       "ro_colleague")
    owner = await caps_login(server, f"{owner_jid}/desk", "pw")
    interest = ["urn:example:close", "urn:example:all"]
    friend = await caps_login(server, f"{friend_jid}/pc", "pw", interest)
    colleague = await caps_login(server, f"{colleague_jid}/pc", "pw", interest)
    clients = (owner, friend, colleague)
    try:
        for jid, group in ((friend_jid, "Friends"), (colleague_jid, "Work")):
            await send_iq(owner, "set", f"<query xmlns='{ROSTER}'><item jid='{jid}'>"
                                        f"<group>{group}</group></item></query>")
        await publish(owner, "urn:example:close", note("friends only"), "c1",
                      options={"pubsub#access_model": "roster",
                               "pubsub#roster_groups_allowed": ["Friends"]})
        await publish(owner, "urn:example:all", note("everyone"), "e1")
        for client in clients:
            client.send_presence()
        for client in (friend, colleague):
            await share_presence(owner, client)

        got = {event_item(await next_event(friend.events))[0] for _ in range(2)}
        assert got == {"urn:example:close", "urn:example:all"}
        assert event_item(await next_event(colleague.events))[0] == "urn:example:all"

        [(item_id, _)] = await get_items(friend, owner_jid, "urn:example:close")
        assert item_id == "c1"
        try:
            await get_items(colleague, owner_jid, "urn:example:close")
        except Failed as failed:
            assert (failed.type, failed.condition, failed.pubsub_condition) == (
                "auth", "not-authorized", "not-in-roster-group")
        else:
            raise AssertionError("a contact outside the allowed groups read the node")

        await publish(owner, "urn:example:close", note("again"), "c2")
        assert event_item(await next_event(friend.events))[:2] == ("urn:example:close", "c2")
        await round_trip(colleague)
        assert colleague.events.empty(), colleague.events.get_nowait()

        config = await send_iq(owner, "get", f"<pubsub xmlns='{OWNER}'>"
                                             "<configure node='urn:example:close'/></pubsub>")
        [groups] = [f for f in config.iter("{jabber:x:data}field")
                    if f.get("var") == "pubsub#roster_groups_allowed"]
        assert [v.text for v in groups.findall("{jabber:x:data}value")] == ["Friends"]
        assert {v.text for v in groups.iterfind("{jabber:x:data}option/{jabber:x:data}value")} \
            == {"Friends", "Work"}
    finally:
        for client in clients:
            await client.close()


# -- XEP-0283 ------------------------------------------------------------------------------------

async def test_moved_statement_is_readable_by_another_user(server):
    """The statement exactly as XEP-0283 §4.1 has it, fetched as moved.py's step 5 does."""
    old, verifier = await users(server, "moved_old", "moved_verifier")
    try:
        statement = f"<moved xmlns='{MOVED}'><new-jid>moved_old@new.example</new-jid></moved>"
        item_id = await publish(old, MOVED, statement, "current",
                                options={"pubsub#access_model": "open"})
        assert item_id == "current"
        [(got_id, payload)] = await get_items(verifier, "moved_old@localhost", MOVED,
                                              ids=["current"])
        assert got_id == "current"
        assert payload.tag == f"{{{MOVED}}}moved"
        assert payload.findtext(f"{{{MOVED}}}new-jid") == "moved_old@new.example"
    finally:
        await old.close()
        await verifier.close()


# -- subscriptions (needs the roster/presence modules) --------------------------------------------

async def roster_item(client, jid):
    answer = await send_iq(client, "get", f"<query xmlns='{ROSTER}'/>")
    for item in answer.iter(f"{{{ROSTER}}}item"):
        if item.get("jid") == jid:
            return item
    return None


async def test_a_contact_with_a_subscription_reads_a_presence_node(server):
    owner, contact = await users(server, "sub_owner", "sub_contact")
    owner.auto_authorize = None                 # answer by hand, as RFC 6121 §3.1.4
    owner.auto_subscribe = False
    requests = asyncio.Queue()
    owner.add_event_handler("presence_subscribe", requests.put_nowait)
    try:
        owner.send_presence()
        contact.send_presence()
        await publish(owner, "urn:example:friends", note("for contacts"), "f")

        contact.send_presence(pto="sub_owner@localhost", ptype="subscribe")
        request = await asyncio.wait_for(requests.get(), 10)
        assert request["from"].bare == "sub_contact@localhost"
        owner.send_presence(pto="sub_contact@localhost", ptype="subscribed")

        deadline = asyncio.get_running_loop().time() + 5
        while True:                             # the owner's item for the contact → from
            item = await roster_item(owner, "sub_contact@localhost")
            if item is not None and item.get("subscription") in ("from", "both"):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"subscription never became from: {item!r}")
            await owner.roster_pushed(deadline)     # a change comes with a push

        [(item_id, payload)] = await get_items(contact, "sub_owner@localhost",
                                               "urn:example:friends")
        assert item_id == "f" and note_text(payload) == "for contacts"
    finally:
        await owner.close()
        await contact.close()


# -- XEP-0191: what the owner blocked gets no notification ---------------------------------------

@pytest.mark.parametrize("item, desk_notified", [
    ("{contact}/phone", True),      # a full JID: that resource only (§6)
    ("localhost/phone", True),      # domain/resource: that resource of every account there
    ("localhost", False),           # the domain: every address at it
])
async def test_a_blocked_resource_of_a_contact_gets_no_notification(server, item,
                                                                    desk_notified):
    """XEP-0191 §3.3 and XEP-0163 §4.3.3 3: the server sends nothing on the
    owner's behalf to what the owner blocked — PEP notifications included,
    matched as the blocking module matches (§6) against each interested
    resource's full JID."""
    owner_jid, contact = await fresh(server, "pb_owner", "pb_contact")
    owner = await caps_login(server, f"{owner_jid}/desk", "pw")
    desk = await caps_login(server, f"{contact}/desk", "pw", ["urn:example:blocked"])
    phone = await caps_login(server, f"{contact}/phone", "pw", ["urn:example:blocked"])
    try:
        await publish(owner, "urn:example:blocked", note("before"), "b0")
        for client in (owner, desk, phone):
            client.send_presence()
        await share_presence(owner, desk)
        for client in (desk, phone):            # both resources are known to the owner
            assert event_item(await next_event(client.events))[1] == "b0"

        blocked = item.format(contact=contact)
        await send_iq(owner, "set", f"<block xmlns='urn:xmpp:blocking'>"
                                    f"<item jid='{blocked}'/></block>")
        await publish(owner, "urn:example:blocked", note("not for the phone"), "b1")
        # notifications go out before the publish is answered: whatever the
        # server sent the contact's resources is there before a ping's answer
        await desk.ping_server()
        await phone.ping_server()
        assert phone.events.empty(), phone.events.get_nowait()
        if desk_notified:
            msg = await next_event(desk.events)
            assert msg["from"] == slixmpp.JID(owner_jid)
            assert msg["to"] == slixmpp.JID(f"{contact}/desk")
            assert event_item(msg)[1] == "b1"
        else:
            assert desk.events.empty(), desk.events.get_nowait()
    finally:
        for client in (owner, desk, phone):
            await client.close()


# -- persistence -----------------------------------------------------------------------------------

async def test_nodes_and_items_survive_a_restart(make_server):
    srv = make_server(start=False)
    srv.adduser("alice@localhost", "alice-pass")
    srv.adduser("bob@localhost", "bob-pass")
    srv.start()
    alice = await login(srv, "alice@localhost/a", "alice-pass")
    await publish(alice, "urn:example:kept", note("one"), "1",
                  options={"pubsub#access_model": "open", "pubsub#max_items": "2"})
    await publish(alice, "urn:example:kept", note("two"), "2")
    await alice.close()
    assert srv.stop() == 0

    srv.start()                                 # same workdir, same ports
    bob = await login(srv, "bob@localhost/b", "bob-pass")
    try:
        got = await get_items(bob, "alice@localhost", "urn:example:kept")
        assert [(i, note_text(p)) for i, p in got] == [("1", "one"), ("2", "two")]
    finally:
        await bob.close()
    alice = await login(srv, "alice@localhost/a", "alice-pass")
    try:                                        # the configuration survived too
        await publish(alice, "urn:example:kept", note("three"), "3",
                      options={"pubsub#access_model": "open", "pubsub#max_items": "2"})
    finally:
        await alice.close()
