"""xferd accounts moved into a real Prosody 0.12 with SQL storage (SQLite through LuaDBI).

The move is the one a Prosody admin makes: ``xferd export --user`` per
account, then ``prosody-migrator`` from the ``xep0227`` driver into
``storage = "sql"`` (driven as in test_prosody_pie.py), then Prosody on that
database. Prosody's SQL layer writes a salt whole but reads it back cut at
its first zero byte (LuaDBI's SQLite3 driver returns it so; the test reads
it with LuaDBI too), so an account whose SCRAM salt holds one cannot log in
there — the same file works with Prosody's file storage. RFC 5802 §9 asks
only for random salts; xferd's have no zero byte any more
(server/xmpp/sasl.py ``new_salt``), ``xferd export`` names the accounts
whose old salt has one, and their next PLAIN login to xferd renews it.

The old kind of account is *zed*: imported from a XEP-0227 file whose
SCRAM-SHA-1 salt has a zero byte (the salts older xferd made: 16 random
bytes, one account in sixteen). Prosody 0.12 keeps and checks SCRAM-SHA-1
keys only (its ``password_hash`` default), so that is the salt that matters;
zed's SCRAM-SHA-256 salt is clean, which is also what a PLAIN login to xferd
is checked against.
"""

import base64
import os
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.xmpp.sasl import make_credentials
from tests.harness import login
from tests.interop.test_prosody_pie import require_migrator, run_migrator
from tests.prosody import PROSODY_DOMAIN, ProsodyProcess, lua

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

#: accounts xferd makes itself (adduser): each has new salts
FRESH = [f"fresh{n}@{PROSODY_DOMAIN}" for n in range(8)]
ZED = f"zed@{PROSODY_DOMAIN}"
PASSWORD = "salt-and-pepper"
#: a salt of the old kind, with a zero byte inside
ZERO_SALT = bytes.fromhex("5a00c3e1774b09f2a1d0e3b6c8f4201b")


