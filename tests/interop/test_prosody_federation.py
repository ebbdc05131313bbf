"""Federation with a real Prosody 0.12: xferd.test ⇄ prosody.test over s2s.

Both servers find each other through the test DNS responder (SRV records
for ``_xmpp-server._tcp``), secure their streams with STARTTLS (both require
it) and authenticate with XEP-0220 dialback: the certificates are
self-signed and Prosody runs with ``s2s_secure_auth = false``.

What proves that each direction's stream was opened and authenticated is
Prosody's own log, at the moment mod_s2s marks a session authenticated
(``mod_s2s.lua``: "%s s2s connection %s->%s complete"):

- ``Incoming s2s connection xferd.test->prosody.test complete``: xferd's
  outbound stream, accepted by Prosody after it verified xferd's dialback
  key (Prosody asked xferd, the authoritative server, with ``<db:verify/>``);
- ``Outgoing s2s connection prosody.test->xferd.test complete``: Prosody's
  outbound stream, which Prosody marks complete only when xferd answered its
  ``<db:result/>`` with ``type='valid'`` — i.e. xferd's inbound stream is
  authenticated for prosody.test.

xferd's log is checked too (it names the remote domain of both streams), and
the stanzas that cross prove the routing itself.
"""

import asyncio
import re
import time

import pytest

from tests.harness import Client, login
from tests.prosody import PROSODY_DOMAIN, XFERD_DOMAIN

pytestmark = pytest.mark.interop

#: the first stanza waits for DNS, TCP, STARTTLS and dialback (two streams)
S2S_TIMEOUT = 30


class FedClient(Client):
    """Also records error messages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("message_error", self.errors.put_nowait)

    async def next_message(self, sender: str, timeout: float = S2S_TIMEOUT):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{self.boundjid}: no message from {sender}")
            msg = await asyncio.wait_for(self.messages.get(), left)
            if msg["from"].bare == sender:
                return msg


async def wait_for_item(client, jid: str, subscription: str, timeout: float = S2S_TIMEOUT):
    """Re-read *client*'s roster until *jid* has *subscription* and no pending
    ask (woken by the roster pushes that come with each change)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        item = (await client.fetch_roster()).get(jid)
        if item and item["subscription"] == subscription and "ask" not in item:
            return item
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid.bare}: roster item {jid} is {item}, "
                                 f"wanted subscription={subscription}")
        await client.roster_pushed(deadline)        # a change comes with a push


