"""``xferd migrate`` run as a user would (``python -m server migrate`` in a
subprocess, passwords in the environment, certificates via --old-cafile and
--new-cafile) between real xferd processes across s2s.

a.test holds the old account, b.test the new one; the contacts live on c.test
(auto-moved on: XEP-0283 server-side roster update) and on d.test (auto-moved
switched off, as on a server without it: the request waits for the user).
z.test is routed to a port where nothing listens.
"""

import asyncio
import json
import os
import sys
from types import SimpleNamespace

import pytest

from server.client import Client, ClientError, IQError
from server.xmpp.stanza import E, iq
from tests.harness import REPO, XferdProcess, ask, federate, login, tool_report, unused_port

MOVED = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
ROSTER = "jabber:iq:roster"
BOOKMARKS = "storage:bookmarks"
NICK = "http://jabber.org/protocol/nick"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    servers = {
        "a": XferdProcess(tmp_path_factory.mktemp("a"), domains=("a.test",)),
        "b": XferdProcess(tmp_path_factory.mktemp("b"), domains=("b.test",)),
        "c": XferdProcess(tmp_path_factory.mktemp("c"), domains=("c.test",)),
        "d": XferdProcess(tmp_path_factory.mktemp("d"), domains=("d.test",),
                          overrides={"moved": {"auto_update": False}}),
    }
    nowhere = ("127.0.0.1", unused_port())
    federate({f"{name}.test": proc for name, proc in servers.items()},
             {f"{name}.test": {"z.test": nowhere} for name in servers})
    yield SimpleNamespace(**servers)
    for proc in servers.values():
        proc.stop()


_numbers = iter(range(1, 10_000))


def users(world, **names) -> SimpleNamespace:
    """Fresh accounts, password 'pw': users(world, alice='a', carol='c') → alice5@a.test …"""
    n = next(_numbers)
    made = {}
    for who, server in names.items():
        jid = f"{who}{n}@{server}.test"
        getattr(world, server).adduser(jid, "pw")
        made[who] = jid
    return SimpleNamespace(**made)


async def run_migrate(world, old, new, cwd, *args, old_password="pw", new_password="pw",
                      cafiles=True):
    """``xferd migrate`` in a subprocess; (exit status, stdout, stderr)."""
    # the state file without --state: $XDG_STATE_HOME/xferd/, here the test's directory
    env = dict(os.environ, XFERD_OLD_PASSWORD=old_password, XFERD_NEW_PASSWORD=new_password,
               PYTHONPATH=str(REPO), XDG_STATE_HOME=str(cwd))
    env.pop("XFERD_CONFIG", None)
    old_server, new_server = world.a, world.b
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "migrate", "--from", old, "--to", new,
        "--old-host", "127.0.0.1", "--old-port", str(old_server.c2s_port),
        "--new-host", "127.0.0.1", "--new-port", str(new_server.c2s_port),
        *(("--old-cafile", str(old_server.cert("a.test")),
           "--new-cafile", str(new_server.cert("b.test"))) if cafiles else ()), *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


report = tool_report


# -- setting the old account up with slixmpp clients ---------------------------------------------

async def roster(client) -> dict:
    return await client.fetch_roster()


async def wait_roster(client, jid, subscription, timeout=15):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        item = (await client.fetch_roster()).get(jid, {})
        if item.get("subscription") == subscription:
            return item
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid}: {jid} is {item}, wanted {subscription}")
        await client.roster_pushed(deadline)        # a change comes with a push


async def subscribe(asker, asker_jid, approver, approver_jid):
    """*asker* subscribes to *approver*'s presence, who approves."""
    asker.send_presence(pto=approver_jid, ptype="subscribe")
    await approver.next_presence(type="subscribe", sender=asker_jid, timeout=20)
    approver.send_presence(pto=asker_jid, ptype="subscribed")


async def set_item(client, jid, name=None, groups=()):
    name_attr = f" name='{name}'" if name else ""
    groups_xml = "".join(f"<group>{g}</group>" for g in groups)
    error, _ = await ask(client, "set", f"<query xmlns='{ROSTER}'><item jid='{jid}'{name_attr}>"
                                        f"{groups_xml}</item></query>")
    assert error is None


async def statement_of(client, owner):
    error, answer = await ask(client, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{MOVED}'>"
                                             "<item id='current'/></items></pubsub>", to=owner)
    if error:
        return error
    return answer.findtext(f".//{{{PUBSUB}}}item/{{{MOVED}}}moved/{{{MOVED}}}new-jid")


