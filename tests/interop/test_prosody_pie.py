"""XEP-0227 files between xferd and a real Prosody 0.12 (Debian's 0.12.3), both ways.

Prosody's side is its own ``mod_storage_xep0227``, driven the way a Prosody
admin would: ``prosody-migrator`` between the default ``internal`` storage
and the ``xep0227`` driver. Debian's prosody-migrator reads no server config,
so that driver keeps its files (``<user>@<host>.xml``) in the compiled-in data
path, /var/lib/prosody; ``run_migrator`` points that one constant at the
test's directory (a Lua preamble catching the global ``CFG_DATADIR``) and
changes nothing else. Prosody running with ``storage = "xep0227"`` is checked
too (xferd → Prosody), because it is the other documented way in; 0.12.3's
driver is not enough to run a server on (no offline or blocklist store, and
listing PEP items fails), so the migrator is the way to move data.

(a) Prosody → xferd: accounts made with prosodyctl, roster (names, groups,
    a mutual subscription, an outgoing request), a pending inbound request
    and a vCard made by real clients, a PEP nickname; exported by the
    migrator; ``xferd import`` of the files, with no warning; the users log
    in to xferd with their Prosody passwords and see it all. Prosody 0.12
    keeps SCRAM-SHA-1 keys only, so SCRAM-SHA-256 fails until the first PLAIN
    login (checked against the SHA-1 keys) adds the SHA-256 ones.
(b) xferd → Prosody: the same kind of account made on xferd, ``xferd export
    --user``; (1) the file dropped into the data directory of a Prosody with
    ``storage = "xep0227"``, (2) moved by the migrator into internal storage
    of a default Prosody; in both the user logs in with the old password and
    finds roster, pending request and vCard (and in (2) the PEP nickname).
"""

import os
import shlex
import shutil
import subprocess

import pytest
from lxml import etree
from slixmpp.xmlstream import ET

from tests.harness import ask, login
from tests.interop.test_prosody_moved import mutual
from tests.prosody import MODULES, PROSODY_DOMAIN, ProsodyProcess, lua, require_prosody

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

MIGRATOR = "prosody-migrator"
ROSTER = "jabber:iq:roster"
PUBSUB = "http://jabber.org/protocol/pubsub"
NICK = "http://jabber.org/protocol/nick"
#: what the migrator moves: accounts first (the xep0227 driver writes the
#: other stores only into an existing user file), PEP nodes with their items
STORES = ["accounts", "roster", "vcard", "private", "pep-pubsub"]
#: a password SASLprep leaves alone but that is not ASCII: both servers hash UTF-8
PASSWORD = "pässwörd-1"
#: a contact on a domain nobody serves: the DNS responder answers NXDOMAIN
FAR = "carol@elsewhere.test"


#: the accounts of both tests (each test has servers of its own)
USER, FRIEND, STRANGER = (f"{name}@{PROSODY_DOMAIN}" for name in ("alice", "bob", "dan"))


def require_migrator() -> None:
    """As require_prosody: skip, or fail under CI, when the tool is missing."""
    require_prosody()
    if shutil.which(MIGRATOR) is None:
        message = f"{MIGRATOR} is not installed (it comes with Debian's prosody package)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def run_migrator(workdir, xep0227_dir, source: dict, target: dict, *options: str) -> str:
    """``prosody-migrator [options] input output`` with *source*/*target* store configs.

    The xep0227 driver's directory is *xep0227_dir* (see the module docstring).
    """
    config = workdir / "migrator.cfg.lua"
    config.write_text(f"input {lua(source)}\noutput {lua(target)}\n")
    program = shutil.which(MIGRATOR)
    with open(program) as script:
        interpreter = shlex.split(script.readline()[2:])           # "#!/usr/bin/env lua5.4"
    preamble = ("setmetatable(_G, { __newindex = function(t, k, v) "
                f"if k == 'CFG_DATADIR' then v = {lua(xep0227_dir)} end rawset(t, k, v) end }})")
    done = subprocess.run([*interpreter, "-e", preamble, program, "--root", *options,
                           "--config", str(config), "input", "output"], cwd=workdir,
                          capture_output=True,
                          text=True, timeout=60, env=_env(workdir))
    assert done.returncode == 0 and "Done!" in done.stderr, done.stdout + done.stderr
    return done.stderr


