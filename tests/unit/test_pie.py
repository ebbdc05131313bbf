"""XEP-0227 export/import (storage/pie.py) without a server: elements built
from storage data, parsed back, the streaming reader's rules for XIncludes,
DTDs and bad input, and the storage round trip through SQLite."""

import base64
import os
import stat

import pytest
from lxml import etree

from server.xmpp.sasl import make_all_credentials
from storage import pie
from storage.api import PepItem, PepNode, RosterItem, UserData
from storage.sqlite import SQLiteStorage

HOST = "example.org"
CREDENTIALS = make_all_credentials("secret", 4096)


def sample() -> UserData:
    return UserData(
        credentials=dict(CREDENTIALS),
        roster=[RosterItem("bob@example.net", "Bob", "both", groups=("Friends", "Work")),
                RosterItem("carol@example.net", None, "none", ask=True),
                RosterItem("dave@example.net", "D", "from", approved=True)],
        pending_in={"eve@example.net": "<presence xmlns=\"jabber:client\" type=\"subscribe\" "
                                       "from=\"eve@example.net/x\" to=\"alice@example.org\"/>"},
        offline=[("<message xmlns=\"jabber:client\" from=\"bob@example.net/a\" "
                  "to=\"alice@example.org\" type=\"chat\"><body>hi &amp; bye</body></message>",
                  1700000000.123)],
        private={"{urn:example:prefs}prefs": "<prefs xmlns=\"urn:example:prefs\"><n>1</n>"
                                             "</prefs>"},
        vcard="<vCard xmlns=\"vcard-temp\"><FN>Alice</FN></vCard>",
        pep=[(PepNode("urn:xmpp:avatar:metadata", "open", 1, {}),
              [PepItem("abc", "<metadata xmlns=\"urn:xmpp:avatar:metadata\"/>")]),
             (PepNode("urn:xmpp:bookmarks:1", "whitelist", 256, {"pubsub#title": "b"}),
              [PepItem("room1@muc", "<conference xmlns=\"urn:xmpp:bookmarks:1\" name=\"R1\"/>"),
               PepItem("room2@muc", "<conference xmlns=\"urn:xmpp:bookmarks:1\" name=\"R2\"/>")])])


def comparable(data: UserData) -> UserData:
    """Everything but the PEP publication times, which XEP-0227 does not carry."""
    for _, items in data.pep:
        for item in items:
            item.published_at = 0.0
    return data


def test_user_element_has_scram_and_no_password():
    el = pie.user_element(HOST, "alice", sample())
    text = etree.tostring(el).decode()
    assert "password" not in text and "secret" not in text
    scram = el.findall(f"{{{pie.SCRAM_NS}}}scram-credentials")
    assert sorted(s.get("mechanism") for s in scram) == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
    creds = sample().credentials["SCRAM-SHA-256"]
    sha256 = [s for s in scram if s.get("mechanism") == "SCRAM-SHA-256"][0]
    assert sha256.findtext(f"{{{pie.SCRAM_NS}}}iter-count") == "4096"
    assert base64.b64decode(sha256.findtext(f"{{{pie.SCRAM_NS}}}salt")) == creds.salt
    assert base64.b64decode(sha256.findtext(f"{{{pie.SCRAM_NS}}}stored-key")) == creds.stored_key
    # pending inbound subscription as the stored stanza; offline message with a delay
    presence = el.find("{jabber:client}presence")
    assert presence.get("type") == "subscribe" and presence.get("from") == "eve@example.net/x"
    delay = el.find(f"{{{pie.PIE_NS}}}offline-messages/{{jabber:client}}message/"
                    f"{{{pie.DELAY_NS}}}delay")
    assert delay.get("stamp") == "2023-11-14T22:13:20.123Z" and delay.get("from") == HOST
    groups = [g.text for g in el.iter("{jabber:iq:roster}group")]
    assert groups == ["Friends", "Work"]
    configure = el.findall(f"{{{pie.OWNER_NS}}}pubsub/{{{pie.OWNER_NS}}}configure")
    assert [c.get("node") for c in configure] == ["urn:xmpp:avatar:metadata",
                                                  "urn:xmpp:bookmarks:1"]


