"""XEP-0191 Blocking Command against a real server: the blocklist and its
pushes, what a block does to messages, IQs and presence in both directions
(resource by resource, for full-JID, domain/resource and domain items, and
for a contact on a federated server), the error cases, and a blocklist
surviving a restart. (JID matching, §6, is
unit-tested without a server: tests/unit/test_blocklist.py.)"""

import asyncio
import itertools

import pytest

from server.modules.blocking import PresenceSeen, covered_resources
from tests.harness import XferdProcess, ask, federate, login, round_trip

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


def kind(presence) -> str | None:
    return presence["type"] if presence["type"] not in ("available", "") else None


async def befriend(a, a_jid: str, b, b_jid: str) -> None:
    """Mutual subscriptions between two accounts (one client of each; both
    available), and every client of each quiet afterwards."""
    for x, x_jid, y, y_jid in ((a, a_jid, b, b_jid), (b, b_jid, a, a_jid)):
        x.send_presence(pto=y_jid, ptype="subscribe")
        await y.next_presence(type="subscribe", sender=x_jid, timeout=15)
        y.send_presence(pto=x_jid, ptype="subscribed")
        await x.next_presence(type="subscribed", sender=y_jid, timeout=15)
        await x.next_presence(type=None, sender=y_jid, timeout=15)   # §3.1.5: then y's


async def receives(client, *expected: tuple[str | None, str], timeout: float = 10) -> dict:
    """Wait until *client* got a presence of each (type, exact from) in
    *expected*; returns them by from. Other presences received meanwhile are
    kept aside and checked by :func:`nothing_else_from`."""
    missing, got = set(expected), {}
    deadline = asyncio.get_running_loop().time() + timeout
    while missing:
        left = deadline - asyncio.get_running_loop().time()
        try:
            presence = await asyncio.wait_for(client.presences.get(), max(left, 0.01))
        except asyncio.TimeoutError:
            raise AssertionError(f"{client.boundjid}: never got {sorted(missing, key=str)}; "
                                 f"got {client.aside}") from None
        key = (kind(presence), str(presence["from"]))
        if key in missing:
            missing.discard(key)
            got[key[1]] = presence
        else:
            client.aside.append(key)
    return got


async def nothing_else_from(client, bare: str, *, via) -> None:
    """Up to a round trip through *via* (see harness.round_trip), *client*
    got no presence from *bare* beyond what :func:`receives` waited for."""
    keys = client.aside + [(kind(p), str(p["from"])) for p in await client.quiet(via=via)]
    client.aside = []
    assert [key for key in keys if key[1].partition("/")[0] == bare] == [], client.boundjid


async def online(server, jid: str, *, status: str | None = None):
    client = await blocker(server, jid, "pw")
    client.aside = []
    client.send_presence(pstatus=status)
    return client


