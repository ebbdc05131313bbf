"""XEP-0227 documents as other servers write them, read by storage/pie.py.

The fixtures copy the peers' output byte for byte in shape (quoting, no
newlines, namespace declarations, element order), not in content:

* ejabberd 21.12+ (``ejabberd_piefxis:export_host``): a main file
  ``YYYYMMDD-hhmmss.xml`` holding one ``<xi:include/>`` per host, and a host
  file ``YYYYMMDD-hhmmss_host_with_underscores.xml`` with every ``<user/>``
  inline, all on one line; one ``<scram-credentials/>`` per user in the
  server's ``auth_scram_hash`` (SHA-1, SHA-256 or SHA-512), its salt and keys
  base64-encoded twice (storage/pie_ejabberd.py), or ``password='…'`` for
  plain storage; offline messages with ejabberd's
  "Offline Storage" delay, vCard, privacy lists, roster, pending requests as
  presences (with their status), private XML; no PEP, no MAM.
* older ejabberd documents, which its importer still reads: the legacy
  namespace and ``password='scram:[sha256,|sha512,]StoredKey,ServerKey,Salt,Count'``,
  the values base64-encoded twice as well.
* Prosody 0.12 (``mod_storage_xep0227``, written by prosody-migrator or
  ``storage = "xep0227"``; checked against Debian's 0.12.3 by
  tests/interop/test_prosody_pie.py): one file per user, no XML declaration,
  account fields beyond SCRAM as attributes in
  ``http://prosody.im/protocol/extended-xep0227`` (one prefix per
  attribute), ``<query version>``, the pending request as a presence without
  a namespace (so in the PIE one), a PEP form listing every option with empty
  values for defaults, and a MAM archive.

The ejabberd shapes come from reading src/ejabberd_piefxis.erl (export_user,
format_scram_password, get_roster, get_offline, make_piefxis_*_head,
parse_scram_password for the legacy form) and were checked against files
ejabberd 23.01 wrote (tests/interop/test_ejabberd_pie.py).
"""

import base64
import hashlib
import hmac

import pytest

from server.xmpp import timestamps
from server.xmpp.sasl import check_password, make_credentials
from storage import pie
from storage.pie_ejabberd import encode as ejabberd_b64

XI = pie.XI_NS
STAMP = "20250102-030405"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_xml(creds, order=("iter-count", "salt", "server-key", "stored-key"), *,
              mechanism=None, encode=b64) -> str:
    """ejabberd's child order by default (pass encode=ejabberd_b64 for its
    values); Prosody's is server-key, stored-key, iter-count, salt."""
    values = {"iter-count": str(creds.iterations), "salt": encode(creds.salt),
              "server-key": encode(creds.server_key), "stored-key": encode(creds.stored_key)}
    return (f"<scram-credentials xmlns='{pie.SCRAM_NS}' "
            f"mechanism='{mechanism or creds.mechanism}'>"
            + "".join(f"<{n}>{values[n]}</{n}>" for n in order) + "</scram-credentials>")


def sha512_keys() -> tuple[bytes, bytes, bytes]:
    """salt, stored key, server key of a SCRAM-SHA-512 account (64-byte keys)."""
    salt = b"0123456789abcdef"
    salted = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha512")
    return salt, hashlib.sha512(client_key).digest(), hmac.digest(salted, b"Server Key", "sha512")


def read(path):
    warnings = []
    users = {username: (host, data) for host, username, data
             in pie.iter_users(path, warn=warnings.append)}
    return users, warnings


# -- ejabberd 21.12+ ------------------------------------------------------------------------

def ejabberd_export(directory, hosts: dict[str, str], ns=pie.PIE_NS):
    """What ``ejabberd_piefxis:export_hosts(Hosts, Dir)`` writes: the main file
    and one file per host → (main file, {host: its file})."""
    files = {host: directory / f"{STAMP}_{host.replace('.', '_')}.xml" for host in hosts}
    main = directory / f"{STAMP}.xml"
    main.write_text("<?xml version='1.0' encoding='UTF-8'?>"
                    f"<server-data xmlns='{ns}' xmlns:xi='{XI}'>"
                    + "".join(f"<xi:include href='{f.name}'/>" for f in files.values())
                    + "</server-data>")
    for host, users_xml in hosts.items():
        files[host].write_text("<?xml version='1.0' encoding='UTF-8'?>"
                               f"<host xmlns='{ns}' xmlns:xi='{XI}' jid='{host}'>"
                               f"{users_xml}</host>")
    return main, files


def one_host(directory, users_xml: str, ns=pie.PIE_NS):
    main, files = ejabberd_export(directory, {"example.org": users_xml}, ns)
    return main, files["example.org"]