def test_element_round_trip():
    el = pie.user_element(HOST, "alice", sample())
    text = etree.tostring(el)
    username, data = pie.parse_user(etree.fromstring(text), HOST, "f.xml", warn=print)
    assert username == "alice"
    assert comparable(data) == comparable(sample())


def _doc(tmp_path, body: str, name="doc.xml", ns=pie.PIE_NS):
    path = tmp_path / name
    path.write_text(f"<?xml version='1.0'?>\n<server-data xmlns='{ns}'>\n"
                    f"<host jid='{HOST}'>\n{body}\n</host>\n</server-data>\n")
    return path


def test_legacy_namespace_and_ejabberd_scram_password(tmp_path):
    creds = make_all_credentials("pw", 4096)["SCRAM-SHA-1"]
    legacy = "scram:" + ",".join([base64.b64encode(creds.stored_key).decode(),
                                  base64.b64encode(creds.server_key).decode(),
                                  base64.b64encode(creds.salt).decode(), "4096"])
    path = _doc(tmp_path, f"<user name='Old' password='{legacy}'><vCard xmlns='vcard-temp'>"
                          "<FN>O</FN></vCard></user>", ns=pie.LEGACY_NS)
    [(host, username, data)] = list(pie.iter_users(path, warn=print))
    assert (host, username) == (HOST, "old")            # the localpart is prepared
    assert data.credentials == {"SCRAM-SHA-1": creds}
    assert "<FN>O</FN>" in data.vcard


def test_unknown_elements_warn_with_line(tmp_path):
    path = _doc(tmp_path, "<user name='a'>\n<query xmlns='jabber:iq:last'/>\n</user>\n"
                          "<strange xmlns='urn:example'/>")
    warnings = []
    users = list(pie.iter_users(path, warn=warnings.append))
    assert [u[1] for u in users] == ["a"]
    assert any(f"{path}:5:" in w and "query" in w for w in warnings), warnings
    assert any(f"{path}:7:" in w and "strange" in w for w in warnings), warnings


@pytest.mark.parametrize("body, line, words", [
    ("<user name='a'><unclosed></user>", 4, "not well-formed"),
    ("<user name='a'><query xmlns='jabber:iq:roster'><item jid='x@y' subscription='maybe'/>"
     "</query></user>", 4, "subscription"),
    ("<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>1</iter-count><salt>!!</salt><server-key>a</server-key>"
     "<stored-key>a</stored-key></scram-credentials></user>", 4, "base64"),
    ("<user name='a@b'/>", 4, "bad user name"),
])
def test_bad_documents_name_file_and_line(tmp_path, body, line, words):
    path = _doc(tmp_path, body)
    with pytest.raises(pie.PieError) as caught:
        list(pie.iter_users(path, warn=print))
    assert str(caught.value).startswith(f"{path}:{line}:"), str(caught.value)
    assert words in str(caught.value)


def test_dtd_and_entities_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    path = tmp_path / "evil.xml"
    path.write_text(f"<?xml version='1.0'?>\n<!DOCTYPE server-data [\n"
                    f"<!ENTITY xxe SYSTEM 'file://{secret}'>]>\n"
                    f"<server-data xmlns='{pie.PIE_NS}'><host jid='{HOST}'>"
                    "<user name='a'><vCard xmlns='vcard-temp'><FN>&xxe;</FN></vCard></user>"
                    "</host></server-data>")
    with pytest.raises(pie.PieError, match="DOCTYPE"):
        list(pie.iter_users(path, warn=print))


@pytest.mark.parametrize("href", ["/etc/passwd", "file:///etc/passwd", "http://x/a.xml",
                                  "../outside.xml", "a.xml#xpointer(/)"])
