"""Idle connections hibernate their parser (server/io/net.py, StreamConnection
``hibernate_after``; server/xmpp/stream.py, StreamParser.hibernate), and a
client whose connection was hibernated goes on as if nothing happened.

The server runs in this process (the same code ``xferd serve`` runs) so that
the test can shorten ``hibernate_after`` and see the sessions' parsers; the
clients are slixmpp, as in the other integration tests. Waiting for the
hibernation is bounded but asserts no timing.
"""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.xmlstream import ET

from server import config
from server.io.c2s import C2SSession
from server.io.net import StreamConnection
from server.core.service import Xferd
from server.xmpp.stream import StreamParser
from tests.harness import XferdProcess, ask, login

CHATSTATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture
async def xferd(tmp_path, monkeypatch):
    """An in-process xferd with alice and bob, hibernating after 50 ms of quiet."""
    monkeypatch.setattr(StreamConnection, "hibernate_after", 0.05)
    proc = XferdProcess(tmp_path, overrides={"server": {"data_dir": str(tmp_path / "data")},
                                             "s2s": {"enabled": False}})
    proc.adduser("alice@localhost", "alice-pass")
    proc.adduser("bob@localhost", "bob-pass")
    server = Xferd(config.load(proc.config))
    await server.start()
    server.proc = proc              # ports and certificate paths for login()
    proc.c2s_port, proc.direct_tls_port = server.ports["c2s"], server.ports["c2s_direct_tls"]
    yield server
    await server.stop()


class Changes:
    """Wakes the test whenever the state it waits on may have changed: a
    parser was asked to hibernate (the idle timer fired), or a c2s session
    ended. The server is in this process; nothing on the wire shows either."""

    def __init__(self):
        self.calls: list[tuple[StreamParser, bool]] = []   # (parser, hibernate()'s answer)
        self._changed = asyncio.Event()

    def note(self) -> None:
        self._changed.set()

    async def until(self, ready, deadline: float) -> bool:
        """Until ready() is true (then True) or the loop time *deadline* (False)."""
        while not ready():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return True


@pytest.fixture
def changes(monkeypatch) -> Changes:
    seen = Changes()
    hibernate = StreamParser.hibernate
    teardown = C2SSession.teardown

    def hibernating(self):
        answer = hibernate(self)
        seen.calls.append((self, answer))
        seen.note()
        return answer

    async def tearing_down(self):
        try:
            await teardown(self)
        finally:
            seen.note()
    monkeypatch.setattr(StreamParser, "hibernate", hibernating)
    monkeypatch.setattr(C2SSession, "teardown", tearing_down)
    return seen


@pytest.fixture
def revivals(monkeypatch) -> list:
    """One entry per parser revived (so the test knows the path was taken)."""
    seen: list = []
    original = StreamParser._revive

    def counting(self):
        seen.append(self)
        original(self)
    monkeypatch.setattr(StreamParser, "_revive", counting)
    return seen


async def all_hibernating(server, changes: Changes, count: int, timeout: float = 10) -> None:
    """Wait until *count* sessions exist and every one's parser is hibernating
    (woken by each hibernation, see Changes)."""
    def ready():
        sessions = list(server.c2s_sessions)
        return len(sessions) == count and all(s.parser.hibernating for s in sessions)
    if not await changes.until(ready, asyncio.get_running_loop().time() + timeout):
        raise AssertionError([(s, s.parser.hibernating) for s in server.c2s_sessions])


async def next_message(client, timeout: float = 10):
    return await asyncio.wait_for(client.messages.get(), timeout)


async def test_hibernated_sessions_send_and_receive(xferd, revivals, changes):
    alice = await login(xferd.proc, "alice@localhost/desk", "alice-pass")
    bob = await login(xferd.proc, "bob@localhost/phone", "bob-pass")
    for client in (alice, bob):
        client.send_presence()           # the session keeps a copy of it from now on
        await client.ping_server()

    for round in range(3):
        await all_hibernating(xferd, changes, 2)
        before = len(revivals)

        # a message with a payload in another namespace, both ways
        msg = alice.make_message(mto="bob@localhost/phone", mbody=f"hello {round}", mtype="chat")
        msg.xml.append(ET.fromstring(f"<active xmlns='{CHATSTATES}'/>"))
        msg.send()
        got = await next_message(bob)
        assert got["body"] == f"hello {round}" and got["from"] == "alice@localhost/desk"
        assert got.xml.find(f"{{{CHATSTATES}}}active") is not None
        bob.send_message(mto="alice@localhost/desk", mbody=f"hi {round}", mtype="chat")
        got = await next_message(alice)
        assert got["body"] == f"hi {round}" and got["from"] == "bob@localhost/phone"

        await all_hibernating(xferd, changes, 2)
        # IQs: one answered by the server, one with a payload the server must parse
        assert await bob.ping_server() >= 0
        condition, answer = await ask(alice, "get", "<query xmlns='jabber:iq:roster'/>")
        assert condition is None, answer
        assert answer.find("{jabber:iq:roster}query") is not None

        await all_hibernating(xferd, changes, 2)
        # a whitespace keepalive, then a stanza
        alice.send_raw(" ")
        assert await alice.ping_server() >= 0
        assert len(revivals) > before, "the sessions were not revived"

    assert not alice.stream_errors and not bob.stream_errors
    assert alice.messages.empty() and bob.messages.empty()

    # closing a hibernating stream
    await all_hibernating(xferd, changes, 2)
    await alice.close()
    await bob.close()
    await changes.until(lambda: not xferd.c2s_sessions, asyncio.get_running_loop().time() + 10)
    assert not xferd.c2s_sessions