def _env(workdir) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROSODY_CONFIG"}
    return {**env, "HOME": str(workdir)}


def internal(path) -> dict:
    return {"type": "internal", "path": path, "hosts": {PROSODY_DOMAIN: STORES}}


async def make_account_data(server, user: str, friend: str, stranger: str) -> None:
    """*user*: mutual with *friend* (named, two groups), an outgoing request to a
    far contact, a vCard and a PEP nickname; then, while *user* is offline,
    *stranger* asks to subscribe."""
    alice = await login(server, f"{user}/a", PASSWORD, mechanism="SCRAM-SHA-1")
    bob = await login(server, f"{friend}/b", PASSWORD, mechanism="SCRAM-SHA-1")
    try:
        for client in (alice, bob):                # available, so requests reach them
            client.send_presence()
            await client.fetch_roster()
        await mutual(alice, user, bob, friend)
        for payload in (
                f"<query xmlns='{ROSTER}'><item jid='{friend}' name='Bob B.'>"
                "<group>Friends</group><group>Work</group></item></query>",
                f"<query xmlns='{ROSTER}'><item jid='{FAR}' name='Carol'><group>Abroad</group>"
                "</item></query>",
                "<vCard xmlns='vcard-temp'><FN>Alice Äpfel</FN><NICKNAME>ali</NICKNAME>"
                "<EMAIL><USERID>alice@example.org</USERID></EMAIL></vCard>",
                f"<pubsub xmlns='{PUBSUB}'><publish node='{NICK}'><item id='current'>"
                f"<nick xmlns='{NICK}'>Ally</nick></item></publish></pubsub>"):
            error, answer = await ask(alice, "set", payload)
            assert error is None, ET.tostring(answer)
        alice.send_presence(pto=FAR, ptype="subscribe")
        await alice.quiet()                 # the request has been handled (a round trip)
    finally:
        await alice.close()
        await bob.close()
    dan = await login(server, f"{stranger}/d", PASSWORD, mechanism="SCRAM-SHA-1")
    dan.send_presence(pto=user, ptype="subscribe")
    await dan.ping_server()                        # the request is stored once this answers
    await dan.close()


async def check_account(server, user: str, friend: str, stranger: str, *,
                        pep: bool = True) -> None:
    """What *user* sees after the move: login with the old password only,
    roster, the pending request, vCard, nickname."""
    await login(server, f"{user}/w", PASSWORD + "x", mechanism="SCRAM-SHA-1",
                expect="failed_auth")
    client = await login(server, f"{user}/x", PASSWORD, mechanism="SCRAM-SHA-1")
    try:
        items = await client.fetch_roster()
        assert set(items) == {friend, FAR}, items
        assert (items[friend]["name"], sorted(items[friend]["groups"]),
                items[friend]["subscription"]) == ("Bob B.", ["Friends", "Work"], "both")
        assert "ask" not in items[friend]
        assert (items[FAR]["name"], items[FAR]["groups"], items[FAR]["subscription"],
                items[FAR]["ask"]) == ("Carol", ["Abroad"], "none", "subscribe")
        client.send_presence()
        request = await client.next_presence(type="subscribe", sender=stranger)
        assert request["from"].bare == stranger
        error, answer = await ask(client, "get", "<vCard xmlns='vcard-temp'/>")
        assert error is None, ET.tostring(answer)
        assert answer.findtext(".//{vcard-temp}FN") == "Alice Äpfel"
        assert answer.findtext(".//{vcard-temp}EMAIL/{vcard-temp}USERID") == "alice@example.org"
        if pep:
            error, answer = await ask(client, "get", f"<pubsub xmlns='{PUBSUB}'>"
                                                     f"<items node='{NICK}'/></pubsub>")
            assert error is None, ET.tostring(answer)
            assert answer.findtext(f".//{{{NICK}}}nick") == "Ally"
    finally:
        await client.close()


