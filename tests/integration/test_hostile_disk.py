"""A full disk costs the stanzas that write, not the session.

With the data directory full, a private-XML write got no answer and the
session was closed with ``<internal-server-error/>``. Now every stanza whose
write fails for want of room is answered with ``<resource-constraint/>`` of
type ``wait`` — RFC 6120 §8.3.3.18: "the server or recipient is busy or
lacks the system resources necessary to service the request", and §8.3.2:
``wait`` means "retry after waiting" — the session goes on, reads and logins
keep working, and writes work again once there is room.

Two ways to fill the disk:

* ``storage.max_size`` caps the database file (SQLite's ``max_page_count``).
  A write past it fails with SQLITE_FULL, the very code SQLite gives for a
  full disk (ENOSPC), and needs no privileges: the main test, where every
  storage-writing handler is tried.
* A real tmpfs, mounted for the test (root: CI runs as root; outside CI a
  non-root run skips it), filled to the last byte: the real thing.

"Room" is counted in database pages: once the cap is reached, a write that
fits in pages already there can still succeed, so every write below carries
more than a page of data (rows above ~1 KB spill into overflow pages, which
are new ones while nothing was deleted).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess

import pytest
import slixmpp

from tests.harness import RawClient, ask, login, write_config

pytestmark = pytest.mark.hostile

PRIVATE = "jabber:iq:private"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BIG = "x" * 8192                       # two pages of text
LONG_LOCAL = "c" * 1000                # a localpart whose row spills over a page
#: the tests fill the disk with private XML: its per-account quotas must not stop them first
UNQUOTED = {"private_max_fragments": 100_000, "private_max_bytes": 1 << 30}


def private(ns: str, text: str = "") -> str:
    return f"<query xmlns='{PRIVATE}'><data xmlns='{ns}'>{text}</data></query>"


async def write_private(client, ns: str, size: int):
    try:
        return await ask(client, "set", private(ns, "d" * size))
    except slixmpp.exceptions.IqTimeout:
        raise AssertionError(f"no answer to a {size}-byte private-XML write "
                             f"(stream errors: {client.stream_errors})") from None


def condition_and_type(answer) -> tuple[str | None, str | None]:
    error = answer.find("{jabber:client}error")
    if error is None:
        return None, None
    names = [child.tag.rpartition("}")[2] for child in error if child.tag.startswith(f"{{{STANZAS}}}")
             and not child.tag.endswith("}text")]
    return names[0], error.get("type")


async def fill(client, sizes=(16384, 1536)) -> int:
    """Private-XML writes, first large then small, each size until one fails:
    then no page is left. Returns how many were stored."""
    stored = 0
    for size in sizes:
        for n in range(400):
            error, answer = await write_private(client, f"urn:x:fill:{size}:{n}", size)
            if error is None:
                stored += 1
                continue
            assert (error, condition_and_type(answer)[1]) == ("resource-constraint", "wait"), \
                (error, answer)
            break
        else:
            raise AssertionError("the disk never filled up")
    return stored


def capped_size(server, extra_pages: int) -> int:
    """The database's size now plus *extra_pages* pages, in bytes."""
    with sqlite3.connect(server.data_dir / "xferd.sqlite") as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    return (pages + extra_pages) * page_size


@pytest.fixture
def full_server(make_server):
    """A server whose database may grow by 40 pages (160 KiB) past its accounts."""
    server = make_server(start=False)
    for user in ("alice", "bob", "carol"):
        server.adduser(f"{user}@localhost", "pw")
    server.sections["storage"] = {"max_size": capped_size(server, 40)}
    server.sections.setdefault("im", {}).update(UNQUOTED)
    write_config(server.config, server.sections)
    return server.start()


