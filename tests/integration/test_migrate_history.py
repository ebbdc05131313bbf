"""``xferd migrate --history`` between real xferd processes (the CLI in a
subprocess, as tests/integration/test_migrate.py runs it).

a.test holds the old account and its archive (two local users chatting),
b.test the new account: the archive goes over with the history import, a
slixmpp MAM client on the new account sees the same conversation, in order,
with the original timestamps; a run resumed from the middle doubles nothing.
c.test runs without MAM: moving there writes a XEP-0227 file that ``xferd
import --history-only`` loads; moving away from it copies no history.
"""

import json
import time
from types import SimpleNamespace

import pytest

from storage.api import ArchivedMessage
from storage.sqlite import SQLiteStorage
from tests.harness import XferdProcess, login
from tests.integration.test_migrate import run_migrate
from tests.mam_client import MamClient, chat, conversation, replace_account

pytestmark = pytest.mark.timeout(240)

MESSAGES = 30


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    servers = {
        "a": XferdProcess(tmp_path_factory.mktemp("a"), domains=("a.test",)),
        "b": XferdProcess(tmp_path_factory.mktemp("b"), domains=("b.test",)),
        "c": XferdProcess(tmp_path_factory.mktemp("c"), domains=("c.test",),
                          overrides={"mam": {"enabled": False}}),
    }
    for proc in servers.values():
        for user in ("old", "carol", "new", "next", "odd"):
            proc.adduser(f"{user}@{proc.domains[0]}", "pw")
        proc.start()                # no s2s needed: nobody has contacts to ask
    yield SimpleNamespace(**servers)
    for proc in servers.values():
        proc.stop()


_made: dict = {}


@pytest.fixture
async def history(world):
    """old@a.test and carol@a.test chat (once per module); old's MAM view of it."""
    if "a" not in _made:
        old = await login(world.a, "old@a.test/r", "pw", client_cls=MamClient)
        carol = await login(world.a, "carol@a.test/r", "pw", client_cls=MamClient)
        try:
            for client in (old, carol):
                client.send_presence()
            for n in range(MESSAGES):
                if n % 2:
                    await chat(old, carol, "carol@a.test", f"old says {n}")
                else:
                    await chat(carol, old, "old@a.test", f"carol says {n}")
            _made["a"] = await conversation(old)
        finally:
            await old.close()
            await carol.close()
    assert len(_made["a"]) == MESSAGES
    return _made["a"]


def moved(seen, new):
    return [(replace_account(sender, "old@a.test", new), replace_account(to, "old@a.test", new),
             body, stamp) for sender, to, body, stamp, _ in seen]


def migrate(world, old_server, new_server):
    """run_migrate between two servers of *world* (it takes world.a → world.b)."""
    return lambda *args, **kw: run_migrate(SimpleNamespace(a=old_server, b=new_server), *args,
                                           **kw)


def cafiles(old_server, new_server):
    return ("--old-cafile", str(old_server.cert(old_server.domains[0])),
            "--new-cafile", str(new_server.cert(new_server.domains[0])))


async def test_history_moves_into_the_new_accounts_archive(world, history, tmp_path):
    new = "new@b.test"
    code, out, err = await run_migrate(world, "old@a.test", new, tmp_path, "--history",
                                       "--wait", "0", "--dry-run")
    assert code == 0, err
    assert f"history: {MESSAGES} archived messages, handed to {new}'s archive" in out, out
    code, out, err = await run_migrate(world, "old@a.test", new, tmp_path, "--history",
                                       "--wait", "0")
    assert code == 0, out + err
    assert f"history: {MESSAGES} messages copied ({MESSAGES} new here, 0 already there" \
        in err, err
    client = await login(world.b, f"{new}/r", "pw", client_cls=MamClient)
    try:
        seen = await conversation(client)
        assert [s[:4] for s in seen] == moved(history, new)

        # as if the first run had broken off after the 10th message: the rerun continues
        # after it, and the new archive, which has them all, adds nothing
        state_path = tmp_path / "xferd" / f"xferd-migrate-old@a.test-{new}.json"
        state = json.loads(state_path.read_text())
        state["done"].remove("history")
        state["history"] = {"last": history[9][4], "copied": 10}
        state_path.write_text(json.dumps(state))
        code, out, err = await run_migrate(world, "old@a.test", new, tmp_path, "--history",
                                           "--wait", "0")
        assert code == 0, out + err
        assert f"history: resuming after {history[9][4]} (10 messages copied before)" in err
        assert f"history: {MESSAGES} messages copied (0 new here, {MESSAGES - 10} already " \
            "there" in err, err
        assert await conversation(client) == seen
        # and once done, done
        code, out, err = await run_migrate(world, "old@a.test", new, tmp_path, "--history",
                                           "--wait", "0")
        assert "history: done in an earlier run" in err, err
    finally:
        await client.close()


