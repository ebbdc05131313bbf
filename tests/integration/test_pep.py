"""XEP-0163 PEP (the XEP-0060 subset in server/modules/pep.py) with real
slixmpp clients sending the XML that XEP-0283 and everyday clients send.

Each test uses its own node names (and, where roster state matters, its own
users) so the tests can share one server in any order.
"""

import asyncio
import itertools
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import login

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MOVED = "urn:xmpp:moved:1"
ROSTER = "jabber:iq:roster"


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
        fields = "".join(f"<field var='{var}'><value>{value}</value></field>"
                         for var, value in options.items())
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


# -- notifications -----------------------------------------------------------------------------

def collect_events(client) -> asyncio.Queue:
    """A queue of the pubsub event messages *client* receives (slixmpp's own
    ``message`` event only fires for messages with a body)."""
    queue = asyncio.Queue()
    client.register_handler(Callback(
        "pubsub events", MatchXPath(f"{{{client.default_ns}}}message/{{{EVENT}}}event"),
        queue.put_nowait))
    return queue


async def next_event(queue, timeout=5):
    msg = await asyncio.wait_for(queue.get(), timeout)
    assert msg["type"] == "headline"
    return msg


async def test_the_owners_other_resource_is_notified(server):
    first = await login(server, "alice@localhost/first", "alice-pass")
    second = await login(server, "alice@localhost/second", "alice-pass")
    events = collect_events(second)
    try:
        first.send_presence()
        second.send_presence()
        await first.ping_server()               # both presences processed
        await second.ping_server()
        await publish(first, "urn:example:notify", note("news"), "n1")
        msg = await next_event(events)
        assert msg["from"] == slixmpp.JID("alice@localhost")
        assert msg["to"] == slixmpp.JID("alice@localhost/second")
        item = msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item")
        assert msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items").get("node") == \
            "urn:example:notify"
        assert item.get("id") == "n1" and note_text(item[0]) == "news"
    finally:
        await first.close()
        await second.close()


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
    events = collect_events(contact)
    try:
        owner.send_presence()
        contact.send_presence()
        await publish(owner, "urn:example:friends", note("for contacts"), "f")
        await send_iq(owner, "get", f"<query xmlns='{ROSTER}'/>")    # an interested resource

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

        # and the contact is notified of the next publication (at its bare JID)
        await publish(owner, "urn:example:friends", note("again"), "g")
        msg = await next_event(events)
        assert msg["from"] == slixmpp.JID("sub_owner@localhost")
        item = msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item")
        assert item.get("id") == "g"
    finally:
        await owner.close()
        await contact.close()


# -- XEP-0191: what the owner blocked gets no notification ---------------------------------------

_blocking_owners = itertools.count(1)


@pytest.mark.parametrize("item, desk_notified", [
    ("{contact}/phone", True),      # a full JID: that resource only (§6)
    ("localhost/phone", True),      # domain/resource: that resource of every account there
    ("localhost", False),           # the domain: every address at it
])
async def test_a_blocked_resource_of_a_contact_gets_no_notification(server, item,
                                                                    desk_notified):
    """XEP-0191 §3.3: the server sends nothing on the owner's behalf to what
    the owner blocked — PEP notifications included, matched as the blocking
    module matches (§6). PEP used to check only the contact's bare JID and
    domain, so a block of ``contact@domain/phone`` or ``domain/phone`` still let
    the headline sent to the bare JID reach the phone."""
    n = next(_blocking_owners)
    owner_jid, contact = f"pb_owner{n}@localhost", f"pb_contact{n}@localhost"
    [owner] = await users(server, f"pb_owner{n}")
    server.adduser(contact, "pw")
    desk = await login(server, f"{contact}/desk", "pw")
    phone = await login(server, f"{contact}/phone", "pw")
    desk_events, phone_events = collect_events(desk), collect_events(phone)
    owner.auto_authorize = None
    owner.auto_subscribe = False
    requests, subscribed = asyncio.Queue(), asyncio.Queue()
    owner.add_event_handler("presence_subscribe", requests.put_nowait)
    desk.add_event_handler("presence_subscribed", subscribed.put_nowait)
    try:
        for client in (owner, desk, phone):
            client.send_presence()
        desk.send_presence(pto=owner_jid, ptype="subscribe")
        await asyncio.wait_for(requests.get(), 10)
        owner.send_presence(pto=contact, ptype="subscribed")
        # the owner's item is 'from' before its 'subscribed' is routed on
        await asyncio.wait_for(subscribed.get(), 10)

        blocked = item.format(contact=contact)
        await send_iq(owner, "set", f"<block xmlns='urn:xmpp:blocking'>"
                                    f"<item jid='{blocked}'/></block>")
        await publish(owner, "urn:example:blocked", note("not for the phone"), "b1")
        # notifications go out before the publish is answered: whatever the
        # server sent the contact's resources is there before a ping's answer
        await desk.ping_server()
        await phone.ping_server()
        assert phone_events.empty(), phone_events.get_nowait()
        if desk_notified:
            msg = await next_event(desk_events)
            assert msg["from"] == slixmpp.JID(owner_jid)
            assert msg["to"] == slixmpp.JID(f"{contact}/desk")
            item_el = msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item")
            assert item_el.get("id") == "b1"
        else:
            assert desk_events.empty(), desk_events.get_nowait()
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
