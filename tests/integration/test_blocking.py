"""XEP-0191 Blocking Command against a real server: the blocklist and its
pushes, what a block does to messages, IQs and presence in both directions,
the error cases, and a blocklist surviving a restart. (JID matching, §6, is
unit-tested without a server: tests/unit/test_blocklist.py.)"""

import asyncio
import itertools

from tests.harness import ask, login, round_trip

NS = "urn:xmpp:blocking"
ERRORS_NS = "urn:xmpp:blocking:errors"
_names = itertools.count(1)


async def blocker(server, jid: str, password: str):
    client = await login(server, jid, password)
    client.register_plugin("xep_0191")
    client.pushes = asyncio.Queue()
    client.add_event_handler("blocked", lambda iq: client.pushes.put_nowait(("block", iq)))
    client.add_event_handler("unblocked", lambda iq: client.pushes.put_nowait(("unblock", iq)))
    return client


def pair_of_users(server) -> tuple[str, str]:
    """Two fresh accounts (password 'pw'), so that no test sees another's blocks."""
    n = next(_names)
    user, contact = f"ursula{n}@localhost", f"conrad{n}@localhost"
    server.adduser(user, "pw")
    server.adduser(contact, "pw")
    return user, contact


async def next_message(client, timeout: float = 5):
    return await asyncio.wait_for(client.messages.get(), timeout)


async def no_message(client) -> None:
    """Nothing came to *client*. Every caller first waits for the bounce or
    refusal the server made while handling the message, so the decision is
    taken: a round trip to the server proves nothing was queued for *client*."""
    await round_trip(client)
    assert client.messages.empty(), client.messages.get_nowait()


def chat(sender, to: str, body: str) -> None:
    sender.make_message(mto=to, mbody=body, mtype="chat").send()


def is_blocked_error(stanza) -> bool:
    return (stanza["type"] == "error" and stanza["error"]["condition"] == "not-acceptable"
            and stanza.xml.find(f"{{jabber:client}}error/{{{ERRORS_NS}}}blocked") is not None)


# -- the commands ------------------------------------------------------------------------------

async def test_blocklist_round_trip_and_pushes(server):
    user, contact = pair_of_users(server)
    first = await blocker(server, f"{user}/one", "pw")
    second = await blocker(server, f"{user}/two", "pw")
    third = await blocker(server, f"{user}/three", "pw")     # no pushes until it asks
    assert await first.plugin["xep_0191"].get_blocked_jids(timeout=10) == set()
    await second.plugin["xep_0191"].get_blocked(timeout=10)

    await first.plugin["xep_0191"].block([contact, "spam.example"], timeout=10)
    assert {str(j) for j in await first.plugin["xep_0191"].get_blocked_jids(timeout=10)} == \
        {contact, "spam.example"}
    for client in (first, second):
        kind, push = await asyncio.wait_for(client.pushes.get(), 5)
        assert kind == "block"
        assert {str(item["jid"]) for item in push["block"]} == {contact, "spam.example"}

    await second.plugin["xep_0191"].unblock(contact, timeout=10)
    for client in (first, second):
        kind, push = await asyncio.wait_for(client.pushes.get(), 5)
        assert kind == "unblock"
        assert [str(item["jid"]) for item in push["unblock"]] == [contact]
    assert third.pushes.empty()
    assert {str(j) for j in await third.plugin["xep_0191"].get_blocked_jids(timeout=10)} == \
        {"spam.example"}

    # unblock all: an empty <unblock/>, pushed as such
    error, _ = await ask(third, "set", f"<unblock xmlns='{NS}'/>")
    assert error is None
    for client in (first, second, third):
        kind, push = await asyncio.wait_for(client.pushes.get(), 5)
        assert kind == "unblock" and len(push.xml.find(f"{{{NS}}}unblock")) == 0
    assert await first.plugin["xep_0191"].get_blocked_jids(timeout=10) == set()
    for client in (first, second, third):
        await client.close()


