"""XEP-0227 export and import between two real xferd servers: data made by
real clients on one server is exported, imported into an empty one, exported
again unchanged, and found there by real clients who log in with their old
passwords over SCRAM-SHA-1 and SCRAM-SHA-256. Bad files change nothing."""

import asyncio
import filecmp
import os
import stat

import pytest

from tests.harness import ask, login

PUBSUB = "http://jabber.org/protocol/pubsub"
NICK = "http://jabber.org/protocol/nick"


async def _make_data(server):
    """alice: roster with groups, a pending subscription from carol, an offline
    message from bob, a vCard, private XML, a PEP node with an item and a
    blocked JID."""
    alice = await login(server, "alice@localhost/a", "alice-pass")
    error, _ = await ask(alice, "set", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
                                       "name='Bobby'><group>Friends</group><group>Work</group>"
                                       "</item></query>")
    assert error is None
    assert (await ask(alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice A.</FN>"
                                    "<NICKNAME>al</NICKNAME></vCard>"))[0] is None
    assert (await ask(alice, "set", "<query xmlns='jabber:iq:private'><prefs "
                                    "xmlns='urn:example:prefs'><colour>blue</colour></prefs>"
                                    "</query>"))[0] is None
    assert (await ask(alice, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{NICK}'>"
                                    f"<item id='current'><nick xmlns='{NICK}'>Ally</nick></item>"
                                    "</publish></pubsub>"))[0] is None
    assert (await ask(alice, "set", "<block xmlns='urn:xmpp:blocking'><item "
                                    "jid='spam@evil.example'/></block>"))[0] is None
    await alice.close()
    carol = await login(server, "carol@localhost/c", "carol-pass")
    carol.send_presence(pto="alice@localhost", ptype="subscribe")
    bob = await login(server, "bob@localhost/b", "bob-pass")
    bob.send_message(mto="alice@localhost", mbody="while you were away", mtype="chat")
    # handled in order: the pongs mean the request and the message are stored
    await carol.ping_server()
    await bob.ping_server()
    await bob.close()
    await carol.close()


def _users(server) -> list[str]:
    done = server.cli("users")
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.split())


