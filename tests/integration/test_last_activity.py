"""XEP-0012 Last Activity against a real server (slixmpp's xep_0012 client):
the server's uptime (§5), a user's last logout for those who may see the
user's presence (§3), queries to a resource (§4), persistence of the logout
across a restart, and the storage under it."""

import asyncio
import time

import pytest
import slixmpp

from server.xmpp.sasl import make_all_credentials
from storage.api import LastActivity
from storage.sqlite import MIGRATIONS, SQLiteStorage
from tests.harness import ask, login, old_database

LAST = "jabber:iq:last"
INFO = "http://jabber.org/protocol/disco#info"


async def last_client(server, jid: str, password: str = "pw"):
    client = await login(server, jid, password)
    client.register_plugin("xep_0012")
    return client


async def last_of(client, jid: str):
    """(error condition, seconds, status text) of a jabber:iq:last query."""
    try:
        answer = await client.plugin["xep_0012"].get_last_activity(jid, timeout=10)
    except slixmpp.exceptions.IqError as exc:
        return exc.iq["error"]["condition"], None, None
    query = answer.xml.find(f"{{{LAST}}}query")
    return None, int(query.get("seconds")), query.text


async def share_presence(user, contact, user_jid: str, contact_jid: str) -> None:
    """*contact* subscribes to *user*'s presence and *user* approves: the
    user's roster item for the contact becomes 'from' (RFC 6121 §3.1). Each
    client's stanzas are handled in order, so a ping answered after one
    means it has been handled."""
    contact.send_presence(pto=user_jid, ptype="subscribe")
    await contact.ping_server()
    user.send_presence(pto=contact_jid, ptype="subscribed")
    await user.ping_server()
    roster = await user.fetch_roster()
    assert roster[contact_jid]["subscription"] == "from", roster


# -- §5: the server ----------------------------------------------------------------------

async def test_the_server_answers_with_its_uptime(make_server):
    """§5: "The seconds attribute specifies how long the host has been running
    since it was last (re-)started", and the query "SHOULD NOT contain XML
    character data"."""
    before = time.monotonic()
    srv = make_server(start=False)
    srv.adduser("alice@localhost", "alice-pass")
    srv.start()
    alice = await last_client(srv, "alice@localhost/up", "alice-pass")
    error, seconds, text = await last_of(alice, "localhost")
    assert error is None
    assert 0 <= seconds <= time.monotonic() - before + 1
    assert not text
    await alice.close()


async def test_jabber_iq_last_is_announced(server):
    """§6: support is announced in disco#info — the server's, and an
    account's, since the server answers for it."""
    alice = await login(server, "alice@localhost/d", "alice-pass")
    for jid in ("localhost", "bob@localhost"):
        error, answer = await ask(alice, "get", f"<query xmlns='{INFO}'/>", to=jid)
        assert error is None
        assert LAST in {f.get("var") for f in answer.iter(f"{{{INFO}}}feature")}, jid
    await alice.close()


# -- §3: an account ----------------------------------------------------------------------

async def test_a_contact_sees_zero_while_online_then_the_time_since_logout(server, new_user):
    """§3: with a connected resource the answer is seconds='0' and empty;
    after the last resource went away, the seconds since then. The user's
    own query is answered too (and is 0: the user is connected)."""
    u_jid, c_jid = new_user("lu"), new_user("lc")
    u = await last_client(server, f"{u_jid}/home")
    c = await last_client(server, f"{c_jid}/home")
    await share_presence(u, c, u_jid, c_jid)
    c.send_presence()
    u.send_presence()
    await c.next_presence(type=None, sender=u_jid)

    assert await last_of(c, u_jid) == (None, 0, None)
    assert await last_of(u, u_jid) == (None, 0, None)

    hung_up = time.time()
    await u.close()                       # no unavailable presence: just hang up
    # the server tells the contact the resource is gone once the logout is
    # recorded (slixmpp sends no unavailable presence of its own on close)
    await c.next_presence(type="unavailable", sender=u_jid)
    error, seconds, text = await last_of(c, u_jid)
    # a new user with no logout recorded would be <service-unavailable/>
    assert error is None
    assert 0 <= seconds <= time.time() - hung_up + 1
    assert not text
    await c.close()


async def test_who_may_not_see_presence_is_forbidden(server, new_user):
    """§3: "If the requesting entity is not authorized to view the user's
    presence information … MUST return a <forbidden/> error"; §4: the same
    for a query to a resource, which is then not delivered. A contact the user
    is merely subscribed to ('to') may not see the user's presence either. A
    user that does not exist is <service-unavailable/> (RFC 6121 §8.5.1)."""
    u_jid, c_jid, s_jid = new_user("fu"), new_user("fc"), new_user("fs")
    u = await last_client(server, f"{u_jid}/home")
    c = await last_client(server, f"{c_jid}/home")
    stranger = await last_client(server, f"{s_jid}/home")
    # the user subscribes to the contact: the user's item for the contact is 'to'
    await share_presence(c, u, c_jid, u_jid)
    assert (await u.fetch_roster())[c_jid]["subscription"] == "to"
    u.plugin["xep_0012"].set_last_activity(seconds=4242, status="idle")

    for asker in (stranger, c):
        assert (await last_of(asker, u_jid))[0] == "forbidden"
        assert (await last_of(asker, f"{u_jid}/home"))[0] == "forbidden"
    assert (await last_of(stranger, "nobody@localhost"))[0] == "service-unavailable"
    await u.close()
    await c.close()
    await stranger.close()