async def wait_for_log(read_log, pattern: str, timeout: float = S2S_TIMEOUT) -> str:
    """The first line of a server's log matching *pattern* (polling)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in read_log().splitlines():
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matches {pattern!r}")
        # a poll with a deadline: a log file gives no notification (and how a
        # server authenticated a stream shows nowhere on a client's wire)
        await asyncio.sleep(0.2)


async def two_users(xferd_fed, prosody, xferd_user, prosody_user):
    alice, bob = xferd_user("alice"), prosody_user("bob")
    a = await login(xferd_fed, f"{alice}/desk", "pw", client_cls=FedClient)
    b = await login(prosody, f"{bob}/laptop", "pw", client_cls=FedClient)
    # available, so that messages to the bare JIDs reach these resources (RFC 6121 §8.5.2.1)
    a.send_presence()
    b.send_presence()
    return alice, bob, a, b


async def test_subscriptions_rosters_and_presence_both_ways(xferd_fed, prosody, xferd_user,
                                                            prosody_user):
    alice, bob, a, b = await two_users(xferd_fed, prosody, xferd_user, prosody_user)
    try:
        a.send_presence(pstatus="alice here")
        b.send_presence(pstatus="bob here")
        # drop what came so far (each one's own presence: its own server)
        await a.quiet()
        await b.quiet()

        # alice subscribes to bob, bob approves: alice gets 'to' and bob's presence
        a.send_presence(pto=bob, ptype="subscribe")
        await b.next_presence(type="subscribe", sender=alice, timeout=S2S_TIMEOUT)
        b.send_presence(pto=alice, ptype="subscribed")
        await a.next_presence(type="subscribed", sender=bob, timeout=S2S_TIMEOUT)
        seen = await a.next_presence(type=None, sender=bob, timeout=S2S_TIMEOUT)
        assert seen["status"] == "bob here"
        await wait_for_item(a, bob, "to")
        await wait_for_item(b, alice, "from")

        # bob subscribes to alice, alice approves: both sides end with 'both'
        b.send_presence(pto=alice, ptype="subscribe")
        await a.next_presence(type="subscribe", sender=bob, timeout=S2S_TIMEOUT)
        a.send_presence(pto=bob, ptype="subscribed")
        await b.next_presence(type="subscribed", sender=alice, timeout=S2S_TIMEOUT)
        seen = await b.next_presence(type=None, sender=alice, timeout=S2S_TIMEOUT)
        assert seen["status"] == "alice here"
        await wait_for_item(a, bob, "both")
        await wait_for_item(b, alice, "both")

        # presence updates now flow on their own, each way
        # drop what came so far, up to a round trip from the other side
        await a.quiet(via=b)
        await b.quiet(via=a)
        b.send_presence(pshow="away", pstatus="bob at lunch")
        # (slixmpp reports a presence's <show/> as its type)
        update = await a.next_presence(type="away", sender=bob, timeout=S2S_TIMEOUT)
        assert (update["show"], update["status"]) == ("away", "bob at lunch")
        a.send_presence(pshow="dnd", pstatus="alice busy")
        update = await b.next_presence(type="dnd", sender=alice, timeout=S2S_TIMEOUT)
        assert (update["show"], update["status"]) == ("dnd", "alice busy")

        # going offline reaches the contact as unavailable
        await b.close()
        await a.next_presence(type="unavailable", sender=bob, timeout=S2S_TIMEOUT)
    finally:
        await a.close()
        await b.close()


async def test_messages_both_ways(xferd_fed, prosody, xferd_user, prosody_user):
    alice, bob, a, b = await two_users(xferd_fed, prosody, xferd_user, prosody_user)
    try:
        a.send_message(mto=f"{bob}/laptop", mbody="hello from xferd", mtype="chat")
        got = await b.next_message(alice)
        assert (got["body"], got["type"], str(got["from"])) == \
            ("hello from xferd", "chat", f"{alice}/desk")

        b.send_message(mto=f"{alice}/desk", mbody="hello from prosody", mtype="chat")
        got = await a.next_message(bob)
        assert (got["body"], got["type"], str(got["from"])) == \
            ("hello from prosody", "chat", f"{bob}/laptop")

        # to the bare JID as well, a few in a row, in order
        for n in range(3):
            a.send_message(mto=bob, mbody=f"a{n}", mtype="chat")
            b.send_message(mto=alice, mbody=f"b{n}", mtype="chat")
        assert [(await b.next_message(alice))["body"] for _ in range(3)] == ["a0", "a1", "a2"]
        assert [(await a.next_message(bob))["body"] for _ in range(3)] == ["b0", "b1", "b2"]
        assert a.errors.empty() and b.errors.empty()
    finally:
        await a.close()
        await b.close()


async def test_s2s_streams_are_authenticated_in_both_directions(xferd_fed, prosody, xferd_user,
                                                               prosody_user):
    alice, bob, a, b = await two_users(xferd_fed, prosody, xferd_user, prosody_user)
    try:
        # traffic each way, so each server has dialled the other
        a.send_message(mto=bob, mbody="ping from xferd")
        await b.next_message(alice)
        b.send_message(mto=alice, mbody="ping from prosody")
        await a.next_message(bob)
    finally:
        await a.close()
        await b.close()

    # xferd → Prosody, authenticated by Prosody (dialback, verified with xferd)
    await wait_for_log(prosody.log, rf"Incoming s2s connection {XFERD_DOMAIN}->"
                                    rf"{PROSODY_DOMAIN} complete")
    # Prosody → xferd, accepted by xferd with <db:result type='valid'/>
    await wait_for_log(prosody.log, rf"Outgoing s2s connection {PROSODY_DOMAIN}->"
                                    rf"{XFERD_DOMAIN} complete")
    # both streams are encrypted: with s2s_require_encryption Prosody completes no other
    # (mod_s2s.lua), and it never had to complain about TLS
    for complaint in ("Encrypted server-to-server communication is required",
                      "TLS negotiation with", "Forbidding insecure connection"):
        assert complaint not in prosody.log()
    assert [line for line in prosody.errors() if "s2s" in line] == []

    # xferd's own view (s2s/outbound.py, s2s/inbound.py log each stream as
    # "<s2s-out#N FROM→TO>: …" / "<s2s-in#N FROM→TO>: …" when it authenticates)
    await wait_for_log(xferd_fed.log, rf"xferd\.s2s\.out: <s2s-out#\d+ {XFERD_DOMAIN}→"
                                      rf"{PROSODY_DOMAIN}>: authenticated by dialback")
    await wait_for_log(xferd_fed.log, rf"xferd\.s2s\.in: <s2s-in#\d+ {PROSODY_DOMAIN}→"
                                      rf"{XFERD_DOMAIN}>: {PROSODY_DOMAIN} authenticated "
                                      r"by dialback")


async def test_message_to_unknown_domain_bounces(xferd_fed, dns, xferd_user):
    alice = xferd_user("alice")
    a = await login(xferd_fed, f"{alice}/desk", "pw", client_cls=FedClient)
    try:
        a.send_message(mto="nobody@nowhere.test", mbody="anyone there?", mtype="chat")
        error = await asyncio.wait_for(a.errors.get(), S2S_TIMEOUT)
        assert error["error"]["condition"] == "remote-server-not-found", error
        assert error["from"].bare == "nobody@nowhere.test"
        assert error["body"] in ("", "anyone there?")
        # xferd really looked: it asked our DNS, which said NXDOMAIN
        assert any(name == "_xmpp-server._tcp.nowhere.test." for name, _ in dns.queries), \
            dns.queries
    finally:
        await a.close()
