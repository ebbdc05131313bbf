"""Federation with a real ejabberd 23.01: xferd.test ⇄ ejabberd.test over s2s.

Both servers find each other through the test DNS responder (SRV and A
records), require STARTTLS on s2s, and authenticate each stream with
XEP-0220 dialback: the certificates are self-signed, and ejabberd runs
``mod_s2s_dialback`` (tests/ejabberd.py).

Who opens the first stream matters with dialback (XEP-0220 §2): the
receiving server checks the key by asking the sender's authoritative server
(``<db:verify/>``), and the replies travel on a second stream the other way,
authenticated the same way. ``test_first_contact`` starts a cold pair of
servers for each side speaking first and reads both logs for the order:
ejabberd logs each stream when it authenticates it
(``ejabberd_s2s_in.erl``/``ejabberd_s2s_out.erl``: "Accepted inbound s2s
dialback authentication FROM -> TO", "Accepted outbound s2s dialback
authentication FROM -> TO"), xferd likewise ("<s2s-out#N FROM→TO>:
authenticated by dialback", "<s2s-in#N FROM→TO>: FROM authenticated by
dialback"). The stanzas that cross — subscriptions, presence, messages,
RFC 6121 §3 and §4, §5 — and what both sides' rosters say prove the
routing itself.
"""

import asyncio
import re
from types import SimpleNamespace

import pytest

from tests.ejabberd import EJABBERD_DOMAIN
from tests.harness import login
from tests.interop.conftest import federating_ejabberd, federating_xferd
from tests.interop.test_prosody_federation import (S2S_TIMEOUT, FedClient, wait_for_item,
                                                  wait_for_log)
from tests.prosody import XFERD_DOMAIN, DNSResponder

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


@pytest.fixture
def cold_pair(tmp_path):
    """A fresh DNS responder, ejabberd and xferd: no s2s stream exists yet between them."""
    dns = DNSResponder().start()
    servers = []
    try:
        servers.append(ejabberd := federating_ejabberd(dns, tmp_path / "ejabberd"))
        servers.append(xferd := federating_xferd(dns, tmp_path / "xferd", "127.0.0.1"))
        yield SimpleNamespace(dns=dns, ejabberd=ejabberd, xferd=xferd)
    finally:
        for server in servers:
            server.stop()
        dns.stop()


async def online(server, jid, resource="r", status=None):
    client = await login(server, f"{jid}/{resource}", "pw", client_cls=FedClient)
    # available, so that messages to the bare JID reach this resource (RFC 6121 §8.5.2.1)
    client.send_presence(pstatus=status)
    await client.fetch_roster()
    return client


def log_order(log: str, *patterns: str) -> list[int]:
    """The line number of the first match of each pattern in *log* (-1: none)."""
    lines = log.splitlines()
    return [next((n for n, line in enumerate(lines) if re.search(p, line)), -1)
            for p in patterns]


async def subscribe_and_approve(asker, asker_jid, contact, contact_jid, status, after):
    """*asker* subscribes to *contact*, who approves (RFC 6121 §3.1): the asker
    gets 'subscribed' and the contact's current presence (*status*); *after*:
    the subscription states then on the asker's and the contact's side."""
    asker.send_presence(pto=contact_jid, ptype="subscribe")
    request = await contact.next_presence(type="subscribe", sender=asker_jid,
                                          timeout=S2S_TIMEOUT)
    assert request["from"].bare == asker_jid
    contact.send_presence(pto=asker_jid, ptype="subscribed")
    await asker.next_presence(type="subscribed", sender=contact_jid, timeout=S2S_TIMEOUT)
    seen = await asker.next_presence(type=None, sender=contact_jid, timeout=S2S_TIMEOUT)
    assert (str(seen["from"]), seen["status"]) == (f"{contact_jid}/r", status)
    await wait_for_item(asker, contact_jid, after[0])
    await wait_for_item(contact, asker_jid, after[1])


