"""XEP-0227 files between xferd and a real ejabberd 23.01 (Debian's), both ways.

ejabberd's side is driven as its admin would: ``ejabberdctl export_piefxis
DIR`` (every host) and ``export_piefxis_host DIR HOST``, ``ejabberdctl
import_piefxis FILE``. What ejabberd writes differently from XEP-0227 §4.3
(its SCRAM salt and keys base64-encoded twice) and reads differently (§5:
one level of XInclude, each file read as a stream of its root's children) is
told in storage/pie_ejabberd.py.

Each test makes one account with every kind of data a user keeps on the old
server — credentials, roster (a mutual contact with name and groups, an
outgoing request), a pending inbound request, vCard, private XML, a PEP
nickname, an offline message, a blocked JID — checks what the user sees
there, moves it, and checks what the user sees on the other side with a real
client. The expected results are the README's XEP-0227 matrix for ejabberd:
everything but PEP crosses both ways (ejabberd's exporter writes no PEP and
its importer skips it, ``ejabberd_piefxis.erl``: "Not implemented: PEP nodes
export/import").
"""

import base64
import itertools

import pytest
from slixmpp.xmlstream import ET

from tests.ejabberd import EJABBERD_DOMAIN, EjabberdProcess, require_ejabberd
from tests.harness import ask, login
from tests.interop.test_prosody_federation import wait_for_item

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

ROSTER = "jabber:iq:roster"
PUBSUB = "http://jabber.org/protocol/pubsub"
NICK = "http://jabber.org/protocol/nick"
BOOKMARKS = "storage:bookmarks"
BLOCKING = "urn:xmpp:blocking"
#: a password SASLprep leaves alone but that is not ASCII: both servers hash UTF-8
PASSWORD = "pässwörd-1"
#: a contact on a domain nobody serves (the DNS responder answers NXDOMAIN)
FAR = "carol@elsewhere.test"
SPAM = "spam@elsewhere.test"
ROOM = "room@muc.elsewhere.test"
#: ejabberd stores one SCRAM hash per account (auth_scram_hash, default sha)
#: and offers only that mechanism, so both sides log in with SCRAM-SHA-1
MECHANISM = "SCRAM-SHA-1"

#: what crosses (README, "XEP-0227 across servers"); "ask": the roster item
#: of the outgoing request still shows it (ask='subscribe', RFC 6121 §2.1.2.2)
EVERYTHING = {"roster": True, "ask": True, "pending": True, "vcard": True, "private": True,
              "pep": True, "offline": True, "blocklist": True}
#: ejabberd → xferd: its exporter writes no PEP
EJABBERD_TO_XFERD = {**EVERYTHING, "pep": False}
#: xferd → ejabberd: its importer skips PEP, and sets roster items without
#: their ask (mod_roster:set_items keeps name, groups and subscription only)
XFERD_TO_EJABBERD = {**EVERYTHING, "pep": False, "ask": False}
#: what the user sees before the move without going online (which would take
#: the offline message): the export's summary and file show the other two
BEFORE = {kind: True for kind in EVERYTHING if kind not in ("pending", "offline")}

_names = itertools.count(1)


def accounts(prefix: str) -> tuple[str, str, str]:
    """(user, friend, stranger) with names this module has not used yet: the
    module's ejabberd keeps every account of every test."""
    n = next(_names)
    return tuple(f"{name}{prefix}{n}@{EJABBERD_DOMAIN}" for name in ("alice", "bob", "dan"))