async def test_command_errors(server):
    user, contact = pair_of_users(server)
    ursula = await blocker(server, f"{user}/e", "pw")
    conrad = await blocker(server, f"{contact}/e", "pw")
    assert (await ask(ursula, "set", f"<block xmlns='{NS}'/>"))[0] == "bad-request"
    assert (await ask(ursula, "set", f"<block xmlns='{NS}'><item/></block>"))[0] == "bad-request"
    bad = f"<block xmlns='{NS}'><item jid='a@@b'/></block>"
    assert (await ask(ursula, "set", bad))[0] == "jid-malformed"
    # someone else's blocklist
    assert (await ask(conrad, "get", f"<blocklist xmlns='{NS}'/>", to=user))[0] == "forbidden"
    block = f"<block xmlns='{NS}'><item jid='{contact}'/></block>"
    assert (await ask(conrad, "set", block, to=user))[0] == "forbidden"
    assert await ursula.plugin["xep_0191"].get_blocked_jids(timeout=10) == set()
    await ursula.close()
    await conrad.close()


# -- what a block does -----------------------------------------------------------------------

async def test_blocked_messages_and_unblock(server):
    user, contact = pair_of_users(server)
    ursula = await blocker(server, f"{user}/m", "pw")
    conrad = await blocker(server, f"{contact}/m", "pw")
    chat(conrad, f"{user}/m", "before")
    assert (await next_message(ursula))["body"] == "before"

    await ursula.plugin["xep_0191"].block(contact, timeout=10)
    # §3.3: the blocked JID's message is not delivered; it gets <service-unavailable/>
    chat(conrad, f"{user}/m", "can you hear me?")
    bounce = await next_message(conrad)
    assert bounce["type"] == "error"
    assert bounce["error"]["condition"] == "service-unavailable"
    assert bounce.xml.find(f".//{{{ERRORS_NS}}}blocked") is None    # not told about the block
    await no_message(ursula)
    # the user's own message to the blocked JID: <not-acceptable/> + <blocked/>
    chat(ursula, f"{contact}/m", "hello?")
    refusal = await next_message(ursula)
    assert is_blocked_error(refusal)
    assert refusal["from"] == f"{contact}/m"
    await no_message(conrad)

    await ursula.plugin["xep_0191"].unblock(contact, timeout=10)
    chat(conrad, f"{user}/m", "after")
    assert (await next_message(ursula))["body"] == "after"
    chat(ursula, f"{contact}/m", "welcome back")
    assert (await next_message(conrad))["body"] == "welcome back"
    await ursula.close()
    await conrad.close()


async def test_blocked_iqs(server):
    user, contact = pair_of_users(server)
    ursula = await blocker(server, f"{user}/q", "pw")
    conrad = await blocker(server, f"{contact}/q", "pw")
    await ask(ursula, "set", "<vCard xmlns='vcard-temp'><FN>Ursula</FN></vCard>")
    assert (await ask(conrad, "get", "<vCard xmlns='vcard-temp'/>", to=user))[0] is None
    await ursula.plugin["xep_0191"].block(contact, timeout=10)
    # IQ get/set from the blocked JID, to the account or to a resource
    assert (await ask(conrad, "get", "<vCard xmlns='vcard-temp'/>", to=user))[0] == \
        "service-unavailable"
    assert (await ask(conrad, "get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{user}/q"))[0] == \
        "service-unavailable"
    # and the user's IQ to the blocked JID
    error, answer = await ask(ursula, "get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{contact}/q")
    assert error == "not-acceptable"
    assert answer.find(f"{{jabber:client}}error/{{{ERRORS_NS}}}blocked") is not None
    # the user's own server and own resources are never blocked
    await ursula.plugin["xep_0191"].block("localhost", timeout=10)
    await ursula.ping_server()
    other = await blocker(server, f"{user}/other", "pw")
    chat(other, f"{user}/q", "note to self")
    assert (await next_message(ursula))["body"] == "note to self"
    # a domain block covers every account there
    chat(conrad, f"{user}/q", "still me")
    assert (await next_message(conrad))["error"]["condition"] == "service-unavailable"
    for client in (ursula, conrad, other):
        await client.close()


async def test_full_jid_block_matches_that_resource_only(server):
    user, contact = pair_of_users(server)
    ursula = await blocker(server, f"{user}/f", "pw")
    phone = await blocker(server, f"{contact}/phone", "pw")
    laptop = await blocker(server, f"{contact}/laptop", "pw")
    await ursula.plugin["xep_0191"].block(f"{contact}/phone", timeout=10)
    chat(phone, f"{user}/f", "from the phone")
    assert (await next_message(phone))["error"]["condition"] == "service-unavailable"
    chat(laptop, f"{user}/f", "from the laptop")
    assert (await next_message(ursula))["body"] == "from the laptop"
    chat(ursula, f"{contact}/phone", "to the phone")
    assert is_blocked_error(await next_message(ursula))
    chat(ursula, f"{contact}/laptop", "to the laptop")
    assert (await next_message(laptop))["body"] == "to the laptop"
    for client in (ursula, phone, laptop):
        await client.close()


