"""The message archive store on a real SQLite file: order by (timestamp,
insertion), paging both ways, filters, idempotent import, expiry, cascade,
preferences, and a database from before the archive existed."""

import sqlite3

import pytest

from server.xmpp.sasl import make_all_credentials
from storage.api import ArchivedMessage, ArchiveItemNotFound, ArchivePrefs, ArchiveQuery
from storage.sqlite import MIGRATIONS, SQLiteStorage
from tests.harness import old_database

H = "localhost"


def msg(n: int, with_jid: str = "bob@example.org", **kw) -> ArchivedMessage:
    stanza = (f"<message xmlns='jabber:client' from='{with_jid}/r' to='ann@localhost' "
              f"type='chat' id='m{n}'><body>{n}</body></message>")
    return ArchivedMessage("", 1000.0 + n, with_jid, stanza, **kw)


def bodies(page) -> list[str]:
    return [m.stanza.split("<body>")[1].split("<")[0] for m in page.messages]


@pytest.fixture
async def ann(store):
    await store.create_user(H, "ann", make_all_credentials("pw", iterations=4096))
    return store


async def test_live_and_imported_entries_sort_by_time_then_insertion(ann):
    for n in (5, 6):
        assert await ann.archive_message(H, "ann", msg(n))
    # imported later, but older: they sort first; two with one timestamp keep
    # their insertion order
    old = [msg(1, source="old@x", source_id="a"), msg(2, source="old@x", source_id="b")]
    old[1].timestamp = old[0].timestamp
    assert await ann.import_archive(H, "ann", old) == 2
    got = [m async for m in ann.iter_archive(H, "ann", batch=2)]
    assert [m.stanza for m in got] == [old[0].stanza, old[1].stanza, msg(5).stanza,
                                       msg(6).stanza]
    assert all(m.id and len(m.id) >= 16 for m in got)
    assert len({m.id for m in got}) == 4
    assert got[0].source == "old@x" and got[0].source_id == "a" and got[2].source is None
    # re-import of the same (source, source_id), or of a known id, adds nothing
    again = [msg(1, source="old@x", source_id="a"),
             ArchivedMessage(got[3].id, 1.0, "x@y", "<message/>")]
    assert await ann.import_archive(H, "ann", again) == 0
    assert not await ann.archive_message(H, "nobody", msg(7))
    assert await ann.import_archive(H, "nobody", [msg(7)]) == 0


async def test_paging_forward_backward_and_filters(ann):
    for n in range(10):
        await ann.archive_message(H, "ann", msg(n, "bob@example.org" if n % 2 else
                                                "cat@example.org"))
    every = [m async for m in ann.iter_archive(H, "ann")]
    ids = [m.id for m in every]

    first = await ann.query_archive(H, "ann", ArchiveQuery(max=4, count=True))
    assert bodies(first) == ["0", "1", "2", "3"] and not first.complete and first.count == 10
    nxt = await ann.query_archive(H, "ann", ArchiveQuery(after=[ids[7]], max=4))
    assert bodies(nxt) == ["8", "9"] and nxt.complete
    last = await ann.query_archive(H, "ann", ArchiveQuery(max=3, from_end=True))
    assert bodies(last) == ["7", "8", "9"] and not last.complete
    back = await ann.query_archive(H, "ann", ArchiveQuery(before=[ids[2]], max=3,
                                                          from_end=True))
    assert bodies(back) == ["0", "1"] and back.complete
    between = await ann.query_archive(H, "ann", ArchiveQuery(after=[ids[2]],
                                                             before=[ids[6]]))
    assert bodies(between) == ["3", "4", "5"] and between.complete

    bob = await ann.query_archive(H, "ann", ArchiveQuery(with_jid="bob@example.org",
                                                         start=1003, end=1007))
    assert bodies(bob) == ["3", "5", "7"]
    picked = await ann.query_archive(H, "ann", ArchiveQuery(ids=[ids[4], ids[1]]))
    assert bodies(picked) == ["1", "4"]
    with pytest.raises(ArchiveItemNotFound):
        await ann.query_archive(H, "ann", ArchiveQuery(after=["nope"]))
    with pytest.raises(ArchiveItemNotFound):
        await ann.query_archive(H, "ann", ArchiveQuery(ids=[ids[0], "nope"]))

    first_entry, last_entry = await ann.archive_bounds(H, "ann")
    assert (first_entry.id, last_entry.id) == (ids[0], ids[-1])
    assert await ann.archive_bounds(H, "nobody") is None


async def test_expiry_deletes_oldest_first_in_bounded_runs(ann):
    for n in range(5):
        await ann.archive_message(H, "ann", msg(n))
    assert await ann.expire_archive(1003.5, limit=2) == 2
    assert await ann.expire_archive(1003.5, limit=2) == 2
    assert await ann.expire_archive(1003.5, limit=2) == 0
    assert [m.timestamp async for m in ann.iter_archive(H, "ann")] == [1004.0]


async def test_expiry_goes_round_the_users_oldest_first_each(ann):
    await ann.create_user(H, "bob", make_all_credentials("pw", iterations=4096))
    for user in ("ann", "bob"):
        for n in range(4):
            await ann.archive_message(H, user, msg(n))
    assert await ann.expire_archive(1002.5, limit=4) == 4
    # a run stops anywhere, but never leaves a hole in an archive
    left = {user: [m.timestamp async for m in ann.iter_archive(H, user)]
            for user in ("ann", "bob")}
    assert left == {"ann": [1003.0], "bob": [1001.0, 1002.0, 1003.0]}
    assert await ann.expire_archive(1002.5, limit=4) == 6 - 4
    assert await ann.expire_archive(1002.5, limit=4) == 0
    for user in ("ann", "bob"):
        assert [m.timestamp async for m in ann.iter_archive(H, user)] == [1003.0]


async def test_preferences_and_deleting_the_account_takes_the_archive(ann, tmp_path):
    assert await ann.get_archive_prefs(H, "ann") is None
    prefs = ArchivePrefs("roster", always=["b@x", "a@x", "a@x"], never=["c@x"])
    assert await ann.set_archive_prefs(H, "ann", prefs)
    assert await ann.get_archive_prefs(H, "ann") == ArchivePrefs("roster", ["a@x", "b@x"],
                                                                  ["c@x"])
    assert not await ann.set_archive_prefs(H, "nobody", prefs)
    with pytest.raises(sqlite3.IntegrityError):
        await ann.set_archive_prefs(H, "ann", ArchivePrefs("sometimes"))
    await ann.archive_message(H, "ann", msg(1))
    assert await ann.delete_user(H, "ann")
    db = sqlite3.connect(tmp_path / "x.sqlite")
    assert db.execute("SELECT COUNT(*) FROM archive").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM archive_prefs").fetchone() == (0,)
    db.close()


async def test_a_database_from_before_the_archive_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    db = old_database(path, 6, "ann")
    db.commit()
    db.close()
    store = SQLiteStorage(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.archive_message(H, "ann", msg(1))
        page = await store.query_archive(H, "ann", ArchiveQuery())
        assert bodies(page) == ["1"] and page.complete
    finally:
        await store.close()