async def test_a_query_to_a_resource_reaches_it_for_a_contact(server, new_user):
    """§4: for who may see the user's presence, the server delivers the
    query to the resource and its client answers (slixmpp's own XEP-0012
    integration test: the idle time it set, with its status)."""
    u_jid, c_jid = new_user("ru"), new_user("rc")
    u = await last_client(server, f"{u_jid}/home")
    c = await last_client(server, f"{c_jid}/home")
    await share_presence(u, c, u_jid, c_jid)
    u.plugin["xep_0012"].set_last_activity(seconds=4242, status="coucou")
    error, seconds, text = await last_of(c, f"{u_jid}/home")
    assert error is None
    assert 4242 <= seconds < 4250 and text == "coucou"
    # another resource of the user's own is allowed too
    me = await last_client(server, f"{u_jid}/desk")
    assert (await last_of(me, f"{u_jid}/home"))[0] is None
    await close(u, c, me)


async def test_the_last_logout_and_its_status_survive_a_restart(make_server):
    """§3: the seconds since the user last logged out and "the status message
    of the last unavailable presence received from the user", kept in
    storage: still known after the server restarted."""
    srv = make_server(start=False)
    for name in ("romeo", "juliet"):
        srv.adduser(f"{name}@localhost", "pw")
    srv.start()
    juliet = await last_client(srv, "juliet@localhost/balcony")
    romeo = await last_client(srv, "romeo@localhost/orchard")
    await share_presence(juliet, romeo, "juliet@localhost", "romeo@localhost")
    assert (await last_of(romeo, "juliet@localhost"))[0] is None      # online: 0
    juliet.send_presence(pstatus="Here")
    juliet.send_presence(ptype="unavailable", pstatus="Heading Home")
    await juliet.ping_server()
    left = time.time()
    await juliet.close()
    await romeo.close()
    srv.stop()                 # waits for every session's teardown, then exits

    srv.start()
    romeo = await last_client(srv, "romeo@localhost/orchard")
    error, seconds, text = await last_of(romeo, "juliet@localhost")
    assert error is None
    assert text == "Heading Home"
    assert 0 <= seconds <= time.time() - left + 1
    await romeo.close()


async def test_available_again_forgets_the_unavailable_status(make_server):
    """Only the status of the *last* presence counts: an unavailable one
    followed by available, then a hang-up, leaves no status."""
    srv = make_server(start=False)
    for name in ("ann", "ben"):
        srv.adduser(f"{name}@localhost", "pw")
    srv.start()
    ann = await last_client(srv, "ann@localhost/a")
    ben = await last_client(srv, "ben@localhost/b")
    await share_presence(ann, ben, "ann@localhost", "ben@localhost")
    ann.send_presence(ptype="unavailable", pstatus="brb")
    ann.send_presence(pstatus="back")
    await ann.ping_server()
    await close(ann, ben)
    srv.stop()
    srv.start()
    ben = await last_client(srv, "ben@localhost/b")
    error, _, text = await last_of(ben, "ann@localhost")
    assert error is None and not text
    await ben.close()


async def close(*clients) -> None:
    for client in clients:
        await client.close()


# -- storage (the ``store`` fixture is tests/conftest.py's) ---------------------------------------

async def test_storage_round_trip_replace_and_cascade(store):
    assert await store.create_user("localhost", "ann", make_all_credentials("pw", iterations=4096))
    assert await store.get_last_activity("localhost", "ann") is None
    assert await store.set_last_activity("localhost", "ann", LastActivity(1000.5, "bye"))
    assert await store.get_last_activity("localhost", "ann") == LastActivity(1000.5, "bye")
    assert await store.set_last_activity("localhost", "ann", LastActivity(2000.0, None))
    assert await store.get_last_activity("localhost", "ann") == LastActivity(2000.0, None)
    # no account, no row (and no error): e.g. deleted while its last session closed
    assert not await store.set_last_activity("localhost", "ghost", LastActivity(1.0, None))
    assert await store.get_last_activity("localhost", "ghost") is None
    assert await store.delete_user("localhost", "ann")
    assert await store.create_user("localhost", "ann", make_all_credentials("pw", iterations=4096))
    assert await store.get_last_activity("localhost", "ann") is None


async def test_a_file_of_the_previous_schema_is_migrated(tmp_path):
    """A data file written before last activity existed gets the table, and
    what it held is still there."""
    path = tmp_path / "old.sqlite"
    db = old_database(path, 4, "old")
    db.commit()
    db.close()
    store = SQLiteStorage(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.user_exists("localhost", "old")
        assert await store.set_last_activity("localhost", "old", LastActivity(5.0, "x"))
        assert await store.get_last_activity("localhost", "old") == LastActivity(5.0, "x")
    finally:
        await store.close()


async def test_concurrent_logouts_of_different_users_are_all_recorded(store):
    creds = make_all_credentials("pw", iterations=4096)
    names = [f"u{i}" for i in range(20)]
    for name in names:
        assert await store.create_user("localhost", name, creds)
    done = await asyncio.gather(*(store.set_last_activity("localhost", name,
                                                          LastActivity(float(i), name))
                                  for i, name in enumerate(names)))
    assert all(done)
    for i, name in enumerate(names):
        assert await store.get_last_activity("localhost", name) == LastActivity(float(i), name)
