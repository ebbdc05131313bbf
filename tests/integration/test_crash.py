"""Crash consistency: ``kill -9`` in the middle of writes, then a
restart on the same data directory.

SQLite runs in WAL mode with ``synchronous = FULL`` and every change is one
``BEGIN IMMEDIATE … COMMIT`` (storage/sqlite/engine.py). What that must give, and
what each test checks after the SIGKILL:

* roster writes — every roster set or remove a client saw acknowledged is
  there, with its name and groups exactly; the one still in flight per
  worker is either wholly old or wholly new; every pushed roster version
  survived; the file passes ``integrity_check`` and ``foreign_key_check``;
* offline storage — the stored messages are a prefix of what the sender
  sent, complete and parseable, delivered once, in order, no duplicates;
* ``xferd import`` of a 3,000-user XEP-0227 file — each account is there
  whole (credentials, roster, vCard as in the file) or not at all; the
  same import run again skips the first ones, creates the rest, and the
  result equals the file;
* graceful shutdown — SIGTERM: ``<system-shutdown/>``, exit 0, and a
  message accepted just before is still there after the restart.

The XEP-0015 transfer killed mid-way is
``test_accountxfer.py::test_old_server_killed_mid_transfer_resumes_and_completes``
(also marked ``hostile``). Set ``XFERD_CRASH_SEED`` to replay a run: the seed
picks the moment of the kill and the operations, and is printed on failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from server.xmpp.sasl import ScramCredentials, make_all_credentials
from storage import pie
from storage.api import RosterItem, UserData
from tests.harness import _env, ask, login, round_trip, write_config

pytestmark = pytest.mark.hostile

ROSTER = "jabber:iq:roster"
DELAY = "urn:xmpp:delay"
SEED = int(os.environ.get("XFERD_CRASH_SEED", random.randrange(1 << 30)))


@pytest.fixture
def rng(request):
    """A seeded random source; the seed is in the failure report."""
    request.node.user_properties.append(("seed", SEED))
    print(f"XFERD_CRASH_SEED={SEED}")
    return random.Random(f"{SEED}/{request.node.name}")


def kill_9(srv) -> None:
    """SIGKILL the real server process, then let the harness forget it."""
    srv.proc.kill()
    srv.proc.wait()
    assert srv.proc.returncode == -9
    srv.stop()                      # closes the log; there is nothing left to signal


def open_db(srv) -> sqlite3.Connection:
    return sqlite3.connect(srv.data_dir / "xferd.sqlite", timeout=10)


def check_database(srv) -> None:
    """The file is sound: pages, indexes, foreign keys, JSON columns."""
    db = open_db(srv)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        for jid, subscription, groups in db.execute(
                "SELECT jid, subscription, groups FROM roster_items"):
            parsed = json.loads(groups)
            assert isinstance(parsed, list) and all(isinstance(g, str) for g in parsed), jid
            assert subscription in ("none", "to", "from", "both"), jid
        for (stanza,) in db.execute("SELECT stanza FROM offline_messages"):
            etree.fromstring(stanza)
    finally:
        db.close()


async def quietly_close(*clients) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# -- a. roster writes ------------------------------------------------------------------------

GROUPS = ["Friends", "Work", "Family", "Ünïcode & <escaped>"]


def roster_set(jid: str, state) -> str:
    if state is None:
        return f"<query xmlns='{ROSTER}'><item jid='{jid}' subscription='remove'/></query>"
    name, groups = state
    item = etree.Element(f"{{{ROSTER}}}item", jid=jid, name=name, nsmap={None: ROSTER})
    for group in groups:
        etree.SubElement(item, f"{{{ROSTER}}}group").text = group
    query = etree.Element(f"{{{ROSTER}}}query", nsmap={None: ROSTER})
    query.append(item)
    return etree.tostring(query, encoding="unicode")


async def roster_with_version(client) -> tuple[int, dict]:
    error, answer = await ask(client, "get", f"<query xmlns='{ROSTER}'/>")
    assert error is None, error
    query = answer.find(f"{{{ROSTER}}}query")
    return int(query.get("ver")), {
        item.get("jid"): (item.get("name"), tuple(sorted(g.text for g in item.findall(
            f"{{{ROSTER}}}group"))), item.get("subscription"))
        for item in query.findall(f"{{{ROSTER}}}item")}


class Ledger:
    """What one user's client knows the server has: acknowledged states, and
    the one change each worker has sent and not yet seen answered."""

    def __init__(self, contacts):
        self.acked = {jid: None for jid in contacts}        # jid → (name, groups) | None
        self.inflight: dict[str, object] = {}
        self.max_pushed = 0
        self.acks = 0


async def hammer(client, ledger: Ledger, contacts: list[str], rng, names) -> None:
    """Roster sets and removes, one at a time, on this worker's own contacts."""
    while True:
        jid = rng.choice(contacts)
        if ledger.acked[jid] is not None and rng.random() < 0.35:
            wanted = None
        else:
            n = next(names)
            groups = set(rng.sample(GROUPS, rng.randint(0, 3))) | {f"g{n}"}
            wanted = (f"name {n}", tuple(sorted(groups)))
        ledger.inflight[jid] = wanted
        error, answer = await ask(client, "set", roster_set(jid, wanted))
        assert error is None, (error, etree.tostring(answer))
        ledger.acked[jid] = wanted
        del ledger.inflight[jid]
        ledger.acks += 1