async def make_account_data(server, user: str, friend: str, stranger: str) -> None:
    """*user*: mutual with *friend* (named, two groups), an outgoing request to
    a far contact, vCard, bookmarks in private XML, a PEP nickname, *SPAM*
    blocked; then, while *user* is offline, *friend* sends a message and
    *stranger* asks to subscribe."""
    alice = await login(server, f"{user}/a", PASSWORD, mechanism=MECHANISM)
    bob = await login(server, f"{friend}/b", PASSWORD, mechanism=MECHANISM)
    try:
        for client in (alice, bob):                 # available, so requests reach them
            client.send_presence()
            await client.fetch_roster()
        for asker, asker_jid, other, other_jid in ((alice, user, bob, friend),
                                                   (bob, friend, alice, user)):
            asker.send_presence(pto=other_jid, ptype="subscribe")
            await other.next_presence(type="subscribe", sender=asker_jid)
            other.send_presence(pto=asker_jid, ptype="subscribed")
            await asker.next_presence(type="subscribed", sender=other_jid)
        await wait_for_item(alice, friend, "both")
        for payload in (
                f"<query xmlns='{ROSTER}'><item jid='{friend}' name='Bob B.'>"
                "<group>Friends</group><group>Work</group></item></query>",
                f"<query xmlns='{ROSTER}'><item jid='{FAR}' name='Carol'><group>Abroad</group>"
                "</item></query>",
                "<vCard xmlns='vcard-temp'><FN>Alice Äpfel</FN><NICKNAME>ali</NICKNAME></vCard>",
                f"<query xmlns='jabber:iq:private'><storage xmlns='{BOOKMARKS}'>"
                f"<conference jid='{ROOM}' name='The Room'/></storage></query>",
                f"<pubsub xmlns='{PUBSUB}'><publish node='{NICK}'><item id='current'>"
                f"<nick xmlns='{NICK}'>Ally</nick></item></publish></pubsub>",
                f"<block xmlns='{BLOCKING}'><item jid='{SPAM}'/></block>"):
            error, answer = await ask(alice, "set", payload)
            assert error is None, ET.tostring(answer)
        alice.send_presence(pto=FAR, ptype="subscribe")
        await alice.quiet()                  # the request has been handled (a round trip)
    finally:
        await alice.close()
    try:
        bob.send_message(mto=user, mbody="while you were out", mtype="chat")
        await bob.ping_server()              # the message is stored once this answers
    finally:
        await bob.close()
    dan = await login(server, f"{stranger}/d", PASSWORD, mechanism=MECHANISM)
    dan.send_presence(pto=user, ptype="subscribe")
    await dan.ping_server()
    await dan.close()