# -- the tests ---------------------------------------------------------------------------------

async def test_migration_copies_everything_and_contacts_follow(world, tmp_path):
    u = users(world, alice="a", newalice="b", carol="c", cid="c", fay="c", ned="c", dan="d",
              stranger="d")
    alice = await login(world.a, f"{u.alice}/setup", "pw")
    carol = await login(world.c, f"{u.carol}/x", "pw")
    cid = await login(world.c, f"{u.cid}/x", "pw")
    fay = await login(world.c, f"{u.fay}/x", "pw")
    dan = await login(world.d, f"{u.dan}/x", "pw")
    for client in (alice, carol, cid, fay, dan):
        client.send_presence()
    # names and groups first, then the subscriptions: carol both, cid to, fay from, dan both
    await set_item(alice, u.carol, "Carol", ["Friends"])
    await set_item(alice, u.cid, "Cid", ["Work"])
    await set_item(alice, u.fay, "Fay")
    await set_item(alice, u.dan, "Dan", ["Friends", "Work"])
    await set_item(alice, u.ned, "Ned")                       # no subscription at all
    await set_item(alice, "icq.example", "ICQ")                # a transport …
    await set_item(alice, "12345@icq.example", "Via ICQ")      # … and a contact through it
    for contact, jid in ((carol, u.carol), (cid, u.cid), (dan, u.dan)):
        await subscribe(alice, u.alice, contact, jid)
    for contact, jid in ((carol, u.carol), (fay, u.fay), (dan, u.dan)):
        await subscribe(contact, jid, alice, u.alice)
    for jid, subscription in ((u.carol, "both"), (u.cid, "to"), (u.fay, "from"),
                              (u.dan, "both")):
        await wait_roster(alice, jid, subscription)
    # vCard, bookmarks (private XML) and a PEP nick
    assert (await ask(alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice Example</FN>"
                                    "</vCard>"))[0] is None
    assert (await ask(alice, "set", f"<query xmlns='jabber:iq:private'><storage "
                                    f"xmlns='{BOOKMARKS}'><conference jid='room@muc.a.test' "
                                    "name='The Room' autojoin='true'/></storage></query>"))[0] \
        is None
    assert (await ask(alice, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{NICK}'>"
                                    f"<item id='current'><nick xmlns='{NICK}'>Al</nick></item>"
                                    "</publish></pubsub>"))[0] is None
    await alice.close()

    code, out, err = await run_migrate(world, u.alice, u.newalice, tmp_path, "--wait", "8")
    assert code == 0, (out, err)
    lines = report(out)
    assert lines[u.carol] == "auto-updated"
    assert lines[u.cid] == "auto-updated"
    assert lines[u.fay].startswith("waiting for manual approval (pre-approved")
    assert lines[u.dan] == "waiting for manual approval"
    assert lines[u.ned].startswith("roster only")
    assert lines["icq.example"] == "skipped: transport (no localpart)"
    assert lines["12345@icq.example"].startswith("skipped: contact through the transport")
    assert "[9/9]" in err and "roster 5/5" in err          # progress on stderr

    # the new account: roster items with names and groups, vCard, bookmarks, nick
    new = await login(world.b, f"{u.newalice}/check", "pw")
    items = await roster(new)
    assert set(items) == {u.carol, u.cid, u.fay, u.ned, u.dan}
    assert items[u.carol]["name"] == "Carol" and items[u.carol]["groups"] == ["Friends"]
    assert sorted(items[u.dan]["groups"]) == ["Friends", "Work"]
    assert items[u.carol]["subscription"] == "both"          # auto-moved, both ways
    assert items[u.cid]["subscription"] == "to"
    assert items[u.dan]["subscription"] == "none" and items[u.dan].get("ask") == "subscribe"
    _, vcard = await ask(new, "get", "<vCard xmlns='vcard-temp'/>")
    assert vcard.findtext(".//{vcard-temp}FN") == "Alice Example"
    _, private = await ask(new, "get", f"<query xmlns='jabber:iq:private'>"
                                       f"<storage xmlns='{BOOKMARKS}'/></query>")
    conference = private.find(f".//{{{BOOKMARKS}}}conference")
    assert conference.get("jid") == "room@muc.a.test" and conference.get("name") == "The Room"
    _, nick = await ask(new, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{NICK}'/></pubsub>")
    assert nick.findtext(f".//{{{NICK}}}nick") == "Al"

    # the statement is readable by a stranger on another server
    stranger = await login(world.d, f"{u.stranger}/x", "pw")
    assert await statement_of(stranger, u.alice) == u.newalice

    # the contacts' side: carol and cid were moved by their server; dan got the request
    await wait_roster(carol, u.newalice, "both")
    assert u.alice not in await roster(carol)     # old one removed ([moved] old_contact)
    await wait_roster(cid, u.newalice, "from")
    request = await dan.next_presence(type="subscribe", sender=u.newalice, timeout=5)
    assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == u.alice
    assert (await roster(fay)).get(u.newalice) is None      # fay must add the new JID herself

    # the state file records it all; dan approves by hand; a rerun sends nothing new
    # (in the user's state directory, not the working directory)
    assert not list(tmp_path.glob("xferd-migrate-*"))
    state_file = tmp_path / "xferd" / f"xferd-migrate-{u.alice}-{u.newalice}.json"
    assert (state_file.stat().st_mode & 0o777) == 0o600
    state = json.loads(state_file.read_text())
    assert set(state["done"]) >= {"roster", "vcard", "private", "pep", "statement", "outreach"}
    assert state["contacts"][u.dan]["sent"] == ["subscribed", "subscribe"]
    dan.send_presence(pto=u.newalice, ptype="subscribed")
    await wait_roster(new, u.dan, "to")
    assert (await ask(new, "set", "<vCard xmlns='vcard-temp'><FN>Changed</FN></vCard>"))[0] \
        is None
    await dan.quiet(via=new)                      # forget what came so far
    code, out, err = await run_migrate(world, u.alice, u.newalice, tmp_path, "--wait", "8")
    assert code == 0, (out, err)
    lines = report(out)
    assert lines[u.carol] == "auto-updated" and lines[u.dan] == "approved"
    assert "sending 0 subscription stanza(s)" in err and "done in an earlier run" in err
    assert not [p for p in await dan.quiet(via=new) if p["type"] == "subscribe"]
    _, vcard = await ask(new, "get", "<vCard xmlns='vcard-temp'/>")
    assert vcard.findtext(".//{vcard-temp}FN") == "Changed"  # not copied again
    for client in (new, stranger, carol, cid, fay, dan):
        await client.close()


async def test_dry_run_changes_nothing(world, tmp_path):
    u = users(world, dora="a", newdora="b", carol="c")
    dora = await login(world.a, f"{u.dora}/setup", "pw")
    await set_item(dora, u.carol, "Carol", ["Friends"])
    assert (await ask(dora, "set", "<vCard xmlns='vcard-temp'><FN>Dora</FN></vCard>"))[0] is None
    code, out, err = await run_migrate(world, u.dora, u.newdora, tmp_path, "--dry-run")
    assert code == 0, (out, err)
    assert "dry run" in out and u.carol in out and "Friends" in out
    assert f"<new-jid>{u.newdora}</new-jid>" in out
    assert list(tmp_path.iterdir()) == []                    # no state file
    assert await statement_of(dora, u.dora) == "item-not-found"
    new = await login(world.b, f"{u.newdora}/check", "pw")
    assert await roster(new) == {}
    _, vcard = await ask(new, "get", "<vCard xmlns='vcard-temp'/>")
    assert vcard.findtext(".//{vcard-temp}FN") is None
    await dora.close()
    await new.close()


async def test_wrong_password_exits_2_with_a_clear_message(world, tmp_path):
    u = users(world, walt="a", newwalt="b")
    code, out, err = await run_migrate(world, u.walt, u.newwalt, tmp_path,
                                       old_password="wrong")
    assert code == 2
    assert f"cannot log in to the old account {u.walt}: not-authorized" in err
    code, out, err = await run_migrate(world, u.walt, u.newwalt, tmp_path,
                                       new_password="wrong")
    assert code == 2
    assert f"cannot log in to the new account {u.newwalt}: not-authorized" in err
    assert list(tmp_path.iterdir()) == []


async def test_usage_errors_exit_2(world, tmp_path):
    code, _, err = await run_migrate(world, "not a jid@", "x@b.test", tmp_path)
    assert code == 2 and "--from" in err
    code, _, err = await run_migrate(world, "x@a.test", "x@a.test", tmp_path)
    assert code == 2 and "same account" in err


async def test_contact_on_an_unreachable_domain_is_reported_failed(world, tmp_path):
    u = users(world, zoe="a", newzoe="b", carol="c")
    zoe = await login(world.a, f"{u.zoe}/setup", "pw")
    zoe.send_presence()
    # a request to zed is still pending: the new account repeats it, and fails
    await set_item(zoe, "zed@z.test", "Zed")
    zoe.send_presence(pto="zed@z.test", ptype="subscribe")
    item = (await roster(zoe))["zed@z.test"]
    assert item.get("ask") == "subscribe"
    await set_item(zoe, u.carol, "Carol")
    await zoe.close()
    code, out, err = await run_migrate(world, u.zoe, u.newzoe, tmp_path, "--wait", "10",
                                       "--no-statement")
    assert code == 1, (out, err)
    lines = report(out)
    assert lines["zed@z.test"].startswith("failed: remote-server-not-found")
    assert lines[u.carol].startswith("roster only")
    assert "not publishing the moved statement" in err
    stranger = await login(world.a, f"{u.zoe}/check", "pw")
    assert await statement_of(stranger, u.zoe) == "item-not-found"
    await stranger.close()


async def test_untrusted_certificate_exits_2_unless_insecure(world, tmp_path):
    u = users(world, uma="a", newuma="b")
    code, _, err = await run_migrate(world, u.uma, u.newuma, tmp_path, "--dry-run",
                                     cafiles=False)
    assert code == 2
    assert f"cannot log in to the old account {u.uma}: tls-failure" in err
    assert "certificate verify failed" in err
    code, out, err = await run_migrate(world, u.uma, u.newuma, tmp_path, "--dry-run",
                                       "--insecure", cafiles=False)
    assert code == 0, (out, err)
    assert "not checking the old server's certificate (--insecure)" in err


async def test_statement_replaces_an_older_one_kept_for_contacts_only(world, tmp_path):
    u = users(world, vic="a", newvic="b", stranger="c")
    vic = await login(world.a, f"{u.vic}/setup", "pw")
    # an earlier statement in a node with the default 'presence' access model
    assert (await ask(vic, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{MOVED}'>"
                                  f"<item id='current'><moved xmlns='{MOVED}'><new-jid>"
                                  "elsewhere@c.test</new-jid></moved></item></publish>"
                                  "</pubsub>"))[0] is None
    await vic.close()
    stranger = await login(world.c, f"{u.stranger}/x", "pw")
    assert await statement_of(stranger, u.vic) == "not-authorized"
    code, out, err = await run_migrate(world, u.vic, u.newvic, tmp_path, "--wait", "0")
    assert code == 0, (out, err)
    assert "setting it to open" in err
    assert await statement_of(stranger, u.vic) == u.newvic
    await stranger.close()


# -- the client underneath (server/client) ------------------------------------------------------

async def test_client_session_basics(world):
    u = users(world, kim="a", lee="a")
    cafile = str(world.a.cert("a.test"))
    kim = await Client.connect(u.kim, "pw", host="127.0.0.1", port=world.a.c2s_port,
                               cafile=cafile, resource="phone", presence=True)
    assert str(kim.jid) == f"{u.kim}/phone"
    lee = await login(world.a, f"{u.lee}/x", "pw")
    # an IQ get to the client is answered service-unavailable (RFC 6120 §8.4)
    error, _ = await ask(lee, "get", "<query xmlns='urn:example:nothing'/>", to=str(kim.jid))
    assert error == "service-unavailable"
    # messages reach the callbacks
    lee.send_message(mto=str(kim.jid), mbody="hi", mtype="chat")
    message = await kim.wait_for(lambda el: el.tag.endswith("}message"), 5)
    assert message.findtext("{jabber:client}body") == "hi"
    # errors come back as IQError with the condition
    with pytest.raises(IQError) as failed:
        await kim.request(iq("get", to="nobody@a.test", payload=E("{vcard-temp}vCard")))
    assert failed.value.condition == "service-unavailable"
    # direct TLS and PLAIN
    direct = await Client.connect(u.kim, "pw", host="127.0.0.1", port=world.a.direct_tls_port,
                                  direct_tls=True, cafile=cafile, mechanisms=("PLAIN",))
    assert (await direct.vcard_get()) is None
    await direct.close()
    with pytest.raises(ClientError) as refused:
        await Client.connect(u.kim, "wrong", host="127.0.0.1", port=world.a.c2s_port,
                             cafile=cafile)
    assert refused.value.condition == "not-authorized"
    await kim.close()
    assert kim.closed.done()
    await lee.close()


async def test_roster_sets_in_flight_stop_at_the_first_error(world):
    """roster_set_all keeps a window of sets in flight, reports each accepted one
    in order, and raises the first error after the ones before it were set."""
    u = users(world, kim="a")
    cafile = str(world.a.cert("a.test"))
    kim = await Client.connect(u.kim, "pw", host="127.0.0.1", port=world.a.c2s_port,
                               cafile=cafile)
    items = [SimpleNamespace(jid=f"friend{n}@c.test", name=f"Friend {n}", groups=("G",))
             for n in range(40)]
    accepted = []
    await kim.roster_set_all(items, window=8, done=lambda item: accepted.append(item.jid))
    assert accepted == [item.jid for item in items]
    roster = {item.jid: item for item in await kim.roster()}
    assert all(roster[i.jid].name == i.name and roster[i.jid].groups == ("G",) for i in items)
    # an empty group name is refused (RFC 6121 §2.3.3): the sets after it are abandoned
    bad = [SimpleNamespace(jid=f"late{n}@c.test", name=None, groups=("",) if n == 5 else ())
           for n in range(20)]
    accepted.clear()
    with pytest.raises(IQError) as refused:
        await kim.roster_set_all(bad, window=4, done=lambda item: accepted.append(item.jid))
    assert refused.value.condition == "not-acceptable"
    assert accepted == [f"late{n}@c.test" for n in range(5)]
    await kim.close()


def test_state_file_is_saved_at_step_ends_and_at_most_twice_a_second(tmp_path, monkeypatch):
    from server.tools import migrate
    from server.xmpp.jid import JID
    state = migrate.State.load(tmp_path / "s.json", JID.parse("a@a.test"), JID.parse("b@b.test"))
    saves = []
    real_save = state.save

    def save():
        saves.append(1)
        real_save()
    monkeypatch.setattr(state, "save", save)
    for n in range(500):
        state.contact(f"c{n}@c.test")["copied"] = True
        state.checkpoint()
    assert len(saves) == 1                      # the first change; the next only 0.5 s later
    state.saved_at -= migrate.SAVE_INTERVAL
    state.checkpoint()
    assert len(saves) == 2
    state.finish("roster")                      # a step's end is always saved
    assert len(saves) == 3


def test_outreach_goes_contact_by_contact_in_the_plans_order():
    from server.tools.migrate import per_contact
    stanzas = [("b", "subscribed", 1), ("c", "subscribed", 2), ("a", "subscribe", 3),
               ("b", "subscribe", 4), ("c", "subscribe", 5)]
    assert per_contact(stanzas) == [("b", "subscribed", 1), ("b", "subscribe", 4),
                                    ("c", "subscribed", 2), ("c", "subscribe", 5),
                                    ("a", "subscribe", 3)]


async def test_a_big_roster_is_copied_whole_over_several_sessions(world, tmp_path):
    """From 200 items on, the copy runs on up to four sessions of the new
    account side by side (a server handles one session's sets one after the
    other). Every item arrives with its name and groups, and a second run
    finds nothing left to copy."""
    u = users(world, pat="a", pat_new="b")
    cafile = str(world.a.cert("a.test"))
    pat = await Client.connect(u.pat, "pw", host="127.0.0.1", port=world.a.c2s_port,
                               cafile=cafile)
    items = [SimpleNamespace(jid=f"pal{n}@z.test", name=f"Pal {n}", groups=(f"G{n % 3}",))
             for n in range(450)]
    await pat.roster_set_all(items, window=32)
    await pat.close()
    code, out, err = await run_migrate(world, u.pat, u.pat_new, tmp_path)
    assert code == 0, err
    assert "copying 450 roster item(s)" in err
    assert "roster: 4 sessions side by side" in err
    new = await Client.connect(u.pat_new, "pw", host="127.0.0.1", port=world.b.c2s_port,
                               cafile=str(world.b.cert("b.test")))
    copied = {item.jid: (item.name, item.groups) for item in await new.roster()}
    await new.close()
    assert copied == {i.jid: (i.name, i.groups) for i in items}
    code, out, err = await run_migrate(world, u.pat, u.pat_new, tmp_path)
    assert code == 0, err
    assert "roster: 450 item(s) copied in an earlier run" in err
