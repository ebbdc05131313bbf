"""RFC 6121 §4 presence: initial presence with probes and broadcast,
updates, unavailable (sent or by disconnecting), directed presence, and
the user's own resources seeing each other."""

from tests.harness import RawClient, login


async def befriend(server, new_user, *, both=True):
    """Two users, U and C; C subscribed to U ('from' on U's side) and, if
    *both*, U subscribed to C. Returns jids and the (not yet available) clients."""
    u_jid, c_jid = new_user("pu"), new_user("pc")
    u = await login(server, f"{u_jid}/home", "pw")
    c = await login(server, f"{c_jid}/home", "pw")
    # the server handles a stream's stanzas in order: a ping answered after
    # a subscription stanza means that stanza has been handled
    c.send_presence(pto=u_jid, ptype="subscribe")
    await c.ping_server()
    u.send_presence(pto=c_jid, ptype="subscribed")
    if both:
        u.send_presence(pto=c_jid, ptype="subscribe")
        await u.ping_server()
        c.send_presence(pto=u_jid, ptype="subscribed")
    await c.ping_server()
    await u.ping_server()
    await u.quiet()
    await c.quiet()
    return u_jid, c_jid, u, c


async def test_initial_presence_is_broadcast_and_probes_are_answered(server, new_user):
    u_jid, c_jid, u, c = await befriend(server, new_user)
    c.send_presence(pstatus="at work")
    await c.ping_server()
    u.send_presence(pstatus="hello", ppriority=5)
    # C (subscribed to U) sees U come online
    seen = await c.next_presence(type=None, sender=u_jid)
    assert str(seen["from"]) == f"{u_jid}/home" and seen["status"] == "hello"
    assert seen["priority"] == 5
    # U's probe to C (U has 'both') is answered with C's current presence
    probed = await u.next_presence(type=None, sender=c_jid)
    assert str(probed["from"]) == f"{c_jid}/home" and probed["status"] == "at work"
    await u.close()
    await c.close()


async def test_updates_and_unavailable_on_disconnect(server, new_user):
    u_jid, c_jid, u, c = await befriend(server, new_user)
    c.send_presence()
    u.send_presence()
    await c.next_presence(type=None, sender=u_jid)
    await c.ping_server()
    await c.quiet(via=u)        # a probe answer may duplicate the initial presence
    u.send_presence(pshow="away", pstatus="lunch")
    update = await c.next_presence(sender=u_jid)
    assert update["show"] == "away" and update["status"] == "lunch"
    await u.close()                                  # just hang up
    gone = await c.next_presence(type="unavailable", sender=u_jid)
    assert str(gone["from"]) == f"{u_jid}/home"
    await c.close()


async def test_only_subscribers_get_presence(server, new_user):
    u_jid, c_jid, u, c = await befriend(server, new_user, both=False)   # C has 'to'
    stranger_jid = new_user("ps")
    stranger = await login(server, f"{stranger_jid}/x", "pw")
    stranger.send_presence()
    c.send_presence()
    await stranger.ping_server()
    await c.ping_server()
    u.send_presence()
    await c.next_presence(type=None, sender=u_jid)           # C is subscribed to U
    # U has no subscription to C: no probe, so C's presence does not reach U
    assert not [p for p in await u.quiet(via=c) if p["from"].bare == c_jid]
    assert not [p for p in await stranger.quiet(via=u) if p["from"].bare == u_jid]
    # a stranger's probe is answered with unsubscribed, never with presence
    probe = stranger.make_presence(pto=u_jid, ptype="probe")
    probe.send()
    assert not [p for p in await stranger.quiet() if p["from"].bare == u_jid and
                p["type"] not in ("unsubscribed",)]
    await u.close()
    await c.close()
    await stranger.close()