async def what_user_sees(server, user: str, friend: str, stranger: str, *,
                         available: bool = True) -> dict[str, bool]:
    """Log in as *user* with the old password (a wrong one is refused) and
    tell, per kind of data, whether it is there. Data that is there must be
    exactly what make_account_data made; absent data is False. Only when
    *available* does the client send presence, which brings the pending
    request and the offline message (and so deletes the message)."""
    await login(server, f"{user}/w", PASSWORD + "x", mechanism=MECHANISM, expect="failed_auth")
    client = await login(server, f"{user}/x", PASSWORD, mechanism=MECHANISM)
    seen = {}
    try:
        items = await client.fetch_roster()
        seen["roster"] = bool(items)
        if items:
            assert set(items) == {friend, FAR}, items
            assert (items[friend]["name"], sorted(items[friend]["groups"]),
                    items[friend]["subscription"], items[friend].get("ask")) == \
                ("Bob B.", ["Friends", "Work"], "both", None), items[friend]
            assert (items[FAR]["name"], items[FAR]["groups"], items[FAR]["subscription"]) == \
                ("Carol", ["Abroad"], "none"), items[FAR]
            seen["ask"] = items[FAR].get("ask") == "subscribe"

        error, answer = await ask(client, "get", "<vCard xmlns='vcard-temp'/>")
        assert error in (None, "item-not-found"), ET.tostring(answer)
        seen["vcard"] = answer.findtext(".//{vcard-temp}FN") is not None
        if seen["vcard"]:
            assert answer.findtext(".//{vcard-temp}FN") == "Alice Äpfel"
            assert answer.findtext(".//{vcard-temp}NICKNAME") == "ali"

        error, answer = await ask(client, "get", f"<query xmlns='jabber:iq:private'>"
                                                 f"<storage xmlns='{BOOKMARKS}'/></query>")
        assert error is None, ET.tostring(answer)
        rooms = [(c.get("jid"), c.get("name"))
                 for c in answer.iter(f"{{{BOOKMARKS}}}conference")]
        seen["private"] = bool(rooms)
        if rooms:
            assert rooms == [(ROOM, "The Room")], rooms

        error, answer = await ask(client, "get", f"<pubsub xmlns='{PUBSUB}'>"
                                                 f"<items node='{NICK}'/></pubsub>")
        assert error in (None, "item-not-found"), ET.tostring(answer)
        seen["pep"] = error is None
        if error is None:
            assert answer.findtext(f".//{{{NICK}}}nick") == "Ally"

        error, answer = await ask(client, "get", f"<blocklist xmlns='{BLOCKING}'/>")
        assert error is None, ET.tostring(answer)
        blocked = [item.get("jid") for item in answer.iter(f"{{{BLOCKING}}}item")]
        seen["blocklist"] = bool(blocked)
        if blocked:
            assert blocked == [SPAM], blocked

        if not available:
            return seen
        # the initial presence brings the pending request (RFC 6121 §3.1.3) and the
        # offline message (XEP-0160 §3); both are sent before the server answers the
        # ping that quiet() makes after it
        client.send_presence()
        presences = await client.quiet()
        requests = [p for p in presences if p["type"] == "subscribe"]
        seen["pending"] = bool(requests)
        if requests:
            assert [p["from"].bare for p in requests] == [stranger]
        messages = []
        while not client.messages.empty():
            messages.append(client.messages.get_nowait())
        seen["offline"] = bool(messages)
        if messages:
            [message] = messages
            assert (message["from"].bare, message["body"]) == (friend, "while you were out")
            assert message.xml.find("{urn:xmpp:delay}delay") is not None      # XEP-0203
    finally:
        await client.close()
    return seen


def xferd_for_ejabberd_domain(make_server, dns):
    """An xferd serving ejabberd's domain (a XEP-0227 host is imported only by a
    server that serves it), not started; it resolves through the tests' DNS."""
    return make_server(domains=(EJABBERD_DOMAIN,), start=False,
                       s2s={"nameserver": dns.address})


def local(jid: str) -> str:
    return jid.split("@")[0]


def registered(ejabberd) -> set[str]:
    """The user names of ejabberd's accounts (``registered_users`` prints one a line)."""
    return set(ctl(ejabberd, "registered_users", EJABBERD_DOMAIN).split())


def ctl(ejabberd, *args: str) -> str:
    done = ejabberd.ctl(*args)
    assert done.returncode == 0, f"ejabberdctl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("command", ["export_piefxis", "export_piefxis_host"])
async def test_ejabberd_accounts_import_into_xferd(ejabberd, dns, make_server, tmp_path,
                                                   command):
    """ejabberd export → ``xferd import`` → the user logs in to xferd with the
    old password and finds everything ejabberd exported (all but PEP)."""
    user, friend, stranger = accounts("e")
    for jid in (user, friend, stranger):
        ejabberd.adduser(jid, PASSWORD)
    await make_account_data(ejabberd, user, friend, stranger)
    assert await what_user_sees(ejabberd, user, friend, stranger, available=False) == BEFORE

    exported = tmp_path / "export"
    exported.mkdir()
    ctl(ejabberd, command, str(exported),
        *([EJABBERD_DOMAIN] if command == "export_piefxis_host" else []))
    # both commands: a main file including a host file with every user inline
    [main] = [p for p in exported.iterdir() if "_" not in p.name]
    [host_file] = [p for p in exported.iterdir() if "_" in p.name]
    assert host_file.name in main.read_text()
    # ejabberd's SCRAM values, base64 twice: the stored key decodes to 28
    # characters of base64 text, which decode to SHA-1's 20 bytes
    exported_user = host_file.read_text().split(f"<user name='{local(user)}'>")[1]
    exported_user = exported_user.split("</user>")[0]
    stored = exported_user.split("<stored-key>")[1].split("</stored-key>")[0]
    once = base64.b64decode(stored)
    assert len(once) == 28 and len(base64.b64decode(once)) == 20, stored
    assert "<body>while you were out</body>" in exported_user
    assert f"from='{stranger}' type='subscribe'" in exported_user

    xferd = xferd_for_ejabberd_domain(make_server, dns)
    done = xferd.cli("import", "--init", str(main))     # not started yet
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("warning:")] == []
    xferd.start()
    assert await what_user_sees(xferd, user, friend, stranger) == EJABBERD_TO_XFERD
    friend_client = await login(xferd, f"{friend}/y", PASSWORD, mechanism=MECHANISM)
    assert (await friend_client.fetch_roster())[user]["subscription"] == "both"
    await friend_client.close()
    # SCRAM-SHA-1 keys only, as ejabberd keeps them: the first PLAIN login adds SHA-256
    (await login(xferd, f"{user}/p", PASSWORD, mechanism="PLAIN")).disconnect()
    (await login(xferd, f"{user}/s", PASSWORD, mechanism="SCRAM-SHA-256")).disconnect()


