"""The SQLite store on a real file: atomic writes, cascade, schema versions."""

import sqlite3

import pytest

from server.xmpp.sasl import make_all_credentials, make_credentials
from storage.api import StorageError
from storage.sqlite import MIGRATIONS, SQLiteStorage


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStorage(tmp_path / "x.sqlite")
    await s.open()
    yield s
    await s.close()


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