def test_ejabberd_host_export(tmp_path):
    alice_creds = make_credentials("alice-pass", "SCRAM-SHA-256", 4096)
    salt, stored, server = sha512_keys()
    alice = (
        "<user name='alice'>" + scram_xml(alice_creds, encode=ejabberd_b64)
        + "<offline-messages><message xml:lang='en' to='alice@example.org' "
          "from='bob@example.net/phone' type='chat' id='m1' xmlns='jabber:client'>"
          "<body>while you were away</body><delay xmlns='urn:xmpp:delay' from='example.org' "
          "stamp='2025-01-02T03:00:00.123456Z'>Offline Storage</delay></message>"
          "</offline-messages>"
          "<vCard xmlns='vcard-temp'><FN>Alice Example</FN><NICKNAME>ali</NICKNAME></vCard>"
          "<query xmlns='jabber:iq:privacy'><default name='strict'/><list name='strict'>"
          "<item action='deny' order='1' type='jid' value='spam@example.net'/>"
          "<item action='deny' order='2' type='subscription' value='none'>"
          "<message/></item></list></query>"
          "<query xmlns='jabber:iq:roster'>"
          "<item subscription='both' name='Bob' jid='bob@example.net'><group>Friends</group>"
          "<group>Work</group></item>"
          "<item ask='subscribe' subscription='none' jid='dave@example.com'/></query>"
          "<presence xmlns='jabber:client' type='subscribe' to='alice@example.org' "
          "from='eve@example.net'><status>hi, it is Eve</status></presence>"
          "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
          "<conference jid='room@muc.example.org' autojoin='true' name='Room'/></storage>"
          "</query></user>")
    bob = ("<user name='bob'><scram-credentials xmlns='urn:xmpp:pie:0#scram' "
           f"mechanism='SCRAM-SHA-512'><iter-count>4096</iter-count>"
           f"<salt>{ejabberd_b64(salt)}</salt><server-key>{ejabberd_b64(server)}</server-key>"
           f"<stored-key>{ejabberd_b64(stored)}</stored-key>"
           "</scram-credentials><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></user>")
    carol = "<user name='carol' password='carol-pass'/>"
    main, host_file = one_host(tmp_path, alice + bob + carol)

    users, warnings = read(main)

    assert list(users) == ["alice", "bob", "carol"]
    host, data = users["alice"]
    assert host == "example.org"
    assert data.credentials == {"SCRAM-SHA-256": alice_creds}
    assert [(i.jid, i.name, i.subscription, i.ask, i.groups) for i in data.roster] == [
        ("bob@example.net", "Bob", "both", False, ("Friends", "Work")),
        ("dave@example.com", None, "none", True, ())]
    assert list(data.pending_in) == ["eve@example.net"]
    assert "<status>hi, it is Eve</status>" in data.pending_in["eve@example.net"]
    [(message, stored_at)] = data.offline
    assert "while you were away" in message and "delay" not in message   # ours is re-added
    assert stored_at == timestamps.parse("2025-01-02T03:00:00.123456Z")
    assert "<FN>Alice Example</FN>" in data.vcard
    assert list(data.private) == ["{storage:bookmarks}storage"]
    assert data.pep == []

    assert data.blocked == ["spam@example.net"]     # the default list's deny-all item

    _, bob_data = users["bob"]
    assert bob_data.credentials == {} and "<FN>Bob</FN>" in bob_data.vcard
    _, carol_data = users["carol"]
    assert check_password("carol-pass", carol_data.credentials["SCRAM-SHA-1"])

    at = f"{host_file}:1: "                        # ejabberd writes the host file on one line
    assert all(w.startswith(at) for w in warnings), warnings
    assert [w[len(at):] for w in warnings] == [
        "skipped privacy rule (type='subscription' value='none' action='deny', for some "
        "stanzas only) of list 'strict': xferd keeps only blocking (XEP-0191)",
        "skipped SCRAM credentials for unsupported mechanism 'SCRAM-SHA-512'",
        "bob@example.org has no credentials xferd can use: nobody can log in until "
        "`xferd passwd bob@example.org`",
        "carol@example.org has a plaintext password: stored as SCRAM credentials only"]


def test_ejabberd_main_file_may_name_several_hosts(tmp_path):
    """export_server writes one include per served host; each host file is read in turn."""
    main, _ = ejabberd_export(tmp_path, {"one.example": "<user name='a' password='pw'/>",
                                         "two.example": "<user name='b' password='pw'/>"})
    users, _ = read(main)
    assert {name: host for name, (host, _) in users.items()} == {"a": "one.example",
                                                                "b": "two.example"}