@pytest.mark.parametrize("export", ["--host", "--user"])
async def test_xferd_accounts_import_into_ejabberd(ejabberd, dns, make_server, tmp_path,
                                                   export):
    """``xferd export --dialect ejabberd`` → ``ejabberdctl import_piefxis`` → the
    user logs in to ejabberd with the old password and finds everything but PEP."""
    user, friend, stranger = accounts("x")
    xferd = xferd_for_ejabberd_domain(make_server, dns)
    for jid in (user, friend, stranger):
        xferd.adduser(jid, PASSWORD)
    xferd.start()
    await make_account_data(xferd, user, friend, stranger)
    assert await what_user_sees(xferd, user, friend, stranger, available=False) == BEFORE

    if export == "--host":                       # all three accounts, main.xml → host file
        target = tmp_path / "export"
        done = xferd.cli("export", "--host", EJABBERD_DOMAIN, "--dialect", "ejabberd",
                         "-o", str(target))
        files = [target / "main.xml"]
        assert done.returncode == 0, done.stderr
        assert "1 pending subscription, 1 offline message," in done.stderr, done.stderr
    else:                                        # one file per account
        files = [tmp_path / f"{jid}.xml" for jid in (user, friend, stranger)]
        for jid, path in zip((user, friend, stranger), files):
            done = xferd.cli("export", "--user", jid, "--dialect", "ejabberd", "-o", str(path))
            assert done.returncode == 0, done.stderr
            if jid == user:
                assert "1 pending subscription, 1 offline message," in done.stderr
    xferd.stop()
    for path in files:
        ctl(ejabberd, "import_piefxis", str(path))
    assert {local(user), local(friend), local(stranger)} <= registered(ejabberd)

    assert await what_user_sees(ejabberd, user, friend, stranger) == XFERD_TO_EJABBERD
    friend_client = await login(ejabberd, f"{friend}/y", PASSWORD, mechanism=MECHANISM)
    assert (await friend_client.fetch_roster())[user]["subscription"] == "both"
    await friend_client.close()
    (await login(ejabberd, f"{user}/p", PASSWORD, mechanism="PLAIN")).disconnect()