async def test_without_mam_on_the_new_server_the_history_is_a_file(world, history,
                                                                  tmp_path):
    path = tmp_path / "history.xml"
    code, out, err = await migrate(world, world.a, world.c)(
        "old@a.test", "next@c.test", tmp_path, "--history", "--history-file", str(path),
        "--wait", "0", "--no-statement", *cafiles(world.a, world.c), cafiles=False)
    assert code == 0, out + err
    assert f"history: {MESSAGES} archived messages of old@a.test are in {path}" in out, out
    done = world.c.cli("import", str(path), "--history-only")
    assert done.returncode == 0, done.stderr
    assert f"added {MESSAGES} archived messages to 1 account (next@c.test)" in done.stderr, \
        done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    again = world.c.cli("import", str(path), "--history-only")
    assert "added 0 archived messages to 1 account" in again.stderr, again.stderr
    store = SQLiteStorage(world.c.data_dir / "xferd.sqlite")
    await store.open()
    try:
        entries = [e async for e in store.iter_archive("c.test", "next")]
    finally:
        await store.close()
    assert [(e.timestamp, e.with_jid, e.source) for e in entries] == \
        [(s[3], "carol@a.test", "next@c.test") for s in history]
    assert all("old@a.test" not in e.stanza and "next@c.test" in e.stanza for e in entries)


async def test_an_old_server_without_mam_has_no_history_to_copy(world, tmp_path):
    code, out, err = await migrate(world, world.c, world.b)(
        "old@c.test", "next@b.test", tmp_path, "--history", "--wait", "0", "--no-statement",
        *cafiles(world.c, world.b), cafiles=False)
    assert code == 0, out + err
    assert "history: old@c.test offers no message archive (urn:xmpp:mam:2): nothing to copy" \
        in err, err


async def test_messages_the_new_server_refuses_are_left_out_and_named(world, tmp_path):
    """odd@a.test's archive (written straight into storage) holds a message
    dated tomorrow, which the new server refuses, and one that is neither from
    nor to the account, which cannot be the new account's: the others move."""
    now = time.time()
    rows = [(now - 3600, "odd@a.test/r", "dan@a.test", "first"),
            (now + 86400, "dan@a.test/r", "odd@a.test", "from tomorrow"),
            (now - 1800, "eve@x.test/r", "dan@a.test", "not odd's"),
            (now - 60, "dan@a.test/r", "odd@a.test/r", "last")]
    store = SQLiteStorage(world.a.data_dir / "xferd.sqlite")
    await store.open()
    try:
        await store.import_archive("a.test", "odd", [ArchivedMessage(
            "", stamp, "dan@a.test", f"<message xmlns='jabber:client' from='{sender}' "
            f"to='{to}' type='chat'><body>{body}</body></message>")
            for stamp, sender, to, body in rows])
    finally:
        await store.close()
    code, out, err = await run_migrate(world, "odd@a.test", "odd@b.test", tmp_path,
                                       "--history", "--wait", "0", "--no-statement")
    assert code == 0, out + err
    assert "history: 4 messages copied (2 new here, 0 already there, 1 not the account's, " \
        "1 refused)" in err, err
    assert "history: odd@b.test refused message" in err
    client = await login(world.b, "odd@b.test/r", "pw", client_cls=MamClient)
    try:
        seen = await conversation(client)
    finally:
        await client.close()
    assert [s[:3] for s in seen] == [("odd@b.test", "dan@a.test", "first"),
                                     ("dan@a.test", "odd@b.test", "last")]