def test_xinclude_must_be_relative(tmp_path, href):
    path = tmp_path / "main.xml"
    path.write_text(f"<server-data xmlns='{pie.PIE_NS}' xmlns:xi='{pie.XI_NS}'>"
                    f"<xi:include href='{href}'/></server-data>")
    with pytest.raises(pie.PieError, match="relative"):
        list(pie.iter_users(path, warn=print))


def test_xinclude_parse_text_and_loops_refused(tmp_path):
    path = tmp_path / "main.xml"
    path.write_text(f"<server-data xmlns='{pie.PIE_NS}' xmlns:xi='{pie.XI_NS}'>"
                    "<xi:include href='h.xml' parse='text'/></server-data>")
    with pytest.raises(pie.PieError, match="parse"):
        list(pie.iter_users(path, warn=print))
    path.write_text(f"<server-data xmlns='{pie.PIE_NS}' xmlns:xi='{pie.XI_NS}'>"
                    "<xi:include href='h.xml'/></server-data>")
    (tmp_path / "h.xml").write_text(f"<host xmlns='{pie.PIE_NS}' xmlns:xi='{pie.XI_NS}' "
                                    f"jid='{HOST}'><xi:include href='h.xml'/></host>")
    with pytest.raises(pie.PieError, match="expected <user/>|loop"):
        list(pie.iter_users(path, warn=print))


def test_xinclude_inside_user_is_not_followed(tmp_path):
    (tmp_path / "other.xml").write_text("<vCard xmlns='vcard-temp'><FN>injected</FN></vCard>")
    path = _doc(tmp_path, f"<user name='a' xmlns:xi='{pie.XI_NS}'><xi:include href='other.xml'/>"
                          "</user>")
    warnings = []
    [(_, _, data)] = list(pie.iter_users(path, warn=warnings.append))
    assert data.vcard is None
    assert any("include" in w for w in warnings)


async def test_storage_round_trip_and_host_layout(tmp_path):
    store = SQLiteStorage(tmp_path / "a.sqlite")
    await store.open()
    try:
        for name in ("alice", "bob", "..", "ünïcode"):
            assert await store.import_user(HOST, name, sample())
        assert not await store.import_user(HOST, "alice", UserData())    # exists: untouched
        assert comparable(await store.export_user(HOST, "alice")) == comparable(sample())
        assert await store.export_user(HOST, "nobody") is None
        seen = []
        summary = await pie.export_host(store, HOST, tmp_path / "out",
                                        progress=lambda d, t: seen.append((d, t)), every=2)
    finally:
        await store.close()
    assert summary.users == 4 and seen == [(2, 4), (4, 4)]
    out = tmp_path / "out"
    files = [out / "main.xml", out / f"{HOST}.xml", *sorted((out / HOST).iterdir())]
    assert len(files) == 6
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    assert stat.S_IMODE(os.stat(out / HOST).st_mode) == 0o700

    other = SQLiteStorage(tmp_path / "b.sqlite")
    await other.open()
    try:
        dry = await pie.import_file(other, out / "main.xml", hosts=[HOST], dry_run=True,
                                    warn=print)
        assert dry.users == 4 and await other.list_users(HOST) == []
        done = await pie.import_file(other, out / "main.xml", hosts=[HOST], warn=print)
        assert done.users == 4 and done.skipped == 0
        assert sorted(await other.list_users(HOST)) == sorted(["alice", "bob", "..", "ünïcode"])
        for name in ("alice", ".."):
            assert comparable(await other.export_user(HOST, name)) == comparable(sample())
        again = await pie.import_file(other, out / "main.xml", hosts=[HOST], warn=print)
        assert again.users == 0 and again.skipped == 4
        with pytest.raises(pie.PieError, match="not served"):
            await pie.import_file(other, out / "main.xml", hosts=["elsewhere"], warn=print)
    finally:
        await other.close()
