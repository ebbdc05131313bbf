"""RFC 6121 §3 and Appendix A: every row of the subscription state tables.

Two local users, U and C, each with an available resource. U is brought into
a state towards C, sends one subscription stanza, and then both rosters are
checked: U's item must be in the state RFC 6121 App. A.2 gives for the
outbound row, and C's in the matching state of App. A.3's inbound row (for
two users of one server the two views always mirror each other: U's Pending
Out is C's Pending In, U's To is C's From). C's resource must receive the
stanza exactly when C's state changes (App. A.3: no change, no delivery).
"""

import asyncio

import pytest

from tests.harness import login

# state → (subscription, ask) of the user's roster item, and the mirror state
VIEW = {
    "N": ("none", False), "N+PO": ("none", True), "N+PI": ("none", False),
    "N+PO+PI": ("none", True), "T": ("to", False), "T+PI": ("to", False),
    "F": ("from", False), "F+PO": ("from", True), "B": ("both", False),
}
MIRROR = {"N": "N", "N+PO": "N+PI", "N+PI": "N+PO", "N+PO+PI": "N+PO+PI",
          "T": "F", "T+PI": "F+PO", "F": "T", "F+PO": "T+PI", "B": "B"}

# how to reach a state, as (who, what) steps, with U's state after each step
REACH = {
    "N": [],
    "N+PO": [("U", "subscribe", "N+PO")],
    "N+PI": [("C", "subscribe", "N+PI")],
    "N+PO+PI": [("U", "subscribe", "N+PO"), ("C", "subscribe", "N+PO+PI")],
    "T": [("U", "subscribe", "N+PO"), ("C", "subscribed", "T")],
    "T+PI": [("U", "subscribe", "N+PO"), ("C", "subscribed", "T"), ("C", "subscribe", "T+PI")],
    "F": [("C", "subscribe", "N+PI"), ("U", "subscribed", "F")],
    "F+PO": [("C", "subscribe", "N+PI"), ("U", "subscribed", "F"), ("U", "subscribe", "F+PO")],
    "B": [("U", "subscribe", "N+PO"), ("C", "subscribed", "T"), ("C", "subscribe", "T+PI"),
          ("U", "subscribed", "B")],
}

# RFC 6121 App. A.2: U's state after U sends … (written out from the RFC text)
AFTER = {
    "subscribe": {"N": "N+PO", "N+PO": "N+PO", "N+PI": "N+PO+PI", "N+PO+PI": "N+PO+PI",
                  "T": "T", "T+PI": "T+PI", "F": "F+PO", "F+PO": "F+PO", "B": "B"},
    "subscribed": {"N": "N", "N+PO": "N+PO", "N+PI": "F", "N+PO+PI": "F+PO",
                   "T": "T", "T+PI": "B", "F": "F", "F+PO": "F+PO", "B": "B"},
    "unsubscribe": {"N": "N", "N+PO": "N", "N+PI": "N+PI", "N+PO+PI": "N+PI",
                    "T": "N", "T+PI": "N+PI", "F": "F", "F+PO": "F", "B": "F"},
    "unsubscribed": {"N": "N", "N+PO": "N+PO", "N+PI": "N", "N+PO+PI": "N+PO",
                     "T": "T", "T+PI": "T", "F": "N", "F+PO": "N+PO", "B": "T"},
}
# rows where U's subscribed is a pre-approval (§3.4): nothing is sent on
PRE_APPROVALS = {("subscribed", "N"), ("subscribed", "N+PO"), ("subscribed", "T")}


def view(roster: dict, jid: str) -> tuple[str, bool]:
    item = roster.get(jid)
    if item is None:
        return ("none", False)
    return (item["subscription"], item.get("ask") == "subscribe")


