"""The SQLite store on a real file: atomic writes, cascade, schema versions."""

import asyncio
import sqlite3
import threading

import pytest

from server.xmpp.sasl import make_all_credentials, make_credentials
from storage.api import RosterItem, StorageError
from storage.sqlite import MIGRATIONS, SQLiteStorage


async def test_accounts_round_trip(store):
    creds = make_all_credentials("pw", iterations=4096)
    assert await store.create_user("localhost", "ann", creds)
    assert not await store.create_user("localhost", "ann", creds)
    assert await store.user_exists("localhost", "ann")
    assert not await store.user_exists("other", "ann")
    got = await store.get_credentials("localhost", "ann", "SCRAM-SHA-256")
    assert got == creds["SCRAM-SHA-256"]
    assert await store.get_credentials("localhost", "nobody", "SCRAM-SHA-1") is None
    assert await store.list_users("localhost") == ["ann"]


async def test_password_change_replaces_all_credentials(store):
    await store.create_user("localhost", "ann", make_all_credentials("one"))
    new = {"SCRAM-SHA-1": make_credentials("two", "SCRAM-SHA-1")}
    assert await store.set_credentials("localhost", "ann", new)
    assert await store.get_credentials("localhost", "ann", "SCRAM-SHA-256") is None
    assert await store.get_credentials("localhost", "ann", "SCRAM-SHA-1") == new["SCRAM-SHA-1"]
    assert not await store.set_credentials("localhost", "ghost", new)


async def test_delete_cascades_to_credentials(store, tmp_path):
    await store.create_user("localhost", "ann", make_all_credentials("pw"))
    assert await store.delete_user("localhost", "ann")
    assert not await store.delete_user("localhost", "ann")
    db = sqlite3.connect(tmp_path / "x.sqlite")
    assert db.execute("SELECT COUNT(*) FROM scram_credentials").fetchone() == (0,)
    db.close()


@pytest.mark.hostile
async def test_failed_write_leaves_nothing_behind(store):
    creds = make_all_credentials("pw")
    bad = {"SCRAM-SHA-1": creds["SCRAM-SHA-256"]}        # filed under the wrong name
    with pytest.raises(ValueError):
        await store.create_user("localhost", "ann", bad)
    assert not await store.user_exists("localhost", "ann")
    assert await store.create_user("localhost", "ann", creds)   # the lock was released


async def test_schema_is_versioned_and_newer_files_are_refused(tmp_path):
    path = tmp_path / "v.sqlite"
    s = SQLiteStorage(path)
    await s.open()
    assert await s.schema_version() == len(MIGRATIONS)
    await s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StorageError, match="newer xferd"):
        await SQLiteStorage(path).open()


async def test_database_file_is_private(store, tmp_path):
    assert (tmp_path / "x.sqlite").stat().st_mode & 0o077 == 0


async def test_concurrent_writes_share_commits_and_a_failing_one_is_undone_alone(store, tmp_path):
    """Group commit: writes queued behind one another are committed together
    (fewer COMMITs than writes), each is acknowledged only once committed,
    and one that fails midway leaves nothing of itself and spoils no other."""
    creds = make_all_credentials("pw", iterations=4096)
    for name in ("ann", "bob"):
        assert await store.create_user("localhost", name, creds)
    good = [store.save_roster_change("localhost", "ann", f"c{i}@example.org",
                                     RosterItem(f"c{i}@example.org", name=f"C {i}"))
            for i in range(60)]
    bad_creds = {"SCRAM-SHA-1": creds["SCRAM-SHA-256"]}         # filed under the wrong name
    before = store.commits
    results = await asyncio.gather(*good[:30], store.create_user("localhost", "cy", bad_creds),
                                   store.create_user("localhost", "dee", creds), *good[30:],
                                   return_exceptions=True)
    assert isinstance(results[30], ValueError)
    assert results[31] is True
    assert all(isinstance(v, int) for v in results[:30] + results[32:])
    assert store.commits - before < 20                           # 62 writes, a few commits
    # what another connection (a fresh process would) reads is exactly the acknowledged writes
    db = sqlite3.connect(tmp_path / "x.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM roster_items WHERE username = 'ann'"
                          ).fetchone() == (60,)
        assert db.execute("SELECT username FROM accounts ORDER BY username").fetchall() == [
            ("ann",), ("bob",), ("dee",)]
        assert db.execute("SELECT COUNT(*) FROM scram_credentials WHERE username = 'cy'"
                          ).fetchone() == (0,)
    finally:
        db.close()
    versions = sorted(results[:30] + results[32:])
    assert versions == list(range(1, 61))                        # each change its own version