def is_blocked_error(stanza) -> bool:
    """§3.3's error: <not-acceptable/> + <blocked/>, type 'cancel' as in its example."""
    return (stanza["type"] == "error" and stanza["error"]["condition"] == "not-acceptable"
            and stanza["error"]["type"] == "cancel"
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
    assert answer.find("{jabber:client}error").get("type") == "cancel"
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


async def test_block_shows_every_resource_offline_on_both_sides(server):
    """XEP-0191 §3.3: "When the user blocks communications with a JID, the
    user's server MUST send unavailable presence information to the JID (but
    only if the JID is allowed to receive presence notifications from the
    user …)" — from each of the user's available resources; and "the user's
    server MUST NOT deliver any XML stanzas from the JID to the user", so the
    user's resources are told that each resource of the blocked contact they
    were shown went offline (their clients track presence per full JID: an
    unavailable from the bare JID leaves them showing the resources)."""
    user, contact = pair_of_users(server)
    home, work = await online(server, f"{user}/home"), await online(server, f"{user}/work")
    phone = await online(server, f"{contact}/phone", status="on the phone")
    laptop = await online(server, f"{contact}/laptop", status="on the laptop")
    await befriend(home, user, phone, contact)
    for client, other in ((home, phone), (work, phone), (phone, home), (laptop, home)):
        await client.quiet(via=other)

    await home.plugin["xep_0191"].block(contact, timeout=10)
    for client in (phone, laptop):
        await receives(client, ("unavailable", f"{user}/home"), ("unavailable", f"{user}/work"))
    for client in (home, work):
        await receives(client, ("unavailable", f"{contact}/phone"),
                       ("unavailable", f"{contact}/laptop"))
    # sent while the block was handled: a round trip to the server shows the rest
    for client, bare in ((home, contact), (work, contact), (phone, user), (laptop, user)):
        await nothing_else_from(client, bare, via=None)
    for client in (home, work, phone, laptop):
        await client.close()


async def test_full_jid_block_withdraws_presence_of_that_resource_only(server):
    """§6: <user@domain/resource> — "only that resource matches". §3.3 then
    applies to that resource alone: it sees the user go offline and the user
    sees it go offline, while the contact's other resource keeps seeing the
    user and being seen. Later presence from the user to the contact's bare
    JID (a broadcast, RFC 6121 §4.4.2) reaches only the resources not blocked.
    §3.4: "When the user unblocks communications with a JID, the user's server
    MUST send the user's current presence information to the JID", and the
    user sees the resource again."""
    user, contact = pair_of_users(server)
    ursula = await online(server, f"{user}/desk", status="at my desk")
    phone = await online(server, f"{contact}/phone", status="on the phone")
    laptop = await online(server, f"{contact}/laptop", status="on the laptop")
    await befriend(ursula, user, phone, contact)
    for client, other in ((ursula, phone), (phone, ursula), (laptop, ursula)):
        await client.quiet(via=other)

    await ursula.plugin["xep_0191"].block(f"{contact}/phone", timeout=10)
    await receives(phone, ("unavailable", f"{user}/desk"))
    await receives(ursula, ("unavailable", f"{contact}/phone"))
    await nothing_else_from(laptop, user, via=ursula)
    await nothing_else_from(ursula, contact, via=laptop)

    # a message to the contact's bare JID: both resources have priority 0, so
    # both would get it (RFC 6121 §8.5.2.1.1); the blocked phone does not
    ursula.send_message(mto=contact, mbody="for the laptop", mtype="chat")
    got = await asyncio.wait_for(laptop.messages.get(), 10)
    assert got["body"] == "for the laptop"
    # delivered to both in one handling: what the phone was sent is in once
    # its own ping comes back (ursula cannot ping the phone: she blocked it)
    await round_trip(phone)
    assert phone.messages.empty(), phone.messages.get_nowait()

    # the user's broadcast goes to the laptop only; the phone's presence stays out
    ursula.send_presence(pstatus="busy")
    assert (await receives(laptop, (None, f"{user}/desk")))[f"{user}/desk"]["status"] == "busy"
    await nothing_else_from(phone, user, via=None)      # the broadcast was one handling
    phone.send_presence(pstatus="phone again")
    laptop.send_presence(pstatus="laptop again")
    await receives(ursula, (None, f"{contact}/laptop"))
    await phone.ping_server()                           # the phone's presence was handled
    await nothing_else_from(ursula, contact, via=None)

    await ursula.plugin["xep_0191"].unblock(f"{contact}/phone", timeout=10)
    back = await receives(phone, (None, f"{user}/desk"))
    assert back[f"{user}/desk"]["status"] == "busy"
    again = await receives(ursula, (None, f"{contact}/phone"))
    assert again[f"{contact}/phone"]["status"] == "phone again"
    ursula.send_message(mto=contact, mbody="for both", mtype="chat")
    for client in (laptop, phone):
        assert (await asyncio.wait_for(client.messages.get(), 10))["body"] == "for both"
    for client in (ursula, phone, laptop):
        await client.close()


async def test_a_message_for_a_blocked_resource_alone_waits_offline(server):
    """§6: a block of <contact@domain/phone> covers that resource only. When it
    is the contact's only available resource, a message to the bare JID must
    not reach it: it is kept as for an offline user (RFC 6121 §8.5.2.2.1) and
    goes to the next resource that comes online."""
    user, contact = pair_of_users(server)
    ursula = await online(server, f"{user}/desk")
    phone = await online(server, f"{contact}/phone")
    await ursula.plugin["xep_0191"].block(f"{contact}/phone", timeout=10)
    ursula.send_message(mto=contact, mbody="not for the phone", mtype="chat")
    await ursula.ping_server()                       # the message was handled (stored)
    await round_trip(phone)
    assert phone.messages.empty(), phone.messages.get_nowait()
    laptop = await online(server, f"{contact}/laptop")
    got = await asyncio.wait_for(laptop.messages.get(), 10)
    assert got["body"] == "not for the phone"
    for client in (ursula, phone, laptop):
        await client.close()


async def test_domain_and_domain_resource_blocks_and_unblock_all(make_server):
    """§6: <domain/resource> — "only that resource matches" (of the domain and,
    as XEP-0016 §2.1 has it, of every account there); <domain> — "the domain
    itself matches, as does any user@domain". §3.3 for each resource covered,
    both ways; §3.5 unblock all, then §3.4's current presence both ways."""
    srv = make_server(domains=("localhost", "example.test"))
    user, contact = "ursula@localhost", "conrad@example.test"
    srv.adduser(user, "pw")
    srv.adduser(contact, "pw")
    ursula = await online(srv, f"{user}/desk", status="at my desk")
    bot = await online(srv, f"{contact}/bot", status="beep")
    human = await online(srv, f"{contact}/human", status="hello")
    await befriend(ursula, user, human, contact)
    for client, other in ((ursula, human), (bot, ursula), (human, ursula)):
        await client.quiet(via=other)

    await ursula.plugin["xep_0191"].block("example.test/bot", timeout=10)
    await receives(bot, ("unavailable", f"{user}/desk"))
    await receives(ursula, ("unavailable", f"{contact}/bot"))
    await nothing_else_from(human, user, via=ursula)
    await nothing_else_from(ursula, contact, via=human)

    error, _ = await ask(ursula, "set", f"<unblock xmlns='{NS}'/>")          # §3.5
    assert error is None
    await receives(bot, (None, f"{user}/desk"))
    await receives(ursula, (None, f"{contact}/bot"))

    await ursula.plugin["xep_0191"].block("example.test", timeout=10)
    for client in (bot, human):
        await receives(client, ("unavailable", f"{user}/desk"))
    await receives(ursula, ("unavailable", f"{contact}/bot"), ("unavailable", f"{contact}/human"))

    error, _ = await ask(ursula, "set", f"<unblock xmlns='{NS}'/>")
    assert error is None
    for client in (bot, human):
        await receives(client, (None, f"{user}/desk"))
    await receives(ursula, (None, f"{contact}/bot"), (None, f"{contact}/human"))
    for client in (ursula, bot, human):
        await client.close()


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """Two federated servers, for contacts on another server."""
    servers = {domain: XferdProcess(tmp_path_factory.mktemp(domain), domains=(domain,))
               for domain in ("a.test", "b.test")}
    federate(servers)
    yield servers
    for proc in servers.values():
        proc.stop()


async def test_blocking_a_remote_contact(fed):
    """§3.3 and §3.4 for a contact on another server: the user's server knows
    the contact's resources only from the presence it delivered from them, and
    tells the user's resources that each of those went offline; a block of
    one remote resource (a full JID) reaches that resource only."""
    n = next(_names)
    user, contact = f"ursula{n}@a.test", f"conrad{n}@b.test"
    fed["a.test"].adduser(user, "pw")
    fed["b.test"].adduser(contact, "pw")
    ursula = await online(fed["a.test"], f"{user}/desk", status="at my desk")
    phone = await online(fed["b.test"], f"{contact}/phone", status="on the phone")
    laptop = await online(fed["b.test"], f"{contact}/laptop", status="on the laptop")
    await befriend(ursula, user, phone, contact)      # ursula is sent phone's and laptop's
    for client, other in ((ursula, phone), (phone, ursula), (laptop, ursula)):
        await client.quiet(via=other)

    await ursula.plugin["xep_0191"].block(contact, timeout=10)
    for client in (phone, laptop):
        await receives(client, ("unavailable", f"{user}/desk"))
    await receives(ursula, ("unavailable", f"{contact}/phone"),
                   ("unavailable", f"{contact}/laptop"))
    await ursula.plugin["xep_0191"].unblock(contact, timeout=10)
    for client in (phone, laptop):
        await receives(client, (None, f"{user}/desk"))
    await receives(ursula, (None, f"{contact}/phone"), (None, f"{contact}/laptop"))

    await ursula.plugin["xep_0191"].block(f"{contact}/laptop", timeout=10)
    await receives(laptop, ("unavailable", f"{user}/desk"))
    await receives(ursula, ("unavailable", f"{contact}/laptop"))
    await nothing_else_from(phone, user, via=ursula)
    await nothing_else_from(ursula, contact, via=phone)
    for client in (ursula, phone, laptop):
        await client.close()


def test_who_the_user_sees_is_bounded_and_follows_presence():
    """The addresses noted per user (for §3.3's "offline both ways") follow
    available and unavailable presence and never exceed the limit, the
    oldest forgotten first. No server needed."""
    seen = PresenceSeen(limit=3)
    for n in range(5):
        seen.note("u", f"c{n}@x/r", None)
    seen.note("u", "c3@x/r", "unavailable")
    seen.note("u", "c4@x/r", "error")                    # not presence of the contact
    assert seen.take("u", {"x"}) == ["c2@x/r", "c4@x/r"]
    assert seen.take("u", {"x"}) == []
    seen.note("u", "c@x/r", None)
    seen.forget("u")
    assert seen.take("u", {"x"}) == []


def test_covered_resources_of_a_contact():
    """§6 items that block some of a contact's resources, as full JIDs."""
    items = {"c@x/phone", "x/bot", "d@x/tv", "y/bot"}
    assert covered_resources(items, "c@x") == ["c@x/bot", "c@x/phone"]
    assert covered_resources(items, "x") == ["x/bot"]
    assert covered_resources(items, "c@x/phone") == []
    assert covered_resources({"c@x"}, "c@x") == []


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