async def subscribe_churn(client, others: list[str], rng) -> None:
    """Subscriptions between the users themselves (pushes on both sides)."""
    while True:
        other = rng.choice(others)
        client.send_presence(pto=other, ptype=rng.choice(["subscribe", "subscribe",
                                                          "unsubscribe", "unsubscribed"]))
        # the wait is the point: random pacing, so that the subscription
        # pushes fall at random places among the roster writes
        await asyncio.sleep(rng.uniform(0.02, 0.1))


async def hammer_until_killed(srv, users, ledgers, rng, names) -> None:
    """Log every user in, hammer, SIGKILL the server a random instant after a
    random number of roster pushes were seen; stop the clients."""
    clients, workers = [], []
    enough = asyncio.Event()
    kill_after, pushes = rng.randint(150, 400), [0]
    for jid in users:
        client = await login(srv, f"{jid}/hammer", "pw")
        ledger = ledgers[jid]

        def on_push(iq, ledger=ledger):
            if iq["type"] == "set":
                ver = int(iq.xml.find(f"{{{ROSTER}}}query").get("ver"))
                ledger.max_pushed = max(ledger.max_pushed, ver)
                pushes[0] += 1
                if pushes[0] >= kill_after:
                    enough.set()
        client.add_event_handler("roster_update", on_push)
        client.add_event_handler(
            "presence_subscribe",
            lambda p, c=client: c.send_presence(pto=p["from"].bare, ptype="subscribed"))
        await client.fetch_roster()                    # from now on it gets pushes
        client.send_presence()
        clients.append(client)
        contacts = list(ledger.acked)
        for w in range(3):                             # three workers, four contacts each
            workers.append(asyncio.ensure_future(
                hammer(client, ledger, contacts[w * 4:(w + 1) * 4], rng, names)))
        workers.append(asyncio.ensure_future(
            subscribe_churn(client, [u for u in users if u != jid], rng)))
    await asyncio.wait_for(enough.wait(), 30)
    # the wait is the point: a random kill instant, not always just after a commit
    await asyncio.sleep(rng.uniform(0, 0.03))
    kill_9(srv)
    for task in workers:
        task.cancel()
    results = await asyncio.gather(*workers, return_exceptions=True)
    failures = [r for r in results if not isinstance(r, asyncio.CancelledError)]
    assert not failures, failures                      # every change before the kill succeeded
    await quietly_close(*clients)


