"""Federation abuse that changes rosters if it gets through: each
case is refused and the roster it aimed at stays as it was.

The rest of the section lives beside the features it attacks (all marked
``hostile``): a forged dialback key, an authority saying ``invalid``,
stanzas before dialback or TLS and a spoofed ``from`` on a message
(``test_federation.py``); XEP-0015 notices and roster hand-overs from a
sender that does not control the account (``test_accountxfer.py``);
XEP-0283 notices with a missing statement, a statement pointing elsewhere
or unreadable, replayed notices, and contacts who never shared presence
with the old JID (``test_moved.py``).
"""

import asyncio

import pytest

from tests.integration import test_federation
from tests.integration.test_federation import FakeAuthority, RawServerClient, dialback_key
from tests.integration.test_moved import notice, online, statement, wait_item

pytestmark = pytest.mark.hostile

#: a.test and b.test (and evil.test's route), our own pair for this module
two = test_federation.two

_n = iter(range(1, 1000))


def fresh(proc, domain: str, prefix: str) -> str:
    jid = f"{prefix}{next(_n)}@{domain}"
    proc.adduser(jid, "pw")
    return jid


async def waiting_for_alice(b):
    """A b.test user who asked alice@a.test for her presence (none + ask)."""
    jid = fresh(b, "b.test", "bea")
    bea = await online(b, jid)
    bea.send_presence(pto="alice@a.test", ptype="subscribe")
    await wait_item(bea, "alice@a.test", "none", ask=True)
    return bea


async def authenticated_as_evil(b) -> RawServerClient:
    """An s2s stream to b.test on which evil.test has passed dialback."""
    raw = await RawServerClient.connect(b.s2s_port)
    await raw.secure_s2s("evil.test", "b.test")
    raw.send("<db:result from='evil.test' to='b.test'>any-key</db:result>")
    assert (await raw.expect("result", timeout=15)).get("type") == "valid"
    return raw


async def test_spoofed_subscription_approval_changes_no_roster(two, tmp_path):
    """evil.test, authenticated as itself, says alice@a.test approved."""
    _, b = two
    bea = await waiting_for_alice(b)
    async with FakeAuthority(b.evil_route, tmp_path):
        raw = await authenticated_as_evil(b)
        raw.send(f"<presence type='subscribed' from='alice@a.test' to='{bea.boundjid.bare}'/>")
        assert await raw.stream_error() == "invalid-from"
        await raw.close()
    # the stanza was refused while handled (the stream error): the item is
    # already what it will be
    await wait_item(bea, "alice@a.test", "none", ask=True, timeout=1)    # unchanged
    await bea.close()


async def test_forged_key_for_another_domain_on_an_authenticated_stream(two, tmp_path):
    """Piggybacking (XEP-0220 §2.4) a forged key for a.test on evil.test's
    stream: the key fails, and a stanza sent before the verdict is refused."""
    a, b = two
    bea = await waiting_for_alice(b)
    async with FakeAuthority(b.evil_route, tmp_path):
        raw = await authenticated_as_evil(b)
        forged = dialback_key("not a.test's secret", "b.test", "a.test", raw.root.get("id"))
        raw.send(f"<db:result from='a.test' to='b.test'>{forged}</db:result>")
        assert (await raw.expect("result", timeout=15)).get("type") == "invalid"
        assert await raw.stream_error() == "not-authorized"
        await raw.close()
        raw = await authenticated_as_evil(b)
        raw.send(f"<db:result from='a.test' to='b.test'>{forged}</db:result>"
                 f"<presence type='subscribed' from='alice@a.test' to='{bea.boundjid.bare}'/>")
        assert await raw.stream_error() == "invalid-from"
        await raw.close()
    # both stanzas were refused while handled (the stream errors)
    await wait_item(bea, "alice@a.test", "none", ask=True, timeout=1)    # unchanged
    assert a.alive() and b.alive()
    await bea.close()


async def test_claiming_the_receiving_servers_own_domain_is_refused(two):
    _, b = two
    raw = await RawServerClient.connect(b.s2s_port)
    await raw.secure_s2s("b.test", "b.test")
    raw.send("<db:result from='b.test' to='b.test'>whatever</db:result>")
    assert await raw.stream_error() == "invalid-from"


async def test_moved_notice_from_someone_the_statement_does_not_name(make_server):
    """mallory claims to be old's new account; old's statement names new.
    R's roster is untouched, R is simply asked (the notice kept, R decides),
    and the real move still goes through afterwards."""
    srv = make_server()
    old_jid, new_jid, mal_jid, r_jid = (fresh(srv, "localhost", p)
                                        for p in ("old", "new", "mallory", "r"))
    old, new, mal, r = [await online(srv, jid) for jid in (old_jid, new_jid, mal_jid, r_jid)]
    old.send_presence(pto=r_jid, ptype="subscribe")                # R shares presence with old
    await r.next_presence(type="subscribe", sender=old_jid, timeout=10)
    r.send_presence(pto=old_jid, ptype="subscribed")
    await wait_item(r, old_jid, "from")
    await statement(old, new_jid)
    await r.quiet(via=old)

    notice(mal, r_jid, old_jid)
    got = await r.next_presence(type="subscribe", sender=mal_jid, timeout=10)
    assert got.xml.findtext("{urn:xmpp:moved:1}moved/{urn:xmpp:moved:1}old-jid") == old_jid
    roster = await r.fetch_roster()
    assert roster[old_jid]["subscription"] == "from"               # not revoked
    assert roster.get(mal_jid, {}).get("subscription", "none") == "none"   # nothing granted
    await wait_item(mal, r_jid, "none", ask=True)                  # mallory only waits

    notice(new, r_jid, old_jid)                                    # the genuine one
    await wait_item(r, new_jid, "from")
    await wait_item(r, old_jid, "none")
    assert (await r.fetch_roster()).get(mal_jid, {}).get("subscription", "none") == "none"
    for client in (old, new, mal, r):
        await client.close()