# -- older ejabberd: legacy namespace, password='scram:…' -------------------------------------

def legacy_scram(creds, hash_name: str | None = None) -> str:
    parts = [ejabberd_b64(creds.stored_key), ejabberd_b64(creds.server_key),
             ejabberd_b64(creds.salt), str(creds.iterations)]
    return "scram:" + ",".join(([hash_name] if hash_name else []) + parts)


def test_legacy_ejabberd_scram_passwords(tmp_path):
    sha1 = make_credentials("one-pass", "SCRAM-SHA-1", 4096)
    sha256 = make_credentials("two-pass", "SCRAM-SHA-256", 4096)
    salt, stored, server = sha512_keys()
    sha512 = (f"scram:sha512,{ejabberd_b64(stored)},{ejabberd_b64(server)},"
              f"{ejabberd_b64(salt)},4096")
    main, host_file = one_host(
        tmp_path, f"<user name='one' password='{legacy_scram(sha1)}'/>"
                  f"<user name='two' password='{legacy_scram(sha256, 'sha256')}'/>"
                  f"<user name='three' password='{sha512}'/>", ns=pie.LEGACY_NS)

    users, warnings = read(main)

    assert users["one"][1].credentials == {"SCRAM-SHA-1": sha1}
    assert users["two"][1].credentials == {"SCRAM-SHA-256": sha256}
    assert users["three"][1].credentials == {}
    assert check_password("two-pass", users["two"][1].credentials["SCRAM-SHA-256"])
    assert warnings == [
        f"{host_file}:1: skipped SCRAM credentials for unsupported mechanism 'SCRAM-SHA-512'",
        f"{host_file}:1: three@example.org has no credentials xferd can use: nobody can log "
        "in until `xferd passwd three@example.org`"]


@pytest.mark.parametrize("password", ["scram:abc", "scram:md5,a,b,c,1", "scram:!!,!!,!!,1"])
def test_unreadable_legacy_scram_stops_the_import(tmp_path, password):
    main, host_file = one_host(tmp_path, f"<user name='x' password='{password}'/>")
    with pytest.raises(pie.PieError) as caught:
        read(main)
    assert str(caught.value).startswith(f"{host_file}:1: user 'x': ")
    assert "password='scram:…'" in str(caught.value)


# -- Prosody 0.12 mod_storage_xep0227 ----------------------------------------------------------

PROSODY_SALT = b"787ed2c0-2b99-43cb-be3c-8a13c42b1b63"     # Prosody salts with a UUID string
NICK = "http://jabber.org/protocol/nick"
AVATAR = "urn:xmpp:avatar:metadata"


def prosody_form(values: dict[str, str]) -> str:
    """node_config_form:form(config, 'submit'): every option, a value only where set."""
    fields = [("hidden", "FORM_TYPE"), ("text-single", "pubsub#title"),
              ("text-single", "pubsub#description"), ("text-single", "pubsub#type"),
              ("text-single", "pubsub#max_items"), ("boolean", "pubsub#persist_items"),
              ("list-single", "pubsub#access_model"), ("list-single", "pubsub#publish_model"),
              ("list-single", "pubsub#send_last_published_item"),
              ("boolean", "pubsub#deliver_notifications"), ("boolean", "pubsub#deliver_payloads"),
              ("list-single", "pubsub#notification_type"), ("boolean", "pubsub#notify_delete"),
              ("boolean", "pubsub#notify_retract")]
    values = {"FORM_TYPE": "http://jabber.org/protocol/pubsub#node_config",
              "pubsub#deliver_notifications": "1", "pubsub#deliver_payloads": "1",
              "pubsub#notify_delete": "1", "pubsub#notify_retract": "1", **values}
    return ("<x type='submit' xmlns='jabber:x:data'>" + "".join(
        f"<field type='{kind}' var='{var}'><value>{values[var]}</value></field>"
        if var in values else f"<field type='{kind}' var='{var}'/>"
        for kind, var in fields) + "</x>")