async def test_presence_while_blocked(server):
    """§3.3/§3.4 with mutual subscriptions: a block shows each side offline to
    the other, presence does not cross while it lasts, and an unblock brings
    it back."""
    user, contact = pair_of_users(server)
    ursula = await blocker(server, f"{user}/p", "pw")
    conrad = await blocker(server, f"{contact}/p", "pw")
    ursula.send_presence()
    conrad.send_presence()
    for a, a_jid, b, b_jid in ((ursula, user, conrad, contact), (conrad, contact, ursula, user)):
        a.send_presence(pto=b_jid, ptype="subscribe")
        await b.next_presence(type="subscribe", sender=a_jid)
        b.send_presence(pto=a_jid, ptype="subscribed")
        await a.next_presence(type="subscribed", sender=b_jid)
        await a.next_presence(type=None, sender=b_jid)          # §3.1.5: then b's presence
    await ursula.quiet()
    await conrad.quiet()

    await ursula.plugin["xep_0191"].block(contact, timeout=10)
    await conrad.next_presence(type="unavailable", sender=user)
    await ursula.next_presence(type="unavailable", sender=contact)
    # neither side's presence reaches the other, and nobody gets an error
    conrad.send_presence(pstatus="are you there?")
    ursula.send_presence(pstatus="busy")
    # a ping from each sender to the server proves its presence was handled; the
    # other's own round trip then proves nothing was queued for it meanwhile
    await conrad.ping_server()
    assert [p for p in await ursula.quiet() if p["from"].bare == contact] == []
    await ursula.ping_server()
    assert [p for p in await conrad.quiet() if p["from"].bare == user] == []
    # directed presence to the blocked JID is the user's own outbound stanza
    ursula.send_presence(pto=f"{contact}/p")
    refusal = await ursula.next_presence(type="error", sender=f"{contact}/p")
    assert is_blocked_error(refusal)

    await ursula.plugin["xep_0191"].unblock(contact, timeout=10)
    back = await conrad.next_presence(type=None, sender=user)
    assert back["status"] == "busy"
    again = await ursula.next_presence(type=None, sender=contact)
    assert again["status"] == "are you there?"
    await ursula.close()
    await conrad.close()


async def test_directed_presence_is_withdrawn_on_block(server):
    user, contact = pair_of_users(server)
    ursula = await blocker(server, f"{user}/d", "pw")
    conrad = await blocker(server, f"{contact}/d", "pw")
    conrad.send_presence()
    ursula.send_presence()
    ursula.send_presence(pto=f"{contact}/d", pstatus="psst")
    assert (await conrad.next_presence(type=None, sender=user))["status"] == "psst"
    await ursula.plugin["xep_0191"].block(contact, timeout=10)
    await conrad.next_presence(type="unavailable", sender=user)
    await ursula.close()
    server.wait_for_log(f"{user}/d>: closed")      # ursula's session is gone …
    # no second unavailable when ursula leaves: the directed presence was withdrawn
    assert [p for p in await conrad.quiet() if p["from"].bare == user] == []
    await conrad.close()


# -- persistence ---------------------------------------------------------------------------

async def test_blocklist_survives_a_restart(make_server):
    srv = make_server(start=False)
    srv.adduser("alice@localhost", "alice-pass")
    srv.adduser("bob@localhost", "bob-pass")
    srv.start()
    alice = await blocker(srv, "alice@localhost/r", "alice-pass")
    await alice.plugin["xep_0191"].block("bob@localhost", timeout=10)
    await alice.close()
    srv.stop()
    srv.start()
    alice = await blocker(srv, "alice@localhost/r", "alice-pass")
    assert {str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids(timeout=10)} == \
        {"bob@localhost"}
    bob = await blocker(srv, "bob@localhost/r", "bob-pass")
    chat(bob, "alice@localhost/r", "remember me?")
    assert (await next_message(bob))["error"]["condition"] == "service-unavailable"
    await no_message(alice)
    await alice.close()
    await bob.close()
