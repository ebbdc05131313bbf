"""Message archives in XEP-0227 files (storage/pie_mam.py) through the real CLI:
``xferd export`` writes an account's archive in Prosody's form, ``xferd
import`` brings it back (ids, timestamps, stanzas), a second import adds
nothing, ``import --as`` readdresses the account's own JID only, a bad entry
stops the import before anything is written, and reading a long archive
keeps memory flat."""

import os
import stat
import subprocess
import sys
from pathlib import Path

from lxml import etree

from server.xmpp import timestamps
from server.xmpp.stanza import from_text, to_text
from storage.api import ArchivedMessage
from storage.sqlite import SQLiteStorage

PIE_MAM = "urn:xmpp:pie:0#mam"
MAM = "urn:xmpp:mam:2"
FWD = "urn:xmpp:forward:0"
DELAY = "urn:xmpp:delay"
CLIENT = "jabber:client"
#: more than one batch (pie_mam.BATCH = 500) each way
COUNT = 1203
T0 = 1_600_000_000.25


def stanza(n: int, me: str = "alice@localhost") -> str:
    """The n-th message: odd ones sent by *me* from a phone, even ones from bob
    (as :func:`to_text` writes it, the form storage returns)."""
    sender, recipient = (f"{me}/phone", "bob@example.org") if n % 2 else \
        ("bob@example.org/pc", me)
    return to_text(from_text(
        f"<message xmlns='{CLIENT}' from='{sender}' to='{recipient}' type='chat' "
        f"id='m{n}'><body>hello {n} &amp; &lt;ok&gt;</body></message>"))


async def open_store(server) -> SQLiteStorage:
    store = SQLiteStorage(server.data_dir / "xferd.sqlite")
    await store.open()
    return store


async def archive_of(server, user: str, host: str = "localhost") -> list[ArchivedMessage]:
    store = await open_store(server)
    try:
        return [entry async for entry in store.iter_archive(host, user)]
    finally:
        await store.close()