async def test_kill_9_during_roster_writes(make_server, rng):
    srv = make_server(start=False, c2s={"stanza_rate": 0})
    users = [f"r{i}@localhost" for i in range(3)]
    for jid in users:
        srv.adduser(jid, "pw")
    srv.start()
    names = itertools.count(1)
    ledgers = {jid: Ledger([f"c{i}-{k}@ext.test" for k in range(12)])
               for i, jid in enumerate(users)}
    for _ in range(2):                                 # crash, recover, crash again
        await hammer_until_killed(srv, users, ledgers, rng, names)
        srv.start()
        check_database(srv)
        for jid, ledger in ledgers.items():
            client = await login(srv, f"{jid}/after", "pw")
            version, items = await roster_with_version(client)
            assert version >= ledger.max_pushed, (jid, version, ledger.max_pushed)
            for contact, acked in ledger.acked.items():
                got = items.get(contact)
                got = got[:2] if got else None
                allowed = [acked]
                if contact in ledger.inflight:          # sent, answer not seen: either
                    allowed.append(ledger.inflight.pop(contact))
                assert got in allowed, (jid, contact, got, allowed)
                ledger.acked[contact] = got
            await client.close()
    assert min(ledger.acks for ledger in ledgers.values()) > 20, "too few writes to mean much"
    # the roster is writable again
    client = await login(srv, f"{users[0]}/last", "pw")
    await client.fetch_roster()
    assert (await ask(client, "set", roster_set("after@ext.test", ("x", ("y",)))))[0] is None
    assert (await client.fetch_roster())["after@ext.test"]["groups"] == ["y"]
    await client.close()


# -- b. offline storage ----------------------------------------------------------------------

def body(i: int) -> str:
    return f"{i:05d} " + hashlib.sha256(str(i).encode()).hexdigest() * 3


def offline_count(srv, username: str) -> int:
    db = open_db(srv)
    try:
        return db.execute("SELECT COUNT(*) FROM offline_messages WHERE host = 'localhost' "
                          "AND username = ?", (username,)).fetchone()[0]
    finally:
        db.close()


async def test_kill_9_during_offline_storage(make_server, rng):
    srv = make_server(start=False, c2s={"stanza_rate": 0}, im={"offline_quota": 100000})
    srv.adduser("flood@localhost", "pw")
    srv.adduser("away@localhost", "pw")
    srv.start()
    sent = 4000
    kill_at = rng.randint(200, 1200)
    sender = await login(srv, "flood@localhost/s", "pw")
    for i in range(sent):
        sender.send_message(mto="away@localhost", mbody=body(i), mtype="chat")
        if i % 200 == 0:
            await asyncio.sleep(0)      # a yield, no time: lets slixmpp write what was queued
    committed = 0
    deadline = asyncio.get_running_loop().time() + 30
    while committed < kill_at:
        assert asyncio.get_running_loop().time() < deadline, f"only {committed} stored"
        # a poll with a deadline: the evidence is the committed count, read by a
        # connection of our own, and SQLite tells another process nothing
        await asyncio.sleep(0.01)
        committed = offline_count(srv, "away")
    kill_9(srv)
    await quietly_close(sender)

    srv.start()
    check_database(srv)
    stored = offline_count(srv, "away")
    assert committed <= stored < sent, (committed, stored)   # nothing committed was lost
    away = await login(srv, "away@localhost/back", "pw")
    away.send_presence()
    got = []
    for _ in range(stored):
        got.append(await asyncio.wait_for(away.messages.get(), 10))
    # stored messages go out (and are deleted) while the server handles the
    # initial presence, before the ping after it
    await round_trip(away)
    assert away.messages.empty(), "more messages than were stored"
    indices = [int(m["body"].split()[0]) for m in got]
    assert indices == list(range(stored)), "not the sender's order, or gaps, or duplicates"
    for i, message in zip(indices, got):
        assert message["body"] == body(i)                      # whole, not truncated
        assert message.xml.find(f"{{{DELAY}}}delay") is not None
    assert offline_count(srv, "away") == 0, "delivered messages kept"   # (the pong above)
    await away.close()
    again = await login(srv, "away@localhost/again", "pw")
    again.send_presence()
    await round_trip(again)                 # as above: the presence has been handled
    assert again.messages.empty(), "delivered twice"
    await again.close()


# -- c. xferd import -------------------------------------------------------------------------

IMPORT_USERS = 3000
PASSWORD = "imported-Passw0rd"


def fake_credentials(name: str) -> dict[str, ScramCredentials]:
    """Well-formed SCRAM credentials nobody knows the password of (fast to make)."""
    creds = {}
    for mechanism, size in (("SCRAM-SHA-1", 20), ("SCRAM-SHA-256", 32)):
        seed = hashlib.sha512(f"{mechanism}/{name}".encode()).digest()
        creds[mechanism] = ScramCredentials(mechanism, seed[:16], 4096, seed[16:16 + size],
                                            seed[64 - size:])
    return creds