async def test_every_write_gets_resource_constraint_and_the_session_goes_on(full_server):
    server = full_server
    alice = await login(server, "alice@localhost/full", "pw")
    error, _ = await write_private(alice, "urn:x:kept", 100)
    assert error is None
    stored = await fill(alice)
    assert stored >= 5, stored

    # every stanza handler that writes answers <resource-constraint/>, type wait
    writes = {
        "private XML (XEP-0049)": private("urn:x:one-more", BIG),
        "vCard (XEP-0054)": f"<vCard xmlns='vcard-temp'><DESC>{BIG}</DESC></vCard>",
        "PEP publish (XEP-0163)": (
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:x:big'>"
            f"<item id='1'><big xmlns='urn:x:big'>{BIG}</big></item></publish></pubsub>"),
        "roster set (RFC 6121 §2.3)": (
            f"<query xmlns='jabber:iq:roster'><item jid='{LONG_LOCAL}@example.org' "
            f"name='{'n' * 250}'/></query>"),
        "blocking (XEP-0191)": (
            "<block xmlns='urn:xmpp:blocking'>"
            + "".join(f"<item jid='{LONG_LOCAL}{i}@example.org'/>" for i in range(3))
            + "</block>"),
    }
    for what, payload in writes.items():
        error, answer = await ask(alice, "set", payload)
        assert (error, condition_and_type(answer)[1]) == ("resource-constraint", "wait"), \
            (what, error)

    # a message for an offline user: the offline store fails, the sender hears of it
    alice.send_message(mto="bob@localhost", mbody=BIG, mtype="chat")
    bounce = await asyncio.wait_for(alice.messages.get(), 10)
    assert bounce["type"] == "error"
    assert bounce["error"]["condition"] == "resource-constraint"
    assert bounce["error"]["type"] == "wait"

    # in-band registration (XEP-0077 §3.1) before login
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    raw.send(f"<iq type='set' id='r'><query xmlns='jabber:iq:register'>"
             f"<username>{LONG_LOCAL}</username><password>pw</password></query></iq>")
    reply = await raw.expect("iq")
    assert reply.get("type") == "error"
    assert reply.find(f".//{{{STANZAS}}}resource-constraint") is not None
    await raw.close()
    assert LONG_LOCAL not in server.cli("users").stdout

    # the session is kept, reads work, logins work
    assert not alice.stream_errors and not alice.gone.done()
    await alice.ping_server()
    error, answer = await ask(alice, "get", private("urn:x:kept"))
    assert error is None and "d" * 100 in _text(answer)
    carol = await login(server, "carol@localhost/reader", "pw")
    error, _ = await ask(carol, "get", private("urn:x:anything"))
    assert error is None
    assert "internal error" not in server.log()
    assert "<resource-constraint/>" in server.log() or "refused" in server.log()

    # room again (alice empties what she filled): writes work again
    for size in (16384, 1536):
        for n in range(stored):
            error, _ = await ask(alice, "set", private(f"urn:x:fill:{size}:{n}"))
            assert error is None
    error, _ = await ask(alice, "set", writes["vCard (XEP-0054)"])
    assert error is None
    await carol.close()
    await alice.close()


def _text(answer) -> str:
    return "".join(answer.itertext())


# -- a real full filesystem ------------------------------------------------------

def _can_mount() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def tmpfs_server(make_server):
    """A server whose data directory is a 6 MiB tmpfs of its own, holding
    a 2 MiB ballast file that the test can delete to make room."""
    if not _can_mount():
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root: the tmpfs test must run there")
        pytest.skip("mounting a tmpfs needs root")
    server = make_server(start=False, im=dict(UNQUOTED))
    server.data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs",
                    str(server.data_dir)], check=True)
    try:
        for user in ("alice", "bob"):
            server.adduser(f"{user}@localhost", "pw")
        (server.data_dir / "ballast").write_bytes(b"\0" * (2 * 1024 * 1024))
        yield server.start()
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(server.data_dir)], check=False)


async def test_a_full_tmpfs(tmpfs_server):
    server = tmpfs_server
    alice = await login(server, "alice@localhost/full", "pw")
    error, _ = await write_private(alice, "urn:x:kept", 100)
    assert error is None
    full = None
    for n in range(100):                 # 200 KB each: the 6 MiB are gone after ~20
        error, answer = await write_private(alice, f"urn:x:big:{n}", 200_000)
        if error is not None:
            full = error, condition_and_type(answer)[1]
            break
    assert full == ("resource-constraint", "wait"), full
    assert not alice.stream_errors
    await alice.ping_server()
    error, answer = await ask(alice, "get", private("urn:x:kept"))
    assert error is None and "d" * 100 in _text(answer)
    bob = await login(server, "bob@localhost/reader", "pw")
    await bob.ping_server()

    (server.data_dir / "ballast").unlink()            # the administrator makes room
    error, _ = await write_private(alice, "urn:x:after", 200_000)
    assert error is None
    assert "internal error" not in server.log()
    await bob.close()
    await alice.close()
