"""RFC 6121 §2 rosters: get, set, remove, pushes to interested resources,
versioning (XEP-0237) and the errors for bad items."""

import asyncio

import pytest
import slixmpp

from tests.harness import RawClient, login

ROSTER = "jabber:iq:roster"


async def roster_set(client, item_xml: str):
    iq = client.Iq(stype="set")
    iq.append(slixmpp.xmlstream.ET.fromstring(f"<query xmlns='{ROSTER}'>{item_xml}</query>"))
    return await iq.send(timeout=10)


async def error_of(coro) -> str:
    with pytest.raises(slixmpp.exceptions.IqError) as info:
        await coro
    return info.value.iq["error"]["condition"]


async def test_set_get_update_remove_with_pushes_to_interested_resources(server, new_user):
    me = new_user("ros")
    phone = await login(server, f"{me}/phone", "pw")
    desk = await login(server, f"{me}/desk", "pw")
    lazy = await login(server, f"{me}/lazy", "pw")       # never asks for the roster
    assert await phone.fetch_roster() == {}
    assert await desk.fetch_roster() == {}
    pushes = {c: asyncio.Queue() for c in (phone, desk, lazy)}
    for client, queue in pushes.items():
        client.add_event_handler("roster_update", queue.put_nowait)

    await roster_set(phone, "<item jid='Nurse@Example.com' name='Nurse'>"
                            "<group>Servants</group><group>Friends</group></item>")
    for client in (phone, desk):
        push = await asyncio.wait_for(pushes[client].get(), 5)
        assert "nurse@example.com" in [str(j) for j in push["roster"]["items"]]
    assert pushes[lazy].empty()
    roster = await desk.fetch_roster()
    assert roster == {"nurse@example.com": {"jid": "nurse@example.com", "name": "Nurse",
                                            "subscription": "none",
                                            "groups": ["Servants", "Friends"]}}

    await roster_set(desk, "<item jid='nurse@example.com' name='Angelica'><group>Friends</group></item>")
    roster = await phone.fetch_roster()
    assert roster["nurse@example.com"]["name"] == "Angelica"
    assert roster["nurse@example.com"]["groups"] == ["Friends"]

    await roster_set(phone, "<item jid='nurse@example.com' subscription='remove'/>")
    assert await desk.fetch_roster() == {}
    for client in (phone, desk, lazy):
        await client.close()


async def test_client_cannot_set_subscription_state(server, new_user):
    me = new_user("ros")
    client = await login(server, f"{me}/a", "pw")
    await roster_set(client, "<item jid='x@example.com' subscription='both' ask='subscribe'/>")
    assert (await client.fetch_roster())["x@example.com"]["subscription"] == "none"
    assert "ask" not in (await client.fetch_roster())["x@example.com"]
    await client.close()


@pytest.mark.parametrize("item, condition", [
    ("<item jid='a@example.com'/><item jid='b@example.com'/>", "bad-request"),
    ("<item name='no jid'/>", "bad-request"),
    ("<item jid='a@b@c'/>", "jid-malformed"),
    ("<item jid='a@example.com'><group></group></item>", "not-acceptable"),
    ("<item jid='a@example.com'><group>x</group><group>x</group></item>", "bad-request"),
    ("<item jid='a@example.com' name='" + "n" * 2000 + "'/>", "not-acceptable"),
    ("<item jid='gone@example.com' subscription='remove'/>", "item-not-found"),
])
async def test_bad_roster_sets(server, new_user, item, condition):
    me = new_user("ros")
    client = await login(server, f"{me}/a", "pw")
    assert await error_of(roster_set(client, item)) == condition
    await client.close()


async def test_another_users_roster_is_forbidden(server, new_user):
    me, other = new_user("ros"), new_user("ros")
    client = await login(server, f"{me}/a", "pw")
    iq = client.Iq(stype="get", sto=other)
    iq.enable("roster")
    assert await error_of(iq.send(timeout=10)) == "forbidden"
    await client.close()


async def test_roster_versioning(server, new_user):
    me = new_user("ros")
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert(), me.split("@")[0], "pw")
    # the stream feature is announced after authentication
    assert b"urn:xmpp:features:rosterver" in raw.received
    raw.send(f"<iq type='get' id='r1'><query xmlns='{ROSTER}' ver=''/></iq>")
    first = await raw.expect("iq")
    ver = first.find(f"{{{ROSTER}}}query").get("ver")
    raw.send(f"<iq type='get' id='r2'><query xmlns='{ROSTER}' ver='{ver}'/></iq>")
    same = await raw.expect("iq")
    assert same.get("type") == "result" and len(same) == 0          # cache is current
    raw.send(f"<iq type='set' id='s1'><query xmlns='{ROSTER}'><item jid='v@example.com'/></query></iq>")
    push = await raw.expect("iq")
    new_ver = push.find(f"{{{ROSTER}}}query").get("ver")
    assert push.get("type") == "set" and new_ver != ver
    await raw.expect("iq")                                           # the result
    raw.send(f"<iq type='get' id='r3'><query xmlns='{ROSTER}' ver='{ver}'/></iq>")
    full = await raw.expect("iq")
    query = full.find(f"{{{ROSTER}}}query")
    assert query.get("ver") == new_ver and query[0].get("jid") == "v@example.com"
    await raw.close()


async def test_roster_survives_restart(make_server):
    srv = make_server()
    srv.adduser("rita@localhost", "pw")
    client = await login(srv, "rita@localhost/a", "pw")
    await roster_set(client, "<item jid='keep@example.com' name='Keep'><group>G</group></item>")
    await client.close()
    srv.stop()
    srv.start()
    client = await login(srv, "rita@localhost/b", "pw")
    assert (await client.fetch_roster())["keep@example.com"]["groups"] == ["G"]
    await client.close()