def generated_users() -> list[tuple[str, UserData]]:
    real = make_all_credentials(PASSWORD, 4096)
    users = []
    for n in range(IMPORT_USERS):
        name = f"u{n:04d}"
        data = UserData()
        data.credentials = real if n in (0, IMPORT_USERS - 1) else fake_credentials(name)
        data.roster = [RosterItem(f"u{(n + k) % IMPORT_USERS:04d}@localhost", f"friend {k}",
                                  ("both", "to", "from")[k % 3], False, False,
                                  tuple(sorted({f"G{n % 7}", f"H{k}"})))
                       for k in range(1, 1 + n % 4)]
        data.vcard = (f"<vCard xmlns='vcard-temp'><FN>User {n}</FN>"
                      f"<NICKNAME>n{n}</NICKNAME></vCard>")
        users.append((name, data))
    return users


def write_pie_file(path: Path, users) -> None:
    ns = pie.PIE_NS
    with open(path, "wb") as out, etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element(f"{{{ns}}}server-data", nsmap={None: ns}):
            with xf.element(f"{{{ns}}}host", {"jid": "localhost"}):
                for name, data in users:
                    xf.write(pie.user_element("localhost", name, data), "\n")


def stored_accounts(srv) -> dict[str, dict]:
    """Every account in the file, read back in bulk: name → what it holds."""
    db = open_db(srv)
    try:
        accounts = {name: {"credentials": {}, "roster": [], "vcard": None}
                    for (name,) in db.execute("SELECT username FROM accounts")}
        for name, mech, salt, iterations, stored, server in db.execute(
                "SELECT username, mechanism, salt, iterations, stored_key, server_key "
                "FROM scram_credentials"):
            accounts[name]["credentials"][mech] = ScramCredentials(
                mech, bytes(salt), iterations, bytes(stored), bytes(server))
        for name, jid, rname, sub, ask_, approved, groups in db.execute(
                "SELECT username, jid, name, subscription, ask, approved, groups "
                "FROM roster_items ORDER BY username, jid"):
            accounts[name]["roster"].append(RosterItem(jid, rname, sub, bool(ask_),
                                                       bool(approved),
                                                       tuple(json.loads(groups))))
        for name, vcard in db.execute("SELECT username, vcard FROM vcards"):
            accounts[name]["vcard"] = vcard
        return accounts
    finally:
        db.close()


def assert_whole(name: str, data: UserData, got: dict) -> None:
    assert got["credentials"] == data.credentials, name
    assert got["roster"] == sorted(data.roster, key=lambda item: item.jid), name
    vcard = etree.fromstring(got["vcard"])
    assert vcard.tag == "{vcard-temp}vCard", name
    assert vcard.findtext("{vcard-temp}FN") == etree.fromstring(data.vcard).findtext(
        "{vcard-temp}FN"), name


async def import_until_killed(command, cwd, kill_at: int, rng) -> list[int]:
    """Run ``xferd import``; SIGKILL it a random instant after its progress
    line for *kill_at* users (created or skipped). Returns the counts seen."""
    importer = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True,
                                env=_env())
    progress = []
    try:
        while True:
            line = await asyncio.to_thread(importer.stderr.readline)
            assert line, f"the import ended before the kill: {progress[-3:]}"
            if line.startswith("import: "):
                progress.append(int(line.split()[1]))
                if progress[-1] >= kill_at:
                    break
        # the wait is the point: a random kill instant, anywhere between two lines
        await asyncio.sleep(rng.uniform(0, 0.03))
        importer.kill()
    finally:
        importer.kill()
        importer.wait()
        importer.stderr.close()
    assert importer.returncode == -9
    return progress


