"""``xferd migrate --history`` from a real Prosody 0.12 with mod_mam.

Two Prosody accounts chat (Prosody archives every message for both); then

(a) the old one moves to xferd with ``xferd migrate --history``: a slixmpp
    MAM client (xep_0313) on the new xferd account sees the same
    conversation, in order, with the original timestamps and the old JID
    replaced by the new one (the contact's unchanged); a rerun with a fresh
    state file hands everything over again and nothing is doubled;
(b) it moves to another Prosody account: Prosody does not take history over
    XMPP, so the tool writes a XEP-0227 file, which Prosody's own
    ``prosody-migrator`` (xep0227 driver, store ``archive-archive``) loads, and
    a MAM client on the new Prosody account sees the conversation;
(c) Prosody's own XEP-0227 export (``prosody-migrator`` internal → xep0227,
    stores ``accounts`` and ``archive-archive``) is imported by ``xferd
    import``: the account logs in to xferd and its MAM client sees the same
    conversation as on Prosody, ids and timestamps included;
(d) ``xferd export --user`` of an account with an archive goes into Prosody
    the same way (accounts and archive): the user logs in to Prosody with the
    old password and its MAM client sees every message, in order, with the
    xferd archive's ids and timestamps.
"""

import pytest

from storage import pie
from storage.api import ArchivedMessage
from storage.sqlite import SQLiteStorage
from tests.harness import login
from tests.interop.conftest import federating_xferd
from tests.interop.test_prosody_migrate import run_migrate
from tests.interop.test_prosody_pie import require_migrator, run_migrator
from tests.mam_client import MamClient, conversation, converse, replace_account
from tests.prosody import PROSODY_DOMAIN, XFERD_DOMAIN, ProsodyProcess, require_prosody

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

#: more than one page of Prosody's (50 at most)
MESSAGES = 64
OLD, PAT = f"old@{PROSODY_DOMAIN}", f"pat@{PROSODY_DOMAIN}"


@pytest.fixture(scope="module")
def prosody_mam(dns, tmp_path_factory):
    require_prosody()
    proc = ProsodyProcess(tmp_path_factory.mktemp("prosody"), PROSODY_DOMAIN,
                          dns_port=dns.port, modules=("mam",))
    dns.add_a(PROSODY_DOMAIN)
    dns.add_srv(PROSODY_DOMAIN, proc.s2s_port, target=PROSODY_DOMAIN)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def xferd(dns, prosody_mam, tmp_path_factory):
    proc = federating_xferd(dns, tmp_path_factory.mktemp("xferd"))
    yield proc
    proc.stop()


_made: dict = {}


@pytest.fixture
async def history(prosody_mam):
    """OLD and PAT chat MESSAGES times (once per module: kept in _made); what
    OLD's MAM query on Prosody returns."""
    if id(prosody_mam) not in _made:
        _made[id(prosody_mam)] = await _chat(prosody_mam)
    return _made[id(prosody_mam)]


async def _chat(prosody_mam):
    seen = await converse(prosody_mam, OLD, PAT, MESSAGES, lambda n: n % 3)
    assert len(seen) == MESSAGES and seen[0][:3] == (PAT, OLD, "pat 0"), seen[:3]
    return seen


def servers(xferd, prosody):
    return {XFERD_DOMAIN: (xferd.c2s_port, xferd.cert(XFERD_DOMAIN)),
            PROSODY_DOMAIN: (prosody.c2s_port, prosody.cert())}


def moved(seen, new):
    """What *new* should see of OLD's archive *seen* (ids are the new server's)."""
    return [(replace_account(sender, OLD, new), replace_account(to, OLD, new), body, stamp)
            for sender, to, body, stamp, _ in seen]


async def test_prosody_history_moves_to_xferd(prosody_mam, xferd, history, tmp_path):
    new = f"new@{XFERD_DOMAIN}"
    xferd.adduser(new, "pw")
    code, out, err = await run_migrate(servers(xferd, prosody_mam), OLD, new, tmp_path,
                                       "--history", "--wait", "0")
    assert code == 0, out + err
    assert f"history: {MESSAGES} messages copied ({MESSAGES} new here" in err, err

    client = await login(xferd, f"{new}/r", "pw", client_cls=MamClient)
    try:
        seen = await conversation(client)
        assert [s[:4] for s in seen] == moved(history, new)
        # a rerun from scratch (another state file) hands it all over again: nothing doubles
        code, out, err = await run_migrate(servers(xferd, prosody_mam), OLD, new, tmp_path,
                                           "--history", "--wait", "0", "--state",
                                           str(tmp_path / "again.json"))
        assert code == 0, out + err
        assert f"history: {MESSAGES} messages copied (0 new here, {MESSAGES} already there" \
            in err, err
        assert await conversation(client) == seen
    finally:
        await client.close()