async def wait_for_views(u, c, u_jid, c_jid, u_state):
    """Check that both rosters show U in *u_state* and C in its mirror, once
    what U and C sent has been handled: the server handles a stream's stanzas
    in order and both users are local, so a pong to each proves it."""
    await u.ping_server()
    await c.ping_server()
    u_view = view(await u.fetch_roster(), c_jid)
    c_view = view(await c.fetch_roster(), u_jid)
    if u_view != VIEW[u_state] or c_view != VIEW[MIRROR[u_state]]:
        raise AssertionError(f"expected U {u_state} {VIEW[u_state]}, C {MIRROR[u_state]} "
                             f"{VIEW[MIRROR[u_state]]}; got U {u_view}, C {c_view}")


async def pair(server, new_user):
    u_jid, c_jid = new_user("u"), new_user("c")
    u = await login(server, f"{u_jid}/res", "pw")
    c = await login(server, f"{c_jid}/res", "pw")
    for client in (u, c):
        client.send_presence()
        await client.fetch_roster()        # answered after the presence was handled
    return u_jid, c_jid, u, c


def subscription_stanzas(presences, kind, sender) -> list:
    return [p for p in presences if p["type"] == kind and p["from"].bare == sender]


@pytest.mark.parametrize("kind", list(AFTER))
@pytest.mark.parametrize("state", list(REACH))
async def test_appendix_a_row(server, new_user, state, kind):
    u_jid, c_jid, u, c = await pair(server, new_user)
    for who, what, reached in REACH[state]:
        sender, to = (u, c_jid) if who == "U" else (c, u_jid)
        sender.send_presence(pto=to, ptype=what)
        await wait_for_views(u, c, u_jid, c_jid, reached)
    await c.quiet()                                      # forget the set-up traffic

    u.send_presence(pto=c_jid, ptype=kind)
    expected = AFTER[kind][state]
    await wait_for_views(u, c, u_jid, c_jid, expected)
    got = subscription_stanzas(await c.quiet(via=u), kind, u_jid)
    c_changed = MIRROR[state] != MIRROR[expected]
    assert len(got) == (1 if c_changed else 0), (state, kind, [str(p) for p in got])
    if (kind, state) in PRE_APPROVALS:
        assert (await u.fetch_roster()).get(c_jid, {}).get("approved") == "true"
    await u.close()
    await c.close()


async def test_pre_approval_accepts_the_later_request_at_once(server, new_user):
    u_jid, c_jid, u, c = await pair(server, new_user)
    u.send_presence(pto=c_jid, ptype="subscribed")            # pre-approve (§3.4)
    await u.ping_server()
    assert (await u.fetch_roster())[c_jid]["approved"] == "true"
    c.send_presence(pto=u_jid, ptype="subscribe")
    await wait_for_views(u, c, u_jid, c_jid, "F")
    assert "approved" not in (await u.fetch_roster())[c_jid]
    answer = await c.next_presence(type="subscribed", sender=u_jid)
    assert answer["from"].bare == u_jid
    # and U's presence follows at once (§3.1.5)
    await c.next_presence(type=None, sender=u_jid)
    assert not subscription_stanzas(await u.quiet(), "subscribe", c_jid), \
        "a pre-approved request is not shown to the user"
    await u.close()
    await c.close()


async def test_unsubscribed_cancels_a_pre_approval(server, new_user):
    u_jid, c_jid, u, c = await pair(server, new_user)
    u.send_presence(pto=c_jid, ptype="subscribed")
    await u.ping_server()
    u.send_presence(pto=c_jid, ptype="unsubscribed")
    await u.ping_server()
    assert "approved" not in (await u.fetch_roster())[c_jid]
    c.send_presence(pto=u_jid, ptype="subscribe")
    request = await u.next_presence(type="subscribe", sender=c_jid)
    assert request["to"].bare == u_jid
    await u.close()
    await c.close()