async def test_ejabberd_cannot_use_the_default_export(ejabberd, dns, make_server, tmp_path):
    """Why ``--dialect ejabberd`` exists, measured (this asserts ejabberd's
    behaviour, so it passes without xferd's change too): of the default
    (XEP-0227 §4.3, §5.1) export ejabberd 23.01 imports a host's accounts not at
    all (the per-user files are a second XInclude level) and a single account
    with keys it cannot use (decoded once they are raw bytes where ejabberd
    keeps base64 text): every login crashes ejabberd's session."""
    user, friend, _ = accounts("d")
    xferd = xferd_for_ejabberd_domain(make_server, dns)
    for jid in (user, friend):
        xferd.adduser(jid, PASSWORD)
    host_dir, user_file = tmp_path / "host", tmp_path / "user.xml"
    assert xferd.cli("export", "--host", EJABBERD_DOMAIN, "-o", str(host_dir)).returncode == 0
    assert xferd.cli("export", "--user", user, "-o", str(user_file)).returncode == 0

    ctl(ejabberd, "import_piefxis", str(host_dir / "main.xml"))      # exit code 0 …
    assert {local(user), local(friend)}.isdisjoint(registered(ejabberd))    # … and nothing

    ctl(ejabberd, "import_piefxis", str(user_file))
    assert local(user) in registered(ejabberd)
    refused = await login(ejabberd, f"{user}/x", PASSWORD, mechanism=MECHANISM,
                          expect="disconnected")          # ejabberd's session crashes
    assert refused.auth_failures == []


async def test_ejabberd_with_sha256_keys_both_ways(dns, make_server, tmp_path):
    """An ejabberd with ``auth_scram_hash: sha256`` keeps SCRAM-SHA-256 keys only
    and offers only that SCRAM mechanism. Its export logs in to xferd with
    SCRAM-SHA-256; ``--ejabberd-hash sha256`` puts those keys first, the only
    ones ejabberd reads; the default (sha) leaves such an account PLAIN only."""
    require_ejabberd()
    ejabberd = EjabberdProcess(tmp_path / "ejabberd256", EJABBERD_DOMAIN, dns_port=dns.port,
                               settings={"auth_scram_hash": "sha256"}).start()
    try:
        ann, ben, cy = (f"{name}@{EJABBERD_DOMAIN}" for name in ("ann", "ben", "cy"))
        ejabberd.adduser(ann, PASSWORD)
        exported = tmp_path / "from-ejabberd"
        exported.mkdir()
        ctl(ejabberd, "export_piefxis_host", str(exported), EJABBERD_DOMAIN)
        [main] = [p for p in exported.iterdir() if "_" not in p.name]

        xferd = xferd_for_ejabberd_domain(make_server, dns)
        done = xferd.cli("import", "--init", str(main))     # not started yet
        assert done.returncode == 0, done.stderr
        for jid in (ben, cy):
            xferd.adduser(jid, PASSWORD)
        xferd.start()
        (await login(xferd, f"{ann}/a", PASSWORD, mechanism="SCRAM-SHA-256")).disconnect()
        await login(xferd, f"{ann}/b", PASSWORD, mechanism="SCRAM-SHA-1", expect="failed_auth")

        files = {jid: tmp_path / f"{local(jid)}.xml" for jid in (ann, ben, cy)}
        done = xferd.cli("export", "--user", ben, "--dialect", "ejabberd",
                         "--ejabberd-hash", "sha256", "-o", str(files[ben]))
        assert done.returncode == 0 and "note:" not in done.stderr, done.stderr
        done = xferd.cli("export", "--user", cy, "--dialect", "ejabberd", "-o", str(files[cy]))
        assert done.returncode == 0 and "note:" not in done.stderr, done.stderr
        done = xferd.cli("export", "--user", ann, "--dialect", "ejabberd", "-o", str(files[ann]))
        assert done.returncode == 0, done.stderr
        assert "note: 1 account has no SCRAM-SHA-1 keys" in done.stderr, done.stderr
        assert xferd.cli("export", "--user", ann, "--ejabberd-hash", "sha256", "-o",
                         str(tmp_path / "x.xml")).returncode == 1     # needs --dialect
        for jid in (ben, cy):
            ctl(ejabberd, "import_piefxis", str(files[jid]))
        (await login(ejabberd, f"{ben}/a", PASSWORD, mechanism="SCRAM-SHA-256")).disconnect()
        await login(ejabberd, f"{cy}/a", PASSWORD, mechanism="SCRAM-SHA-256",
                    expect="failed_auth")
        (await login(ejabberd, f"{cy}/b", PASSWORD, mechanism="PLAIN")).disconnect()
    finally:
        ejabberd.stop()