def prosody_file(directory, creds):
    """alice@prosody.test.xml as Prosody 0.12 leaves it in its data directory."""
    ext = "http://prosody.im/protocol/extended-xep0227"
    text = (
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='prosody.test'>"
        f"<user xmlns:ns1='{ext}' ns1:roles='prosody:registered' name='alice' "
        f"xmlns:ns2='{ext}' ns2:updated='1700000000'>"
        + scram_xml(creds, ("server-key", "stored-key", "iter-count", "salt"))
        + "<query version='3' xmlns='jabber:iq:roster'>"
          "<item subscription='none' ask='subscribe' jid='dave@example.net'/>"
          "<item name='Carol' jid='carol@example.net' subscription='both'><group>Work</group>"
          "<group>Friends</group></item></query>"
          "<presence from='bob@prosody.test' type='subscribe'/>"
          "<vCard xmlns='vcard-temp'><FN>Alice Älter</FN><NICKNAME>al</NICKNAME></vCard>"
          "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'><c>blue</c></prefs>"
          "</query>"
          "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>"
          f"<configure node='{NICK}'>{prosody_form({})}</configure>"
          f"<configure node='{AVATAR}'>"
          + prosody_form({"pubsub#access_model": "open", "pubsub#max_items": "max"})
        + "</configure></pubsub>"
          "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
          f"<items node='{NICK}'><item id='current'><nick xmlns='{NICK}'>Ally</nick></item>"
          "</items></pubsub>"
          "<archive xmlns='urn:xmpp:pie:0#mam'><result xmlns='urn:xmpp:mam:2' id='a1'>"
          "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' "
          "stamp='2025-01-02T03:04:05Z'/><message xmlns='jabber:client' type='chat' "
          "to='alice@prosody.test' from='carol@example.net/x'><body>hello</body></message>"
          "</forwarded></result></archive>"
          "</user></host></server-data>")
    path = directory / "alice@prosody.test.xml"
    path.write_text(text)
    return path


def test_prosody_user_file(tmp_path):
    creds = make_credentials("alice-pw", "SCRAM-SHA-1", 10000, salt=PROSODY_SALT)
    path = prosody_file(tmp_path, creds)

    users, warnings = read(path)

    [(host, data)] = users.values()
    assert (host, list(users)) == ("prosody.test", ["alice"])
    assert data.credentials == {"SCRAM-SHA-1": creds}
    assert check_password("alice-pw", data.credentials["SCRAM-SHA-1"])
    assert [(i.jid, i.name, i.subscription, i.ask, i.groups) for i in data.roster] == [
        ("dave@example.net", None, "none", True, ()),
        ("carol@example.net", "Carol", "both", False, ("Work", "Friends"))]
    # the unqualified presence is re-homed to jabber:client and addressed to the user
    assert data.pending_in == {"bob@prosody.test": "<presence xmlns=\"jabber:client\" "
                               "from=\"bob@prosody.test\" type=\"subscribe\" "
                               "to=\"alice@prosody.test\"/>"}
    assert "<FN>Alice Älter</FN>" in data.vcard
    assert list(data.private) == ["{urn:example:prefs}prefs"]
    nodes = {node.node: (node, items) for node, items in data.pep}
    nick, nick_items = nodes[NICK]
    # options Prosody lists without a value keep our defaults (the same as Prosody's)
    assert (nick.access_model, nick.max_items) == ("presence", 1)
    assert "pubsub#title" not in nick.config
    assert nick.config["pubsub#notify_retract"] == "1"
    assert [(i.id, i.payload) for i in nick_items] == [
        ("current", f"<nick xmlns=\"{NICK}\">Ally</nick>")]
    avatar, avatar_items = nodes[AVATAR]
    assert (avatar.access_model, avatar.max_items, avatar_items) == ("open", pie.MAX_ITEMS, [])
    # extended attributes and the roster version pass silently
    assert warnings == []
    # the archive entry (storage/pie_mam.py): id, stamp, the other party, marked as imported
    [batch] = [item for item in pie.iter_document(path, warn=warnings.append)
               if isinstance(item, pie.ArchiveBatch)]
    [entry] = batch.entries
    assert (batch.host, batch.username, warnings) == ("prosody.test", "alice", [])
    assert (entry.id, entry.timestamp, entry.with_jid, entry.with_resource, entry.source,
            entry.source_id) == ("a1", timestamps.parse("2025-01-02T03:04:05Z"),
                                 "carol@example.net", "x", "alice@prosody.test", "a1")
    assert entry.stanza.startswith("<message xmlns=\"jabber:client\" type=\"chat\" "
                                   "to=\"alice@prosody.test\" from=\"carol@example.net/x\">")


@pytest.mark.parametrize("mechanism", ["scram-sha-1", "SCRAM-SHA-1-PLUS"])
def test_scram_mechanism_names_are_taken_loosely(tmp_path, mechanism):
    creds = make_credentials("pw", "SCRAM-SHA-1", 4096)
    main, _ = one_host(tmp_path, f"<user name='a'>{scram_xml(creds, mechanism=mechanism)}</user>")
    users, warnings = read(main)
    assert users["a"][1].credentials == {"SCRAM-SHA-1": creds} and warnings == []