async def test_own_resources_see_each_other_and_each_gets_its_own_presence_back(server, new_user):
    """RFC 6121 §4.2.2: the server "MUST also broadcast initial presence from
    the user's newly available resource to all of the user's available
    resources, including the resource that generated the presence
    notification in the first place"; §4.4.2 says the same of updates and
    §4.5.2 of unavailable presence. Clients rely on the echo to show their
    own account as online."""
    me = new_user("pr")
    a = await login(server, f"{me}/a", "pw")
    b = await login(server, f"{me}/b", "pw")
    a.send_presence(pstatus="A here")
    echo = await a.next_presence(sender=me)               # the first presence a gets
    assert (str(echo["from"]), echo["type"], echo["status"]) == (f"{me}/a", "available", "A here")
    b.send_presence(pstatus="B here")
    # b: its own presence first, then that of the other available resource
    got = [await b.next_presence(sender=me) for _ in range(2)]
    assert [(str(p["from"]), p["status"]) for p in got] == [(f"{me}/b", "B here"),
                                                            (f"{me}/a", "A here")]
    got = await a.next_presence(sender=me)
    assert (str(got["from"]), got["status"]) == (f"{me}/b", "B here")
    # an update (§4.4.2) reaches both, the sender included
    a.send_presence(pshow="away", pstatus="A away")
    for client in (a, b):
        got = await client.next_presence(sender=me)
        assert (str(got["from"]), got["show"], got["status"]) == (f"{me}/a", "away", "A away")
    # unavailable (§4.5.2): both again; nothing else arrives
    b.send_presence(ptype="unavailable", pstatus="bye")
    for client in (b, a):
        got = await client.next_presence(sender=me)
        assert (str(got["from"]), got["type"], got["status"]) == (f"{me}/b", "unavailable", "bye")
    assert not await a.quiet(via=b)
    assert not await b.quiet()
    await a.close()
    await b.close()


async def test_own_presence_echo_on_the_wire(server, new_user):
    """The echo as bytes: the initial presence comes back from the full JID
    to the full JID, with what the client put in it (RFC 6121 §4.2.2)."""
    me = new_user("pw")
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert("localhost"), me.split("@")[0], "pw", resource="wire")
    raw.send("<presence><show>chat</show><status>here</status><priority>5</priority></presence>")
    echo = await raw.expect("presence")
    assert echo.get("from") == f"{me}/wire" and echo.get("to") == f"{me}/wire"
    assert echo.get("type") is None
    assert [(child.tag.split("}")[1], child.text) for child in echo] == [
        ("show", "chat"), ("status", "here"), ("priority", "5")]
    raw.send("<presence type='unavailable'/>")
    echo = await raw.expect("presence")
    assert (echo.get("from"), echo.get("type")) == (f"{me}/wire", "unavailable")
    await raw.close()


async def test_directed_presence_and_its_cleanup(server, new_user):
    u_jid, stranger_jid = new_user("pd"), new_user("pd")
    u = await login(server, f"{u_jid}/r", "pw")
    stranger = await login(server, f"{stranger_jid}/r", "pw")
    stranger.send_presence()
    u.send_presence()
    await stranger.ping_server()
    await u.ping_server()
    u.send_presence(pto=f"{stranger_jid}/r", pstatus="just for you")
    got = await stranger.next_presence(type=None, sender=u_jid)
    assert got["status"] == "just for you"
    await u.close()                                   # RFC 6121 §4.6.3
    gone = await stranger.next_presence(type="unavailable", sender=u_jid)
    assert str(gone["from"]) == f"{u_jid}/r"
    await stranger.close()


async def test_presence_to_an_unavailable_full_jid_is_dropped(server, new_user):
    u_jid, other = new_user("pn"), new_user("pn")
    u = await login(server, f"{u_jid}/r", "pw")        # bound, never available
    sender = await login(server, f"{other}/r", "pw")
    sender.send_presence(pto=f"{u_jid}/r")
    assert not await u.quiet(via=sender)
    await u.close()
    await sender.close()
