"""``xferd import FILE --as NEW [--outreach]``: an exported account re-homed to a
new JID. Subscriptions are reset, the old password logs in,
and --outreach asks the old contacts through the running server — with
``<moved/>`` only when the export holds a statement for the new JID."""

import asyncio

from tests.harness import ask, login, tool_report
from tests.integration.test_accountxfer import befriend

PUBSUB = "http://jabber.org/protocol/pubsub"
MOVED = "urn:xmpp:moved:1"
A, B = "a.localhost", "b.localhost"


async def _befriend(server, user, contact, how):
    """*user*'s roster item for *contact* becomes *how* (both, to, from)."""
    u = await login(server, f"{user}/s", user.split("@")[0] + "-pass")
    c = await login(server, f"{contact}/s", contact.split("@")[0] + "-pass")
    u.send_presence()
    c.send_presence()
    await befriend(u, user, c, contact, how)
    await u.close()
    await c.close()


async def _alice_with_contacts(server, *, statement: bool):
    """alice@A: bob both, carol sees alice (from), dave is seen by alice (to),
    a request pending from erin, a vCard, and maybe a statement → alice@B."""
    for contact, how in (("bob", "both"), ("carol", "from"), ("dave", "to")):
        await _befriend(server, f"alice@{A}", f"{contact}@{A}", how)
    alice = await login(server, f"alice@{A}/a", "alice-pass")
    assert (await ask(alice, "set", f"<query xmlns='jabber:iq:roster'><item jid='bob@{A}' "
                                    "name='Bobby'><group>Friends</group></item></query>"))[0] is None
    assert (await ask(alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard>"))[0] \
        is None
    if statement:
        error, _ = await ask(alice, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{MOVED}'>"
                                           f"<item id='current'><moved xmlns='{MOVED}'><new-jid>"
                                           f"alice@{B}</new-jid></moved></item></publish>"
                                           "<publish-options><x xmlns='jabber:x:data' "
                                           "type='submit'><field var='FORM_TYPE' type='hidden'>"
                                           "<value>http://jabber.org/protocol/pubsub#"
                                           "publish-options</value></field><field var='pubsub#"
                                           "access_model'><value>open</value></field></x>"
                                           f"</publish-options></pubsub>")
        assert error is None
    await alice.close()
    erin = await login(server, f"erin@{A}/e", "erin-pass")
    erin.send_presence(pto=f"alice@{A}", ptype="subscribe")
    await erin.ping_server()                # the request has been handled (stored)
    await erin.close()


def _server_with_people(make_server):
    server = make_server(start=False, domains=(A, B))
    for name in ("alice", "bob", "carol", "dave", "erin"):
        server.adduser(f"{name}@{A}", f"{name}-pass")
    return server.start()


def _outreach(server, tmp_path, *args):
    """``xferd import … --state`` with a state file in the test's directory."""
    return server.cli("import", *args, "--state", str(tmp_path / "state.json"))


async def test_import_as_a_new_jid_with_outreach(make_server, tmp_path, monkeypatch):
    monkeypatch.setenv("XFERD_PASSWORD", "alice-pass")
    server = _server_with_people(make_server)
    await _alice_with_contacts(server, statement=True)
    export = tmp_path / "alice.xml"
    done = server.cli("export", "--user", f"alice@{A}", "-o", str(export))
    assert done.returncode == 0, done.stderr

    dry = server.cli("import", str(export), "--as", f"alice@{B}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would import alice@{A} as alice@{B}: 3 roster items" in dry.stderr
    assert f"alice@{B}" not in server.cli("users").stdout

    done = _outreach(server, tmp_path, str(export), "--as", f"alice@{B}", "--outreach",
                     "--wait", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"imported alice@{A} as alice@{B}: 3 roster items (subscriptions reset to none)" \
        in done.stderr
    assert f"dropped 1 pending subscription request addressed to alice@{A}: erin@{A}" \
        in done.stderr
    assert "left out the moved statement" in done.stderr
    report = tool_report(done.stdout)
    assert report[f"bob@{A}"] == "auto-updated", done.stdout
    assert report[f"dave@{A}"] == "auto-updated", done.stdout
    assert report[f"carol@{A}"].startswith("waiting for manual approval (pre-approved"), \
        done.stdout

    # the new account: old password, both mechanisms; names and groups kept; no statement
    alice = await login(server, f"alice@{B}/n", "alice-pass", mechanism="SCRAM-SHA-256")
    roster = await alice.fetch_roster()
    assert set(roster) == {f"bob@{A}", f"carol@{A}", f"dave@{A}"}
    assert roster[f"bob@{A}"]["name"] == "Bobby"
    assert roster[f"bob@{A}"]["groups"] == ["Friends"]
    assert roster[f"bob@{A}"]["subscription"] == "both"
    assert roster[f"dave@{A}"]["subscription"] == "to"
    assert roster[f"carol@{A}"]["subscription"] == "none"
    _, answer = await ask(alice, "get", "<vCard xmlns='vcard-temp'/>")
    assert answer.findtext(".//{vcard-temp}FN") == "Alice A."
    error, _ = await ask(alice, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{MOVED}'/>"
                                       "</pubsub>")
    assert error == "item-not-found"
    await alice.close()
    await (await login(server, f"alice@{B}/x", "alice-pass", mechanism="SCRAM-SHA-1")).close()

    # the contacts' side: bob and dave now have alice@B
    bob = await login(server, f"bob@{A}/b", "bob-pass")
    assert (await bob.fetch_roster())[f"alice@{B}"]["subscription"] == "both"
    await bob.close()
    dave = await login(server, f"dave@{A}/d", "dave-pass")
    assert (await dave.fetch_roster())[f"alice@{B}"]["subscription"] == "from"
    await dave.close()

    # a second run imports nothing and sends nothing new
    again = _outreach(server, tmp_path, str(export), "--as", f"alice@{B}", "--outreach",
                      "--wait", "1")
    assert again.returncode == 0, again.stderr
    assert f"alice@{B} already exists: nothing imported" in again.stderr
    assert tool_report(again.stdout)[f"bob@{A}"] == "auto-updated"


async def test_import_as_without_statement_sends_plain_requests(make_server, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("XFERD_PASSWORD", "alice-pass")
    server = _server_with_people(make_server)
    await _alice_with_contacts(server, statement=False)
    export = tmp_path / "alice.xml"
    assert server.cli("export", "--user", f"alice@{A}", "-o", str(export)).returncode == 0

    done = server.cli("import", str(export), "--as", f"alice@{B}")
    assert done.returncode == 0, done.stderr
    assert "the contacts were not told; run again with --outreach" in done.stderr
    dave = await login(server, f"dave@{A}/d", "dave-pass")
    dave.send_presence()
    await dave.ping_server()                # dave is online before the outreach runs
    done = _outreach(server, tmp_path, str(export), "--as", f"alice@{B}", "--outreach",
                     "--wait", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no moved statement" in done.stderr
    request = await dave.next_presence(type="subscribe", sender=f"alice@{B}")
    assert request.xml.find(f"{{{MOVED}}}moved") is None
    assert tool_report(done.stdout)[f"dave@{A}"] == "waiting for manual approval"
    await dave.close()


async def test_import_as_refuses_what_it_cannot_do(make_server, tmp_path, monkeypatch):
    monkeypatch.setenv("XFERD_PASSWORD", "bob-pass")
    server = _server_with_people(make_server)
    whole = tmp_path / "host"
    assert server.cli("export", "--host", A, "-o", str(whole)).returncode == 0
    several = server.cli("import", str(whole / "main.xml"), "--as", f"new@{B}")
    assert several.returncode == 1
    assert "holds more than one account; --as imports exactly one" in several.stderr

    one = tmp_path / "bob.xml"
    assert server.cli("export", "--user", f"bob@{A}", "-o", str(one)).returncode == 0
    same = server.cli("import", str(one), "--as", f"bob@{A}")
    assert same.returncode == 1 and "import without --as" in same.stderr
    foreign = server.cli("import", str(one), "--as", "bob@elsewhere.example")
    assert foreign.returncode == 1 and "not a host of this server" in foreign.stderr
    lonely = server.cli("import", str(one), "--outreach")
    assert lonely.returncode == 1 and "--outreach only goes with --as" in lonely.stderr
    assert f"new@{B}" not in server.cli("users").stdout

    # the server is down: the import is done, the outreach says what to do
    server.stop()
    down = _outreach(server, tmp_path, str(one), "--as", f"bob@{B}", "--outreach")
    assert down.returncode == 1
    assert f"imported bob@{A} as bob@{B}" in down.stderr
    assert "--outreach needs this server running" in down.stderr
    assert f"bob@{B}" in server.cli("users").stdout