async def test_request_waits_for_an_offline_user_with_every_child_kept(server, new_user):
    u_jid, c_jid = new_user("u"), new_user("c")
    c = await login(server, f"{c_jid}/res", "pw")
    c.send_presence()
    request = c.make_presence(pto=u_jid, ptype="subscribe")
    request.append(__import__("slixmpp").xmlstream.ET.fromstring(
        "<moved xmlns='urn:xmpp:moved:1'><old-jid>old@example.org</old-jid></moved>"))
    request.send()
    await c.ping_server()                   # the request has been handled (stored)
    u = await login(server, f"{u_jid}/later", "pw")
    assert u.presences.empty(), "nothing is delivered before initial presence"
    u.send_presence()
    got = await u.next_presence(type="subscribe", sender=c_jid)
    assert got.xml.findtext("{urn:xmpp:moved:1}moved/{urn:xmpp:moved:1}old-jid") == "old@example.org"
    # still pending: delivered again at the next login, until answered
    await u.close()
    u = await login(server, f"{u_jid}/again", "pw")
    u.send_presence()
    await u.next_presence(type="subscribe", sender=c_jid)
    u.send_presence(pto=c_jid, ptype="subscribed")
    await wait_for_views(u, c, u_jid, c_jid, "F")
    await u.close()
    u = await login(server, f"{u_jid}/third", "pw")
    u.send_presence()
    assert not subscription_stanzas(await u.quiet(), "subscribe", c_jid)
    await u.close()
    await c.close()


async def test_removing_the_item_cancels_both_ways(server, new_user):
    u_jid, c_jid, u, c = await pair(server, new_user)
    for who, what, reached in REACH["B"]:
        sender, to = (u, c_jid) if who == "U" else (c, u_jid)
        sender.send_presence(pto=to, ptype=what)
        await wait_for_views(u, c, u_jid, c_jid, reached)
    iq = u.Iq(stype="set")
    iq.append(__import__("slixmpp").xmlstream.ET.fromstring(
        f"<query xmlns='jabber:iq:roster'><item jid='{c_jid}' subscription='remove'/></query>"))
    await iq.send(timeout=10)
    assert c_jid not in await u.fetch_roster()
    assert view(await c.fetch_roster(), u_jid) == ("none", False)
    got = await c.quiet(via=u)
    assert subscription_stanzas(got, "unsubscribe", u_jid)
    assert subscription_stanzas(got, "unsubscribed", u_jid)
    await u.close()
    await c.close()


async def test_subscribe_to_a_nonexistent_user_is_answered_unsubscribed(server, new_user):
    me = new_user("u")
    client = await login(server, f"{me}/res", "pw")
    client.send_presence()
    client.send_presence(pto="nobody-here@localhost", ptype="subscribe")
    answer = await client.next_presence(type="unsubscribed", sender="nobody-here@localhost")
    assert answer["from"].bare == "nobody-here@localhost"
    assert (await client.fetch_roster())["nobody-here@localhost"]["subscription"] == "none"
    await client.close()


async def test_subscription_state_and_pending_requests_survive_a_restart(make_server):
    srv = make_server()
    for name in ("una", "cal", "dee"):
        srv.adduser(f"{name}@localhost", "pw")
    u = await login(srv, "una@localhost/r", "pw")
    c = await login(srv, "cal@localhost/r", "pw")
    d = await login(srv, "dee@localhost/r", "pw")
    for client in (u, c, d):
        client.send_presence()
    c.send_presence(pto="una@localhost", ptype="subscribe")
    await u.next_presence(type="subscribe", sender="cal@localhost")
    u.send_presence(pto="cal@localhost", ptype="subscribed")
    await wait_for_views(u, c, "una@localhost", "cal@localhost", "F")
    d.send_presence(pto="una@localhost", ptype="subscribe")        # left unanswered
    await u.next_presence(type="subscribe", sender="dee@localhost")
    for client in (u, c, d):
        await client.close()
    srv.stop()
    srv.start()
    u = await login(srv, "una@localhost/again", "pw")
    c = await login(srv, "cal@localhost/again", "pw")
    await wait_for_views(u, c, "una@localhost", "cal@localhost", "F")
    u.send_presence()
    await u.next_presence(type="subscribe", sender="dee@localhost")
    await u.close()
    await c.close()