async def test_a_write_is_one_hand_over_and_one_transaction_off_the_loop(store):
    """What the writer thread is for: each write function runs whole, off
    the event loop's thread, inside the batch's transaction, on the one
    writer connection; writes issued in one loop turn are one hand-over
    and one COMMIT (the group commit)."""
    await store.create_user("localhost", "ann", make_all_credentials("pw", iterations=4096))
    here = threading.get_ident()
    seen = []

    def write(db):
        seen.append((threading.get_ident(), id(db), db.in_transaction))
        db.execute("INSERT INTO blocklist (host, username, jid) VALUES "
                   "('localhost', 'ann', ?)", (f"x{len(seen)}@example.org",))
        return len(seen)

    before = store.commits
    assert await store._write(write) == 1
    assert store.commits == before + 1
    results = await asyncio.gather(*(store._write(write) for _ in range(10)))
    assert sorted(results) == list(range(2, 12))
    assert store.commits == before + 2                       # ten writes, one COMMIT
    threads, connections, in_transaction = zip(*seen)
    assert here not in threads and len(set(threads)) == 1
    assert len(set(connections)) == 1
    assert all(in_transaction)
    assert len(await store.get_blocklist("localhost", "ann")) == 11


async def test_close_ends_the_storage_threads(tmp_path):
    """Each connection is closed on its own thread, then the thread ends."""
    store = SQLiteStorage(tmp_path / "t.sqlite")
    await store.open()
    threads = [store._write_thread._thread, store._read_thread._thread]
    assert all(t.is_alive() for t in threads)
    await store.close()
    for t in threads:
        t.join(10)                  # already over: close() waited for the thread's answer
        assert not t.is_alive()
    with pytest.raises(StorageError, match="closed"):
        await store.user_exists("localhost", "ann")
    with pytest.raises(StorageError, match="closed"):
        await store.create_user("localhost", "ann", make_all_credentials("pw", iterations=4096))


@pytest.mark.hostile
async def test_a_failed_commit_fails_every_write_it_held_and_the_store_goes_on(store):
    """If the COMMIT of a group fails, no write in it may be reported done.
    The failure is provoked with a foreign key checked only at COMMIT (a
    deferred one): the middle write of three refers to an account that
    does not exist."""
    await store.create_user("localhost", "ann", make_all_credentials("pw", iterations=4096))

    def orphan(db):
        db.execute("PRAGMA defer_foreign_keys = ON")
        db.execute("INSERT INTO roster_items (host, username, jid) VALUES "
                   "('localhost', 'ghost', 'x@example.org')")

    results = await asyncio.gather(
        store.save_roster_change("localhost", "ann", "a@example.org", RosterItem("a@example.org")),
        store._write(orphan),
        store.save_roster_change("localhost", "ann", "b@example.org", RosterItem("b@example.org")),
        return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results), results
    assert await store.get_roster("localhost", "ann") == (0, {})
    assert await store.save_roster_change("localhost", "ann", "c@example.org",
                                          RosterItem("c@example.org")) == 1
    assert list((await store.get_roster("localhost", "ann"))[1]) == ["c@example.org"]