async def test_a_stanza_split_across_reads_is_not_hibernated_away(xferd, revivals, changes):
    """The timer fires while half a stanza has arrived: hibernation is refused
    and the stanza completes normally."""
    alice = await login(xferd.proc, "alice@localhost/desk", "alice-pass")
    bob = await login(xferd.proc, "bob@localhost/phone", "bob-pass")
    await all_hibernating(xferd, changes, 2)
    [session] = [s for s in xferd.c2s_sessions if str(s.jid) == "alice@localhost/desk"]
    asked = len(changes.calls)
    alice.send_raw("<message to='bob@localhost/phone' type='chat'><body>in two")
    # until the idle timer has fired with the half stanza in: hibernation refused
    await changes.until(lambda: any(p is session.parser and not answer
                                    for p, answer in changes.calls[asked:]),
                        asyncio.get_running_loop().time() + 10)
    assert not session.parser.hibernating
    alice.send_raw(" halves</body></message>")
    got = await next_message(bob)
    assert got["body"] == "in two halves"
    await all_hibernating(xferd, changes, 2)
    await alice.close()
    await bob.close()


@pytest.fixture
async def federated(tmp_path, monkeypatch):
    """a.test in this process (hibernating after 50 ms) and b.test as an
    ordinary xferd process, with static s2s routes to each other."""
    monkeypatch.setattr(StreamConnection, "hibernate_after", 0.05)
    a = XferdProcess(tmp_path / "a", domains=("a.test",),
                     overrides={"server": {"data_dir": str(tmp_path / "a" / "data")}})
    b = XferdProcess(tmp_path / "b", domains=("b.test",))
    a.adduser("alice@a.test", "pw")
    b.adduser("bob@b.test", "pw")
    b.start()
    a.add_route("b.test", "127.0.0.1", b.s2s_port)
    server = Xferd(config.load(a.config))
    await server.start()
    # a listens where the system put it (port 0): b learns it by a route reload
    a.c2s_port, a.direct_tls_port = server.ports["c2s"], server.ports["c2s_direct_tls"]
    a.s2s_port = server.ports["s2s"]
    await asyncio.to_thread(b.add_route, "a.test", "127.0.0.1", a.s2s_port)
    server.proc = a
    yield server, b
    await server.stop()
    b.stop()


def streams_of(server) -> list:
    """Every stream connection of *server*: c2s and both s2s directions."""
    outbound = [r.stream for r in server.s2s.routes.values() if r.stream is not None]
    return [*server.c2s_sessions, *server.s2s.inbound, *outbound]


async def test_hibernated_s2s_streams_carry_stanzas_both_ways(federated, revivals, changes):
    a, b = federated
    alice = await login(a.proc, "alice@a.test/home", "pw")
    bob = await login(b, "bob@b.test/home", "pw")
    for round in range(3):
        alice.send_message(mto="bob@b.test/home", mbody=f"from a {round}", mtype="chat")
        msg = await next_message(bob, 15)
        assert msg["body"] == f"from a {round}" and str(msg["from"]) == "alice@a.test/home"
        bob.send_message(mto="alice@a.test/home", mbody=f"from b {round}", mtype="chat")
        msg = await next_message(alice, 15)
        assert msg["body"] == f"from b {round}" and str(msg["from"]) == "bob@b.test/home"
        assert await alice.plugin["xep_0199"].ping("b.test", timeout=10) >= 0

        # wait for a.test's c2s, inbound and outbound streams to hibernate
        def ready():
            streams = streams_of(a)
            kinds = {type(s).__name__ for s in streams}
            return {"C2SSession", "InboundStream", "OutboundStream"} <= kinds and \
                all(s.parser.hibernating for s in streams)
        assert await changes.until(ready, asyncio.get_running_loop().time() + 10), \
            [(s, s.parser.hibernating) for s in streams_of(a)]
    # what came in after a hibernation went through revived parsers: alice's
    # session and the inbound stream (b.test sends nothing on a's outbound one
    # once dialback is done)
    revived = {id(p) for p in revivals}
    for stream in streams_of(a):
        if type(stream).__name__ != "OutboundStream":
            assert id(stream.parser) in revived, stream
    assert not alice.stream_errors and not bob.stream_errors
    await alice.close()
    await bob.close()