@pytest.mark.parametrize("first", ["xferd", "ejabberd"])
async def test_first_contact(cold_pair, first):
    """The first stanza ever between the servers opens the first stream; the
    other direction's stream follows for the answer. Then everything a user
    does across servers works: subscriptions each way ending in 'both' on both
    rosters, presence updates each way, messages each way, going offline."""
    xferd, ejabberd = cold_pair.xferd, cold_pair.ejabberd
    xferd.adduser(f"alice@{XFERD_DOMAIN}", "pw")
    ejabberd.adduser(f"bob@{EJABBERD_DOMAIN}", "pw")
    alice, bob = f"alice@{XFERD_DOMAIN}", f"bob@{EJABBERD_DOMAIN}"
    a = await online(xferd, alice, status="alice here")
    b = await online(ejabberd, bob, status="bob here")
    users = {"xferd": (a, alice, "alice here"), "ejabberd": (b, bob, "bob here")}
    second = "ejabberd" if first == "xferd" else "xferd"
    (f, f_jid, f_status), (s, s_jid, s_status) = users[first], users[second]
    try:
        await a.quiet()
        await b.quiet()
        # the first stanza between the servers: first's user asks to see second's
        await subscribe_and_approve(f, f_jid, s, s_jid, s_status, ("to", "from"))
        # and the other way round: both end 'both'
        await subscribe_and_approve(s, s_jid, f, f_jid, f_status, ("both", "both"))

        # who opened which stream, in which order
        out_from_first = (rf"<s2s-out#\d+ {XFERD_DOMAIN}→{EJABBERD_DOMAIN}>: authenticated "
                          "by dialback")
        in_from_ejabberd = (rf"<s2s-in#\d+ {EJABBERD_DOMAIN}→{XFERD_DOMAIN}>: "
                            rf"{EJABBERD_DOMAIN} authenticated by dialback")
        ej_in = f"Accepted inbound s2s dialback authentication {XFERD_DOMAIN} -> {EJABBERD_DOMAIN}"
        ej_out = (f"Accepted outbound s2s dialback authentication {EJABBERD_DOMAIN} -> "
                  f"{XFERD_DOMAIN}")
        await wait_for_log(ejabberd.log, ej_in)
        await wait_for_log(ejabberd.log, ej_out)
        await wait_for_log(xferd.log, out_from_first)
        await wait_for_log(xferd.log, in_from_ejabberd)
        ej_in_at, ej_out_at = log_order(ejabberd.log(), ej_in, ej_out)
        x_out_at, x_in_at = log_order(xferd.log(), out_from_first, in_from_ejabberd)
        if first == "xferd":
            # ejabberd accepted xferd's stream before its own was accepted by xferd
            assert ej_in_at < ej_out_at and x_out_at < x_in_at
        else:
            assert ej_out_at < ej_in_at and x_in_at < x_out_at

        # presence updates flow on their own, each way
        await a.quiet(via=b)
        await b.quiet(via=a)
        b.send_presence(pshow="away", pstatus="bob at lunch")
        update = await a.next_presence(type="away", sender=bob, timeout=S2S_TIMEOUT)
        assert (str(update["from"]), update["status"]) == (f"{bob}/r", "bob at lunch")
        a.send_presence(pshow="dnd", pstatus="alice busy")
        update = await b.next_presence(type="dnd", sender=alice, timeout=S2S_TIMEOUT)
        assert (str(update["from"]), update["status"]) == (f"{alice}/r", "alice busy")

        # messages, each way, to full and bare JIDs, in order
        f.send_message(mto=f"{s_jid}/r", mbody="hello", mtype="chat")
        got = await s.next_message(f_jid)
        assert (got["body"], got["type"], str(got["from"])) == ("hello", "chat", f"{f_jid}/r")
        for n in range(3):
            a.send_message(mto=bob, mbody=f"a{n}", mtype="chat")
            b.send_message(mto=alice, mbody=f"b{n}", mtype="chat")
        assert [(await b.next_message(alice))["body"] for _ in range(3)] == ["a0", "a1", "a2"]
        assert [(await a.next_message(bob))["body"] for _ in range(3)] == ["b0", "b1", "b2"]
        assert a.errors.empty() and b.errors.empty()

        # going offline reaches the contact as unavailable
        await s.close()
        await f.next_presence(type="unavailable", sender=s_jid, timeout=S2S_TIMEOUT)
    finally:
        await a.close()
        await b.close()
    assert ejabberd.errors() == []
    # TLS on both streams: ejabberd requires it (s2s_use_starttls: required), and
    # nothing failed but its first try on each outgoing stream, SASL EXTERNAL, which
    # xferd does not offer for a certificate it cannot verify: ejabberd then uses
    # dialback ("Retrying with s2s dialback authentication", mod_s2s_dialback.erl)
    failures = [line for line in ejabberd.log().splitlines() if "Failed" in line]
    assert [line for line in failures if "Failed outbound s2s EXTERNAL" not in line] == []