async def test_kill_9_during_import_then_the_same_import_completes(make_server, tmp_path, rng):
    srv = make_server()                   # the server runs beside the import, as in real life
    users = generated_users()
    source = tmp_path / "export.xml"
    write_pie_file(source, users)
    # the import's own config: same data directory, no debug log on stderr
    quiet = dict(srv.sections)
    quiet["server"] = {**srv.sections["server"], "log_level": "warning"}
    config = srv.workdir / "import.toml"
    write_config(config, quiet)
    command = [sys.executable, "-m", "server", "import", str(source), "-c", str(config),
               "--progress-every", "50"]
    present: list[str] = []
    for _ in range(3):                    # three crashes, each at a random point of pass 2
        lines = await import_until_killed(command, srv.workdir,
                                          len(present) + rng.randrange(150, 650, 50), rng)
        check_database(srv)
        accounts = stored_accounts(srv)
        before, present = present, [name for name, _ in users if name in accounts]
        assert len(accounts) == len(present), "accounts that are not in the file"
        assert lines[-1] <= len(present) < IMPORT_USERS, (lines[-1], len(present))
        assert present == [name for name, _ in users[:len(present)]], "not the file's order"
        for name, data in users[len(before):len(present)]:
            assert_whole(name, data, accounts[name])  # whole or (as checked) absent, never half

    again = subprocess.run(command, cwd=srv.workdir, capture_output=True, text=True,
                           timeout=60, env=_env())
    assert again.returncode == 0, again.stderr[-2000:]
    assert (f"imported {IMPORT_USERS - len(present)} users" in again.stderr and
            f"{len(present)} existing accounts skipped" in again.stderr), again.stderr[-2000:]
    check_database(srv)
    accounts = stored_accounts(srv)
    assert sorted(accounts) == [name for name, _ in users]
    for name, data in users:
        assert_whole(name, data, accounts[name])
    # the running server serves an account from each run, by the password behind the file
    for name in (users[0][0], users[-1][0]):
        client = await login(srv, f"{name}@localhost/i", PASSWORD)
        roster = await client.fetch_roster()
        assert len(roster) == (0 if name == "u0000" else (IMPORT_USERS - 1) % 4)
        await client.close()


# -- d. graceful shutdown keeps what was accepted --------------------------------------------

async def test_sigterm_keeps_an_offline_message_accepted_just_before(make_server):
    """SIGTERM: the connected client sees <system-shutdown/>, the process exits
    0, and a message stored for an offline user just before is there after a
    restart (the ping answered after it proves the server had taken it)."""
    srv = make_server(start=False)
    srv.adduser("sue@localhost", "pw")
    srv.adduser("tom@localhost", "pw")
    srv.start()
    sue = await login(srv, "sue@localhost/s", "pw")
    sue.send_message(mto="tom@localhost", mbody="kept across a restart", mtype="chat")
    await sue.ping_server()                    # answered in order: the message is stored
    code = await asyncio.to_thread(srv.stop)
    await asyncio.wait_for(sue.gone, 10)
    assert sue.stream_errors == ["system-shutdown"]
    assert code == 0
    srv.start()
    check_database(srv)
    tom = await login(srv, "tom@localhost/t", "pw")
    tom.send_presence()
    message = await asyncio.wait_for(tom.messages.get(), 10)
    assert message["body"] == "kept across a restart"
    assert message.xml.find(f"{{{DELAY}}}delay") is not None
    await tom.close()


# -- the store itself: a cancelled write or read must not wedge its connection ---------------

async def test_a_cancelled_transaction_does_not_wedge_the_store(tmp_path):
    """A task cancelled while its BEGIN is in flight (shutdown cancels late
    tasks) used to leave the writer inside a transaction: every later write
    failed with "cannot start a transaction within a transaction" and the
    database stayed write-locked for the command-line tools; a cancelled
    snapshot left every later read on the old snapshot."""
    from storage.sqlite import SQLiteStorage
    store = SQLiteStorage(tmp_path / "x.sqlite")
    await store.open()
    try:
        creds = fake_credentials("ann")
        for _ in range(3):
            task = asyncio.ensure_future(store.create_user("localhost", "ann", creds))
            await asyncio.sleep(0)      # a yield, no time: the write starts (its BEGIN goes out)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            snapshot = asyncio.ensure_future(store.get_roster("localhost", "ann"))
            await asyncio.sleep(0)      # a yield, no time: the read starts, then is cancelled
            snapshot.cancel()
            await asyncio.gather(snapshot, return_exceptions=True)
        assert await store.create_user("localhost", "bob", creds)
        await store.save_roster_change("localhost", "bob", "x@y", RosterItem("x@y"))
        assert (await store.get_roster("localhost", "bob"))[1].keys() == {"x@y"}
        assert not store._writer.in_transaction and not store._reader.in_transaction
        # another connection (xferd adduser beside the server) can write
        other = SQLiteStorage(tmp_path / "x.sqlite")
        await other.open()
        try:
            assert await asyncio.wait_for(other.create_user("localhost", "cy", creds), 5)
        finally:
            await other.close()
    finally:
        await store.close()