async def test_prosody_users_import_into_xferd(prosody, dns, make_server, tmp_path):
    require_migrator()
    user, friend, stranger = USER, FRIEND, STRANGER
    for jid in (user, friend, stranger):
        prosody.adduser(jid, PASSWORD)
    await make_account_data(prosody, user, friend, stranger)

    exported = tmp_path / "xep0227"
    exported.mkdir()
    run_migrator(tmp_path, exported, internal(prosody.data_dir), {"type": "xep0227"})
    files = {jid: exported / f"{jid}.xml" for jid in (user, friend, stranger)}
    assert all(f.is_file() for f in files.values()), sorted(exported.iterdir())
    # Prosody's own shape (tests/unit/test_pie_peers.py): a roster version, the
    # pending request without a namespace, SCRAM-SHA-1
    written = etree.parse(str(files[user])).getroot()
    assert written.find(".//{jabber:iq:roster}query").get("version")
    assert written.find(".//{urn:xmpp:pie:0}presence").get("from") == stranger
    assert written.find(".//{urn:xmpp:pie:0#scram}scram-credentials").get("mechanism") == \
        "SCRAM-SHA-1"

    xferd = make_server(domains=(PROSODY_DOMAIN,), start=False,
                        s2s={"nameserver": dns.address})
    for jid in (user, friend):                   # the stranger needs no account here
        done = xferd.cli("import", "--init", str(files[jid]))   # not started yet
        assert done.returncode == 0, done.stderr
        assert "imported 1 user (" in done.stderr, done.stderr
        assert [line for line in done.stderr.splitlines() if line.startswith("warning:")] == []
    xferd.start()
    await check_account(xferd, user, friend, stranger)
    friend_client = await login(xferd, f"{friend}/y", PASSWORD, mechanism="SCRAM-SHA-1")
    assert (await friend_client.fetch_roster())[user]["subscription"] == "both"
    await friend_client.close()
    # SHA-1 keys only: SCRAM-SHA-256 fails until a PLAIN login adds its keys
    await login(xferd, f"{user}/s", PASSWORD, mechanism="SCRAM-SHA-256", expect="failed_auth")
    (await login(xferd, f"{user}/p", PASSWORD, mechanism="PLAIN")).disconnect()
    (await login(xferd, f"{user}/s", PASSWORD, mechanism="SCRAM-SHA-256")).disconnect()


def xep0227_prosody(workdir, dns_port: int) -> ProsodyProcess:
    """A Prosody whose storage is XEP-0227 files in its data directory, without
    the modules whose stores the driver lacks (offline, blocklist)."""
    return ProsodyProcess(workdir, PROSODY_DOMAIN, dns_port=dns_port, settings={
        "storage": "xep0227", "modules_disabled": ["offline"],
        "modules_enabled": [m for m in MODULES if m != "blocklist"]})


async def test_xferd_users_import_into_prosody(make_server, dns, tmp_path):
    require_migrator()
    user, friend, stranger = USER, FRIEND, STRANGER
    xferd = make_server(domains=(PROSODY_DOMAIN,), start=False,
                        s2s={"nameserver": dns.address})
    for jid in (user, friend, stranger):
        xferd.adduser(jid, PASSWORD)
    xferd.start()
    await make_account_data(xferd, user, friend, stranger)
    exported = tmp_path / "export"
    exported.mkdir()
    done = xferd.cli("export", "--user", user, "-o", str(exported / f"{user}.xml"))
    assert done.returncode == 0, done.stderr
    xferd.stop()

    # (1) a Prosody that reads the files where its xep0227 storage keeps them
    direct = xep0227_prosody(tmp_path / "direct", dns.port)
    for path in exported.iterdir():
        shutil.copy(path, direct.data_dir / path.name)
    direct.start()
    try:
        await check_account(direct, user, friend, stranger, pep=False)
    finally:
        direct.stop()
    assert direct.errors() == [], direct.errors()

    # (2) the migrator moves them into a default Prosody's internal storage
    migrated = ProsodyProcess(tmp_path / "migrated", PROSODY_DOMAIN, dns_port=dns.port)
    log = run_migrator(tmp_path, exported, {"type": "xep0227", "hosts": {PROSODY_DOMAIN: STORES}},
                       {"type": "internal", "path": migrated.data_dir})
    assert "error" not in log.lower(), log
    migrated.start()
    try:
        await check_account(migrated, user, friend, stranger)
    finally:
        migrated.stop()
    assert migrated.errors() == [], migrated.errors()