async def test_messages_to_missing_accounts_bounce_both_ways(xferd_ej, ejabberd, xferd_ej_user,
                                                            ejabberd_user):
    """A message to an account that does not exist comes back as an error
    from the contact's server (RFC 6121 §8.5.2.2.1 / §8.5.1: service-unavailable),
    across the s2s streams, each way."""
    alice, bob = xferd_ej_user("alice"), ejabberd_user("bob")
    a, b = await online(xferd_ej, alice), await online(ejabberd, bob)
    try:
        a.send_message(mto=f"nobody@{EJABBERD_DOMAIN}", mbody="anyone?", mtype="chat")
        error = await asyncio.wait_for(a.errors.get(), S2S_TIMEOUT)
        assert (error["from"].bare, error["error"]["condition"]) == \
            (f"nobody@{EJABBERD_DOMAIN}", "service-unavailable")
        b.send_message(mto=f"nobody@{XFERD_DOMAIN}", mbody="anyone?", mtype="chat")
        error = await asyncio.wait_for(b.errors.get(), S2S_TIMEOUT)
        assert (error["from"].bare, error["error"]["condition"]) == \
            (f"nobody@{XFERD_DOMAIN}", "service-unavailable")
    finally:
        await a.close()
        await b.close()


async def test_unsubscribe_and_cancel_reach_the_other_roster(xferd_ej, ejabberd, xferd_ej_user,
                                                            ejabberd_user):
    """RFC 6121 §3.3 (unsubscribing) and §3.2 (cancelling), each sent from both
    servers' users: each side's roster follows the other's decision, and
    presence stops."""
    alice, bob = xferd_ej_user("alice"), ejabberd_user("bob")
    a = await online(xferd_ej, alice, status="alice here")
    b = await online(ejabberd, bob, status="bob here")
    try:
        await a.quiet()
        await b.quiet()
        for stop in ("unsubscribe", "unsubscribed"):
            await subscribe_and_approve(a, alice, b, bob, "bob here", ("to", "from"))
            await subscribe_and_approve(b, bob, a, alice, "alice here", ("both", "both"))
            # alice stops one direction (unsubscribe: her view of bob; unsubscribed:
            # bob's view of her), then bob stops the other
            a.send_presence(pto=bob, ptype=stop)
            left = "from" if stop == "unsubscribe" else "to"
            await wait_for_item(a, bob, left)
            await wait_for_item(b, alice, {"from": "to", "to": "from"}[left])
            b.send_presence(pto=alice, ptype=stop)
            await wait_for_item(b, alice, "none")
            await wait_for_item(a, bob, "none")
            # nobody is told of the other's presence any more
            await a.quiet(via=b)
            await b.quiet(via=a)
            a.send_presence(pstatus="alice here")
            b.send_presence(pstatus="bob here")
            assert not [p for p in await b.quiet(via=a) if p["from"].bare == alice]
            assert not [p for p in await a.quiet(via=b) if p["from"].bare == bob]
    finally:
        await a.close()
        await b.close()