def require_sql_driver() -> None:
    """As require_prosody: skip, or fail under CI, without LuaDBI's SQLite3 driver."""
    require_migrator()
    done = subprocess.run(["lua5.4", "-e", "require('DBI') require('dbd.sqlite3')"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        message = ("Prosody's SQL storage needs LuaDBI's SQLite3 driver "
                   "(apt-get install lua-dbi-sqlite3)")
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def old_account_file(path) -> None:
    """A XEP-0227 file (§4, urn:xmpp:pie:0#scram) for zed, with SCRAM keys as
    an older xferd stored them: the SCRAM-SHA-1 salt holds a 0x00."""
    def scram(mechanism: str, salt: bytes | None) -> str:
        creds = make_credentials(PASSWORD, mechanism, 4096, salt=salt)
        values = {"iter-count": str(creds.iterations)} | {
            name: base64.b64encode(value).decode() for name, value in
            (("salt", creds.salt), ("server-key", creds.server_key),
             ("stored-key", creds.stored_key))}
        return (f"<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='{mechanism}'>"
                + "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
                + "</scram-credentials>")
    path.write_text(
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<server-data xmlns='urn:xmpp:pie:0'><host jid='{PROSODY_DOMAIN}'><user name='zed'>"
        f"{scram('SCRAM-SHA-1', ZERO_SALT)}{scram('SCRAM-SHA-256', None)}"
        "</user></host></server-data>")


def export_users(xferd, jids, directory) -> list[str]:
    """``xferd export --user JID -o DIR/JID.xml`` for each (two at a time);
    the warning lines they printed."""
    directory.mkdir()

    def export(jid) -> subprocess.CompletedProcess:
        return xferd.cli("export", "--user", jid, "-o", str(directory / f"{jid}.xml"))
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(export, jids))
    for done in runs:
        assert done.returncode == 0, done.stderr
    return [line for done in runs for line in done.stderr.splitlines()
            if line.startswith("warning:")]


def migrate_into(prosody: ProsodyProcess, workdir, exported) -> None:
    """prosody-migrator: the xep0227 files → *prosody*'s storage (SQL or internal)."""
    if prosody.database is not None:
        target = {"type": "sql", "driver": "SQLite3", "database": prosody.database}
    else:
        target = {"type": "internal", "path": prosody.data_dir}
    log = run_migrator(workdir, exported, {"type": "xep0227",
                                           "hosts": {PROSODY_DOMAIN: ["accounts"]}}, target)
    assert "error" not in log.lower(), log


SALT_QUERY = ("SELECT value FROM prosody WHERE host = ? AND user = ? AND store = 'accounts' "
              "AND key = 'salt'")


def stored_salt(prosody: ProsodyProcess, user: str) -> bytes:
    """The salt as Prosody's SQL storage wrote it (its ``prosody`` key-value table)."""
    with sqlite3.connect(prosody.database) as db:
        db.text_factory = bytes
        (value,) = db.execute(SALT_QUERY, (PROSODY_DOMAIN, user)).fetchone()
    return value


def salt_size_read_back(prosody: ProsodyProcess, user: str) -> int:
    """The length of that salt as Prosody gets it: read with LuaDBI, its SQL library."""
    script = (f"local db = assert(require('DBI').Connect('SQLite3', {lua(prosody.database)})) "
              f"local q = assert(db:prepare({lua(SALT_QUERY)})) "
              f"q:execute({lua(PROSODY_DOMAIN)}, {lua(user)}) "
              "for row in q:rows() do print(#row[1]) end")
    done = subprocess.run(["lua5.4", "-e", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


async def logs_in(server, jid: str) -> bool:
    """SCRAM-SHA-1 (what Prosody 0.12 keeps) with the password: in, or refused."""
    client = await login(server, f"{jid}/t", PASSWORD, mechanism="SCRAM-SHA-1",
                         expect="session")
    client.disconnect()
    return True


async def refused(server, jid: str) -> None:
    await login(server, f"{jid}/t", PASSWORD, mechanism="SCRAM-SHA-1", expect="failed_auth")


async def test_exported_accounts_log_in_to_prosody_with_sql_storage(make_server, dns,
                                                                   tmp_path):
    """Every account of an xferd export logs in to Prosody with SQL storage;
    an old account whose salt has a zero byte is named by the export, cannot
    log in there (it can with Prosody's file storage), and can once a PLAIN
    login to xferd has given it new salts."""
    require_sql_driver()
    xferd = make_server(domains=(PROSODY_DOMAIN,), start=False)
    for jid in FRESH:
        xferd.adduser(jid, PASSWORD)
    old_account_file(tmp_path / "zed.xml")
    done = xferd.cli("import", str(tmp_path / "zed.xml"))
    assert done.returncode == 0 and "imported 1 user" in done.stderr, done.stderr
    xferd.start()

    # the export names zed, and zed alone
    warnings = export_users(xferd, FRESH + [ZED], tmp_path / "before")
    assert len(warnings) == 1 and ZED in warnings[0] and "SCRAM-SHA-1 salt" in warnings[0], \
        warnings
    assert "Prosody with SQL storage" in warnings[0] and "PLAIN login" in warnings[0]

    # Prosody with SQL storage: the fresh accounts log in, zed does not — its salt was cut
    sql = ProsodyProcess(tmp_path / "sql", dns_port=dns.port, sql=True)
    migrate_into(sql, tmp_path, tmp_path / "before")
    # written whole, read back cut at the zero byte
    assert stored_salt(sql, "zed") == ZERO_SALT
    assert salt_size_read_back(sql, "zed") == ZERO_SALT.index(0)
    sql.start()
    try:
        for jid in FRESH:
            assert await logs_in(sql, jid)
        await refused(sql, ZED)
    finally:
        sql.stop()

    # the same files with Prosody's file storage: zed logs in there
    files = ProsodyProcess(tmp_path / "files", dns_port=dns.port)
    migrate_into(files, tmp_path, tmp_path / "before")
    files.start()
    try:
        assert await logs_in(files, ZED)
    finally:
        files.stop()

    # on xferd, zed's keys work as they are; a PLAIN login (over TLS) renews the salt
    assert await logs_in(xferd, ZED)
    plain = await login(xferd, f"{ZED}/p", PASSWORD, mechanism="PLAIN")
    plain.disconnect()
    xferd.wait_for_log(f"{ZED}: SCRAM-SHA-1 keys renewed from this PLAIN login")
    for mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        (await login(xferd, f"{ZED}/{mechanism}", PASSWORD, mechanism=mechanism)).disconnect()
    await login(xferd, f"{ZED}/w", PASSWORD + "!", mechanism="SCRAM-SHA-1",
                expect="failed_auth")

    # exported again: no warning, and Prosody with SQL storage lets zed in
    assert export_users(xferd, [ZED], tmp_path / "after") == []
    again = ProsodyProcess(tmp_path / "sql-again", dns_port=dns.port, sql=True)
    migrate_into(again, tmp_path, tmp_path / "after")
    salt = stored_salt(again, "zed")
    assert 0 not in salt and salt_size_read_back(again, "zed") == len(salt)
    again.start()
    try:
        assert await logs_in(again, ZED)
    finally:
        again.stop()
    assert again.errors() == [] and sql.errors() == [], again.errors() + sql.errors()