async def test_round_trip_to_an_empty_server(make_server, tmp_path):
    old = make_server(start=False)
    for name in ("alice", "bob", "carol"):
        old.adduser(f"{name}@localhost", f"{name}-pass")
    old.start()
    await _make_data(old)

    first = tmp_path / "first"
    done = old.cli("export", "--host", "localhost", "-o", str(first), "--progress-every", "2")
    assert done.returncode == 0, done.stderr
    assert "export: 2/3 users of localhost" in done.stderr
    assert "exported localhost: 3 users" in done.stderr
    for path in [first / "main.xml", first / "localhost.xml", *(first / "localhost").iterdir()]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    alice_xml = (first / "localhost" / "alice.xml").read_text()
    assert "alice-pass" not in alice_xml and "password" not in alice_xml
    assert "scram-credentials" in alice_xml and "SCRAM-SHA-1" in alice_xml

    new = make_server()
    dry = new.cli("import", str(first / "main.xml"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would import 3 users" in dry.stderr
    assert _users(new) == []
    done = new.cli("import", str(first / "main.xml"))
    assert done.returncode == 0, done.stderr
    assert "imported 3 users" in done.stderr, done.stderr
    assert _users(new) == ["alice@localhost", "bob@localhost", "carol@localhost"]

    # exported again before anyone logs in (which would consume the offline message)
    second = tmp_path / "second"
    done = new.cli("export", "--host", "localhost", "-o", str(second))
    assert done.returncode == 0, done.stderr
    compare = filecmp.dircmp(first, second)
    assert not compare.left_only and not compare.right_only and not compare.diff_files
    inner = filecmp.dircmp(first / "localhost", second / "localhost")
    assert sorted(inner.same_files) == ["alice.xml", "bob.xml", "carol.xml"], inner.diff_files

    # importing again leaves the existing accounts alone
    again = new.cli("import", str(first / "main.xml"))
    assert again.returncode == 0 and "3 existing accounts skipped" in again.stderr

    # old passwords, both SCRAM mechanisms
    bob = await login(new, "bob@localhost/x", "bob-pass", mechanism="SCRAM-SHA-1")
    await bob.close()
    alice = await login(new, "alice@localhost/x", "alice-pass", mechanism="SCRAM-SHA-256")
    alice.send_presence()                  # offline messages wait for initial presence
    message = await asyncio.wait_for(alice.messages.get(), 10)
    assert message["body"] == "while you were away"
    assert message["from"].bare == "bob@localhost"
    assert message.xml.find("{urn:xmpp:delay}delay") is not None
    roster = await alice.fetch_roster()
    assert roster["bob@localhost"]["name"] == "Bobby"
    assert roster["bob@localhost"]["groups"] == ["Friends", "Work"]
    pending = await alice.next_presence(type="subscribe", sender="carol@localhost")
    assert pending["from"].bare == "carol@localhost"
    _, answer = await ask(alice, "get", "<vCard xmlns='vcard-temp'/>")
    assert answer.findtext(".//{vcard-temp}FN") == "Alice A."
    _, answer = await ask(alice, "get", "<query xmlns='jabber:iq:private'>"
                                        "<prefs xmlns='urn:example:prefs'/></query>")
    assert answer.findtext(".//{urn:example:prefs}colour") == "blue"
    _, answer = await ask(alice, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{NICK}'/>"
                                        "</pubsub>")
    assert answer.findtext(f".//{{{NICK}}}nick") == "Ally"
    _, answer = await ask(alice, "get", "<blocklist xmlns='urn:xmpp:blocking'/>")
    assert [i.get("jid") for i in answer.iter("{urn:xmpp:blocking}item")] == \
        ["spam@evil.example"]
    await alice.close()
    carol = await login(new, "carol@localhost/x", "carol-pass", mechanism="SCRAM-SHA-1")
    await carol.close()
    await (await login(new, "alice@localhost/y", "wrong", expect="failed_auth")).close()


@pytest.mark.hostile            # a bad file changes nothing (hostile input)
async def test_single_user_export_and_bad_files(make_server, tmp_path):
    old = make_server(start=False)
    old.adduser("dora@localhost", "dora-pass")
    old.adduser("ed@localhost", "ed-pass")
    old.start()
    out = tmp_path / "dora.xml"
    done = old.cli("export", "--user", "dora@localhost", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert old.cli("export", "--user", "nobody@localhost", "-o", str(tmp_path / "n.xml")
                   ).returncode == 1

    target = make_server(start=False)
    target.adduser("existing@localhost", "pw")
    target.start()
    # a document with two users where the second is cut off: nothing at all is imported
    text = out.read_text()
    two = text.replace("</host>", text[text.index("<user"):text.index("</host>")]
                       .replace("name=\"dora\"", "name=\"fred\"") + "</host>")
    broken = tmp_path / "broken.xml"
    broken.write_text(two[:two.rindex("</scram-credentials>")])
    done = target.cli("import", str(broken))
    assert done.returncode != 0
    assert f"{broken}:" in done.stderr and "nothing imported" in done.stderr, done.stderr
    assert _users(target) == ["existing@localhost"]

    evil = tmp_path / "evil.xml"
    evil.write_text("<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY a 'aaaaaaaa'>]>"
                    + text.split("?>", 1)[1].replace("<user ", "<user x='&a;' "))
    done = target.cli("import", str(evil))
    assert done.returncode != 0 and "DOCTYPE" in done.stderr, done.stderr
    assert _users(target) == ["existing@localhost"]

    done = target.cli("import", str(out))
    assert done.returncode == 0, done.stderr
    assert _users(target) == ["dora@localhost", "existing@localhost"]
    dora = await login(target, "dora@localhost/x", "dora-pass", mechanism="SCRAM-SHA-256")
    await dora.close()


async def test_account_with_sha1_keys_only_is_upgraded_by_a_plain_login(make_server, tmp_path):
    """Prosody 0.12 exports SCRAM-SHA-1 keys only: such an account logs in with
    SCRAM-SHA-1 or PLAIN, and its first PLAIN login adds SCRAM-SHA-256."""
    old = make_server(start=False)
    old.adduser("gina@localhost", "gina-pass")
    out = tmp_path / "gina.xml"
    assert old.cli("export", "--user", "gina@localhost", "-o", str(out)).returncode == 0
    text = out.read_text()
    start = text.index('<scram-credentials xmlns="urn:xmpp:pie:0#scram" '
                       'mechanism="SCRAM-SHA-256">')
    end = text.index("</scram-credentials>", start) + len("</scram-credentials>")
    out.write_text(text[:start] + text[end:])

    new = make_server()
    done = new.cli("import", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 account came with SCRAM-SHA-1 keys only" in done.stderr
    await login(new, "gina@localhost/a", "gina-pass", mechanism="SCRAM-SHA-256",
                expect="failed_auth")
    (await login(new, "gina@localhost/b", "gina-pass", mechanism="SCRAM-SHA-1")).disconnect()
    await login(new, "gina@localhost/c", "wrong", mechanism="PLAIN", expect="failed_auth")
    (await login(new, "gina@localhost/d", "gina-pass", mechanism="PLAIN")).disconnect()
    (await login(new, "gina@localhost/e", "gina-pass", mechanism="SCRAM-SHA-256")).disconnect()
    (await login(new, "gina@localhost/f", "gina-pass", mechanism="SCRAM-SHA-1")).disconnect()


async def test_ejabberd_dialect_export_is_read_back_by_xferd(make_server, tmp_path):
    """``xferd export --host D --dialect ejabberd``: ejabberd's own layout (XEP-0227
    §5 allows any: the main file including one host file that holds its users
    inline), every file owner-only (§6), SCRAM values base64 twice; another
    xferd imports it and the users log in with both mechanisms."""
    old = make_server(start=False)
    for name in ("alice", "bob", "carol"):
        old.adduser(f"{name}@localhost", f"{name}-pass")
    old.start()
    await _make_data(old)
    out = tmp_path / "ejabberd"
    done = old.cli("export", "--host", "localhost", "--dialect", "ejabberd", "-o", str(out),
                   "--progress-every", "2")
    assert done.returncode == 0, done.stderr
    assert "export: 2/3 users of localhost" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["localhost.xml", "main.xml"]
    for path in out.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert "<xi:include" in (out / "main.xml").read_text()
    host_text = (out / "localhost.xml").read_text()
    assert "xi:include" not in host_text and host_text.count("<user ") == 3
    assert "alice-pass" not in host_text and "password" not in host_text
    # the default dialect is left as it was: one file per user
    assert old.cli("export", "--host", "localhost", "-o", str(tmp_path / "std")).returncode == 0
    assert sorted(p.name for p in (tmp_path / "std" / "localhost").iterdir()) == \
        ["alice.xml", "bob.xml", "carol.xml"]

    new = make_server()
    done = new.cli("import", str(out / "main.xml"))
    assert done.returncode == 0, done.stderr
    assert "imported 3 users (2 roster items, 1 pending subscription, 1 offline message, " \
           "1 private fragment, 1 vCard, 1 PEP node with 1 item, 1 blocked JID, " \
           "0 archived messages)" \
           in done.stderr, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    for name, mechanism in (("alice", "SCRAM-SHA-256"), ("bob", "SCRAM-SHA-1")):
        (await login(new, f"{name}@localhost/x", f"{name}-pass", mechanism=mechanism)
         ).disconnect()
    await login(new, "carol@localhost/x", "carol-pass!", expect="failed_auth")