async def test_archive_export_import_and_import_as(make_server, tmp_path):
    old = make_server(start=False)
    old.adduser("alice@localhost", "alice-pass")
    store = await open_store(old)
    try:
        entries = [ArchivedMessage("", T0 + n, "bob@example.org", stanza(n),
                                   with_resource="pc" if n % 2 == 0 else None)
                   for n in range(COUNT)]
        assert await store.import_archive("localhost", "alice", entries) == COUNT
    finally:
        await store.close()
    original = await archive_of(old, "alice")

    path = tmp_path / "alice.xml"
    done = old.cli("export", "--user", "alice@localhost", "-o", str(path))
    assert done.returncode == 0, done.stderr
    assert f"{COUNT} archived messages)" in done.stderr, done.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Prosody's form: user → archive → result(id) → forwarded → delay + message
    user = etree.parse(str(path)).getroot().find("{urn:xmpp:pie:0}host/{urn:xmpp:pie:0}user")
    results = user.findall(f"{{{PIE_MAM}}}archive/{{{MAM}}}result")
    assert [r.get("id") for r in results] == [e.id for e in original]
    first = results[1].find(f"{{{FWD}}}forwarded")
    assert timestamps.parse(first.find(f"{{{DELAY}}}delay").get("stamp")) == T0 + 1
    assert first.find(f"{{{CLIENT}}}message").get("from") == "alice@localhost/phone"
    assert first.findtext(f"{{{CLIENT}}}message/{{{CLIENT}}}body") == "hello 1 & <ok>"

    # a host export (one file per user) carries it the same way
    host_dir = tmp_path / "host"
    done = old.cli("export", "--host", "localhost", "-o", str(host_dir))
    assert done.returncode == 0, done.stderr
    in_host = etree.parse(str(host_dir / "localhost" / "alice.xml")).getroot()
    assert [r.get("id") for r in in_host.iterfind(f".//{{{MAM}}}result")] == \
        [e.id for e in original]

    new = make_server(start=False)
    dry = new.cli("import", "--init", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would import 1 user (" in dry.stderr and f"{COUNT} archived messages)" in dry.stderr
    done = new.cli("import", "--init", str(path))
    assert done.returncode == 0, done.stderr
    assert f"{COUNT} archived messages)" in done.stderr, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    copied = await archive_of(new, "alice")
    assert [(e.id, e.timestamp, e.with_jid, e.stanza) for e in copied] == \
        [(e.id, e.timestamp, e.with_jid, e.stanza) for e in original]
    assert {(e.source, e.source_id) for e in copied[:3]} == \
        {("alice@localhost", e.id) for e in original[:3]}          # marked as imported
    again = new.cli("import", str(path))
    assert "alice@localhost already exists (or was deleted after moving): skipped " \
        f"(`xferd import --history-only` adds its {COUNT} archived messages)" in again.stderr, \
        again.stderr
    assert len(await archive_of(new, "alice")) == COUNT

    # --as: the account's own JID readdressed (resource kept), bob's untouched
    done = new.cli("import", str(path), "--as", "carol@localhost")
    assert done.returncode == 0, done.stderr
    assert f"{COUNT} archived messages" in done.stderr, done.stderr
    moved = await archive_of(new, "carol")
    assert [(e.timestamp, e.with_jid) for e in moved] == \
        [(e.timestamp, e.with_jid) for e in original]
    assert moved[1].stanza == stanza(1, "carol@localhost")
    assert moved[2].stanza == stanza(2, "carol@localhost")
    assert (moved[0].source, moved[0].source_id) == ("alice@localhost", original[0].id)
    assert "alice@localhost" not in "".join(e.stanza for e in moved)


def _document(path, results: str) -> None:
    path.write_text(
        "<?xml version='1.0'?><server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>"
        "<user name='dora'><scram-credentials xmlns='urn:xmpp:pie:0#scram' "
        "mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>c2FsdHNhbHQ=</salt>"
        "<server-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</server-key>"
        "<stored-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</stored-key></scram-credentials>"
        f"<archive xmlns='{PIE_MAM}'>{results}</archive></user></host></server-data>")


def _result(n: int, stamp: str = "2020-01-02T03:04:05Z") -> str:
    return (f"<result xmlns='{MAM}' id='id-{n}'><forwarded xmlns='{FWD}'>"
            f"<delay xmlns='{DELAY}' stamp='{stamp}'/>"
            f"<message xmlns='{CLIENT}' from='eve@example.org/x' to='dora@localhost' "
            f"type='chat'><body>{'x' * 200} {n}</body></message></forwarded></result>")


async def test_a_bad_entry_stops_the_import_before_anything_is_written(make_server, tmp_path):
    path = tmp_path / "bad.xml"
    _document(path, _result(1) + _result(2, stamp="yesterday"))
    server = make_server(start=False)
    done = server.cli("import", "--init", str(path))
    assert done.returncode != 0
    assert "bad.xml:1:" in done.stderr and "nothing imported" in done.stderr, done.stderr
    assert server.cli("users").stdout.split() == []


def test_what_cannot_be_an_entry_of_the_account_is_skipped_with_a_warning(tmp_path):
    from storage import pie
    path = tmp_path / "odd.xml"
    foreign = _result(2).replace("to='dora@localhost'", "to='zed@localhost'")
    _document(path, _result(1) + "<note xmlns='urn:example'>hi</note>" + foreign + _result(3))
    warnings = []
    entries = [e for item in pie.iter_document(path, warn=warnings.append)
               if isinstance(item, pie.ArchiveBatch) for e in item.entries]
    assert [e.source_id for e in entries] == ["id-1", "id-3"]
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "skipped <note/> in the archive",
        "skipped archive entry: archived message from 'eve@example.org/x' to "
        "'zed@localhost' is not dora@localhost's"]


#: reads the document named in argv[1]: prints entries seen and peak RSS growth (KiB)
_PROBE = """
import resource, sys
from storage import pie
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seen = sum(len(item.entries) for item in pie.iter_document(sys.argv[1], warn=lambda _: None)
           if isinstance(item, pie.ArchiveBatch))
print(seen, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def test_reading_a_long_archive_keeps_memory_flat(tmp_path):
    """The parsed tree (libxml2's memory, which tracemalloc does not see) and
    the entries stay small: 30,000 entries (~12 MB of XML, ~75 MB as one tree)
    are read in a few MB more than 1,000."""
    growth = {}
    for count in (1000, 30000):
        path = tmp_path / f"archive-{count}.xml"
        _document(path, "".join(_result(n) for n in range(count)))
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True,
                              text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 0, done.stderr
        seen, growth[count] = map(int, done.stdout.split())
        assert seen == count
    assert growth[30000] - growth[1000] < 8 * 1024, growth