async def test_history_for_a_server_without_import_is_a_file_prosody_loads(
        prosody_mam, history, tmp_path):
    require_migrator()
    new = f"next@{PROSODY_DOMAIN}"
    prosody_mam.adduser(new, "pw")
    files = tmp_path / "xep0227"
    path = files / f"{new}.xml"              # the name Prosody's xep0227 driver looks for
    code, out, err = await run_migrate(
        {PROSODY_DOMAIN: (prosody_mam.c2s_port, prosody_mam.cert())}, OLD, new, tmp_path,
        "--history", "--history-file", str(path), "--wait", "0", "--no-statement")
    assert code == 0, out + err
    assert f"history: {MESSAGES} archived messages of {OLD} are in {path}" in out, out
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # what our own import would read: the new account's, readdressed, original times
    warnings = []
    entries = [e for item in pie.iter_document(path, warn=warnings.append)
               if isinstance(item, pie.ArchiveBatch) for e in item.entries]
    assert len(warnings) == 1 and "has no credentials" in warnings[0]    # history only
    assert [(e.with_jid, e.timestamp) for e in entries] == [(PAT, s[3]) for s in history]
    assert all(OLD not in e.stanza for e in entries)

    # 0.12.3's migrator first asks the xep0227 driver for the host's own
    # archive, which fails there whatever the files hold (a nil user is
    # concatenated, mod_storage_xep0227.lua find()): --keep-going goes on to the users
    run_migrator(tmp_path, files, {"type": "xep0227", "hosts": {PROSODY_DOMAIN: [
        "archive-archive"]}}, {"type": "internal", "path": prosody_mam.data_dir},
        "--keep-going")
    client = await login(prosody_mam, f"{new}/r", "pw", client_cls=MamClient)
    try:
        seen = await conversation(client)
    finally:
        await client.close()
    assert [s[:4] for s in seen] == moved(history, new)
    assert prosody_mam.errors() == [], prosody_mam.errors()


async def test_xferd_export_with_an_archive_loads_into_prosody(prosody_mam, make_server,
                                                               tmp_path):
    require_migrator()
    ann, contact = f"ann@{PROSODY_DOMAIN}", "zoe@elsewhere.example"
    server = make_server(domains=(PROSODY_DOMAIN,), start=False)
    server.adduser(ann, "ann-pw")
    store = SQLiteStorage(server.data_dir / "xferd.sqlite")
    await store.open()
    try:
        await store.import_archive(PROSODY_DOMAIN, "ann", [ArchivedMessage(
            "", 1_700_000_000.0 + 60 * n, contact,
            f"<message xmlns='jabber:client' type='chat' "
            + (f"from='{ann}/pc' to='{contact}'" if n % 2 else f"from='{contact}/x' to='{ann}'")
            + f"><body>note {n}</body></message>") for n in range(MESSAGES)])
        kept = [e async for e in store.iter_archive(PROSODY_DOMAIN, "ann")]
    finally:
        await store.close()
    files = tmp_path / "export"
    files.mkdir()
    done = server.cli("export", "--user", ann, "-o", str(files / f"{ann}.xml"))
    assert done.returncode == 0, done.stderr
    # --keep-going: see the test above (the host's own archive)
    run_migrator(tmp_path, files, {"type": "xep0227", "hosts": {PROSODY_DOMAIN: [
        "accounts", "archive-archive"]}}, {"type": "internal", "path": prosody_mam.data_dir},
        "--keep-going")
    client = await login(prosody_mam, f"{ann}/r", "ann-pw", client_cls=MamClient)
    try:
        seen = await conversation(client)
    finally:
        await client.close()
    assert seen == [(ann if n % 2 else contact, contact if n % 2 else ann, f"note {n}",
                     e.timestamp, e.id) for n, e in enumerate(kept)]


async def test_prosody_export_with_an_archive_imports_into_xferd(prosody_mam, history,
                                                                 make_server, tmp_path):
    require_migrator()
    files = tmp_path / "xep0227"
    files.mkdir()
    # accounts first: the xep0227 driver appends archive entries to an existing user file only
    run_migrator(tmp_path, files, {"type": "internal", "path": prosody_mam.data_dir,
                                   "hosts": {PROSODY_DOMAIN: ["accounts", "archive-archive"]}},
                 {"type": "xep0227"})
    server = make_server(domains=(PROSODY_DOMAIN,), start=False)
    done = server.cli("import", "--init", str(files / f"{OLD}.xml"))
    assert done.returncode == 0, done.stderr
    assert f"imported 1 user (" in done.stderr and f"{MESSAGES} archived messages)" \
        in done.stderr, done.stderr
    server.start()
    client = await login(server, f"{OLD}/r", "pw", client_cls=MamClient,
                         mechanism="SCRAM-SHA-1")
    try:
        assert await conversation(client) == history
    finally:
        await client.close()
