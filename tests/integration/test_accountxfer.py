"""XEP-0015 account transfer across three xferd domains (XEP-0015, xferd's profile in server/xmpp/transfer.py):
old.test (the moving account, and a contact), new.test (the new account, and a
contact), c.test (contacts) — plus the refusals of §2.4 and a restart in the
middle of a transfer. keep.test is a contact's server with ``[moved]
old_contact = "keep"`` and ``notify_contacts = false``."""

import asyncio
import itertools

import pytest
import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.harness import (RouteTo, XferdProcess, ask, federate, login, round_trip,
                           unused_port)
from tests.integration.test_federation import FakeAuthority, RawServerClient
from tests.integration.test_moved import Proxy

XFER = "jabber:iq:accountxfer"
_n = itertools.count(1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    servers = {d: XferdProcess(tmp_path_factory.mktemp(d.split(".")[0]), domains=(d,),
                               overrides={"accountxfer": {"notice_timeout": 3},
                                          "s2s": {"dialback_timeout": 3, "connect_timeout": 2},
                                          **({"moved": {"old_contact": "keep",
                                                        "notify_contacts": False}}
                                             if d == "keep.test" else {})})
               for d in ("old.test", "new.test", "c.test", "slow.test", "keep.test")}
    federate(servers)
    servers["old.test"].add_route("dead.test", "127.0.0.1", unused_port())
    # old.test reaches slow.test via a Proxy
    servers["old.test"].proxy_route = RouteTo(servers["old.test"], "slow.test")
    servers["c.test"].evil_route = RouteTo(servers["c.test"], "evil.test")
    servers["new.test"].evil_route = RouteTo(servers["new.test"], "evil.test")
    yield servers
    for proc in servers.values():
        proc.stop()


def account(proc, domain, prefix):
    jid = f"{prefix}{next(_n)}@{domain}"
    proc.adduser(jid, "pw")
    return jid


async def online(proc, jid, resource="r"):
    client = await login(proc, f"{jid}/{resource}", "pw")
    client.send_presence()
    await client.fetch_roster()
    return client


def allow_transfers(client, allowed=True):
    """The new account's client answers B (the forwarded authorisation request)."""
    seen = []

    def answer(iq):
        seen.append(iq)
        reply = iq.reply(clear=True)
        if allowed:
            reply.xml.append(ET.fromstring(f"<query xmlns='{XFER}'><allowed/></query>"))
            reply.send()
        else:
            reply["type"] = "error"
            reply["error"]["condition"] = "not-allowed"
            reply.send()

    client.register_handler(Callback("accountxfer", MatchXPath(
        f"{{jabber:client}}iq/{{{XFER}}}query"), answer))
    return seen


async def befriend(a, a_jid, b, b_jid, how):
    """Make a's roster item for b *how* (both, to, from, pending)."""
    if how in ("to", "both", "pending"):
        a.send_presence(pto=b_jid, ptype="subscribe")
        await b.next_presence(type="subscribe", sender=a_jid, timeout=15)
        if how != "pending":
            b.send_presence(pto=a_jid, ptype="subscribed")
    if how in ("from", "both"):
        b.send_presence(pto=a_jid, ptype="subscribe")
        await a.next_presence(type="subscribe", sender=b_jid, timeout=15)
        a.send_presence(pto=b_jid, ptype="subscribed")
    want = {"both": ("both", False), "to": ("to", False), "from": ("from", False),
            "pending": ("none", True)}[how]
    await wait_item(a, b_jid, *want)


async def wait_item(client, jid, subscription, ask_=False, timeout=15):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        item = (await client.fetch_roster()).get(jid, {})
        if item.get("subscription", "none") == subscription and \
                (item.get("ask") == "subscribe") == ask_ and (item or subscription != "gone"):
            return item
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid}: {jid} is {item}; wanted {subscription}")
        await client.roster_pushed(deadline)        # a change comes with a push


async def wait_gone(client, jid, timeout=15):
    deadline = asyncio.get_running_loop().time() + timeout
    while jid in await client.fetch_roster():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{client.boundjid}: {jid} is still in the roster")
        await client.roster_pushed(deadline)        # the removal comes with a push


async def transfer(old_client, new_jid, timeout=60):
    """A: returns (error condition or None, answer XML)."""
    iq = old_client.make_iq_set(ito=old_client.boundjid.domain)
    iq.xml.append(ET.fromstring(f"<query xmlns='{XFER}'><newaccount>{new_jid}</newaccount>"
                                "</query>"))
    try:
        answer = await iq.send(timeout=timeout)
    except slixmpp.exceptions.IqError as exc:
        return exc.iq["error"]["condition"], exc.iq.xml
    return None, answer.xml


async def test_transfer_end_to_end(fed):
    old_jid = account(fed["old.test"], "old.test", "alice")
    new_jid = account(fed["new.test"], "new.test", "alice")
    contacts = {  # jid → (server, how the old account sees them, name, groups)
        account(fed["c.test"], "c.test", "bob"): ("c.test", "both", "Bob", ["Friends"]),
        account(fed["c.test"], "c.test", "carol"): ("c.test", "to", "Carol", ["Work"]),
        account(fed["new.test"], "new.test", "dan"): ("new.test", "from", "Dan", []),
        account(fed["old.test"], "old.test", "erin"): ("old.test", "both", None, ["A", "B"]),
        account(fed["c.test"], "c.test", "fay"): ("c.test", "pending", "Fay", []),
    }
    old = await online(fed["old.test"], old_jid)
    new = await online(fed["new.test"], new_jid)
    allow_transfers(new)
    clients = {}
    for jid, (domain, how, name, groups) in contacts.items():
        clients[jid] = await online(fed[domain], jid)
        await befriend(old, old_jid, clients[jid], jid, how)
        old.update_roster(jid, name=name, groups=groups)
    for transport in ("icq.transport.test", "12345@icq.transport.test"):
        old.update_roster(transport, name="transport")
    await round_trip(old)                       # the roster sets above have been handled
    before = await old.fetch_roster()
    views = {jid: (await c.fetch_roster())[old_jid] for jid, c in clients.items()
             if contacts[jid][1] != "pending"}

    error, answer = await transfer(old, new_jid)
    assert error is None, ET.tostring(answer)
    assert answer.find(f"{{{XFER}}}query") is None, "no contact failed"

    # every notified contact now has the new JID, with name, groups, subscription kept
    for jid, view in views.items():
        client = clients[jid]
        await wait_gone(client, old_jid)
        item = await wait_item(client, new_jid, view["subscription"])
        assert item.get("name") == view.get("name") and item["groups"] == view["groups"]
    # the new account's roster equals the old one, transports left out
    after = await new.fetch_roster()
    expected = {jid: item for jid, item in before.items() if "transport" not in jid}
    assert set(after) == set(expected)
    for jid, item in expected.items():
        got = after[jid]
        assert (got.get("name"), got["groups"]) == (item.get("name"), item["groups"]), jid
        assert got["subscription"] == ("none" if contacts[jid][1] == "pending"
                                       else item["subscription"]), jid
        assert (got.get("ask") == "subscribe") == (contacts[jid][1] == "pending"), jid
    # presence flows without any approval: bob (both) sees the new account …
    new.send_presence(pstatus="moved in")
    bob = next(j for j, c in contacts.items() if c[2] == "Bob")
    while (await clients[bob].next_presence(type=None, sender=new_jid,
                                            timeout=15))["status"] != "moved in":
        pass                                    # the presence sent after the hand-over
    # … nobody with a subscription was asked anything; the request the old account
    # had pending is repeated from the new one, with <moved/> (the bridge)
    for jid, client in clients.items():
        # requests come from the new account's server: a ping from it follows them
        asked = [p for p in await client.quiet(via=new) if p["type"] == "subscribe"]
        if contacts[jid][1] == "pending":
            assert [p.xml.findtext("{urn:xmpp:moved:1}moved/{urn:xmpp:moved:1}old-jid")
                    for p in asked] == [old_jid]
        else:
            assert not asked, jid
    # the old account keeps nothing of the moved contacts and refuses logins
    await old.close()
    refused = await login(fed["old.test"], f"{old_jid}/again", "pw", expect="failed_auth")
    assert refused.auth_failures == ["account-disabled"]
    await refused.close()
    for client in (new, *clients.values()):
        await client.close()


async def test_preauthorisation_and_an_unreachable_contact(fed):
    old_jid = account(fed["old.test"], "old.test", "gil")
    new_jid = account(fed["new.test"], "new.test", "gil")
    bob_jid = account(fed["c.test"], "c.test", "bob")
    old = await online(fed["old.test"], old_jid)
    new = await online(fed["new.test"], new_jid)
    bob = await online(fed["c.test"], bob_jid)
    await befriend(old, old_jid, bob, bob_jid, "both")
    old.update_roster("zed@dead.test", name="Zed")           # its domain cannot be reached
    await round_trip(old)                                     # the roster set has been handled
    # H: the new account allows the move in advance, and can list it
    error, _ = await ask(new, "set", f"<query xmlns='{XFER}'><oldaccount>{old_jid}</oldaccount>"
                                     "<allowed/></query>")
    assert error is None
    error, listing = await ask(new, "get", f"<query xmlns='{XFER}'/>")
    assert listing.findtext(f"{{{XFER}}}query/{{{XFER}}}oldaccount") == old_jid
    await new.close()                                         # nobody has to be online
    error, answer = await transfer(old, new_jid)
    assert error is None
    # zed's item was 'none': no notice; bob's notice went fine
    assert answer.find(f"{{{XFER}}}query") is None
    await wait_item(bob, new_jid, "both")
    await close_all(old, bob)


async def test_notices_to_one_server_are_checked_side_by_side(fed):
    """Many contacts on c.test: their notices are checked concurrently there
    (sharing the question G to new.test) and every one of them is rewritten."""
    old_jid = account(fed["old.test"], "old.test", "ida")
    new_jid = account(fed["new.test"], "new.test", "ida")
    friends = [account(fed["c.test"], "c.test", "pal") for _ in range(24)]
    old = await online(fed["old.test"], old_jid)
    new = await online(fed["new.test"], new_jid)
    allow_transfers(new)
    clients = await asyncio.gather(*(online(fed["c.test"], jid) for jid in friends))
    for jid, client in zip(friends, clients):      # one at a time: old's presence queue
        await befriend(old, old_jid, client, jid, "both")
    error, answer = await transfer(old, new_jid)
    assert error is None and answer.find(f"{{{XFER}}}query") is None, "no contact failed"
    for client in clients:
        await wait_item(client, new_jid, "both")
        assert old_jid not in await client.fetch_roster()
    await close_all(old, new, *clients)


async def test_a_client_without_xep0015_sees_one_entry_and_a_notice(fed):
    """A contact whose client knows nothing of account transfer: its server,
    on the old server's notice (XEP-0015 "notify each person subscribed …
    that the account has moved"), rewrites the item; the client's contact
    list — the roster it fetched, with each push applied (RFC 6121 §2.1.6) —
    ends with ONE entry, at the new address, with the name and groups the
    contact gave the old one (``old_contact = "remove"``: the old item goes
    with a ``subscription='remove'`` push, §2.5.2), and a chat message from
    its own server's domain says so (``notify_contacts``)."""
    old_jid = account(fed["old.test"], "old.test", "nia")
    new_jid = account(fed["new.test"], "new.test", "nia")
    bob_jid = account(fed["c.test"], "c.test", "bob")
    old = await online(fed["old.test"], old_jid)
    new = await online(fed["new.test"], new_jid)
    allow_transfers(new)
    bob = await online(fed["c.test"], bob_jid)
    await befriend(old, old_jid, bob, bob_jid, "both")
    bob.update_roster(old_jid, name="Nia", groups=["Family"])
    shown = {jid: item["groups"] for jid, item in (await bob.fetch_roster()).items()}
    assert shown == {old_jid: ["Family"]}
    while not bob.roster_pushes.empty():
        bob.roster_pushes.get_nowait()      # pushes from before the fetch
    error, answer = await transfer(old, new_jid)
    assert error is None and answer.find(f"{{{XFER}}}query") is None, "no contact failed"
    names = {}
    deadline = asyncio.get_running_loop().time() + 15
    while old_jid in shown or new_jid not in shown:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"{bob_jid}'s client shows {shown}"
        push = await asyncio.wait_for(bob.roster_pushes.get(), left)
        for jid, item in push["roster"]["items"].items():
            if item["subscription"] == "remove":
                shown.pop(str(jid), None)
            else:
                shown[str(jid)], names[str(jid)] = sorted(item["groups"]), item["name"]
    assert shown == {new_jid: ["Family"]} and names[new_jid] == "Nia"
    message = await asyncio.wait_for(bob.messages.get(), 15)
    assert (str(message["from"]), message["type"]) == ("c.test", "chat")
    assert message["body"] == (f"Nia ({old_jid}) has moved to {new_jid}. Your contact list "
                               f"was updated: {new_jid} replaces {old_jid}, name and groups "
                               "kept.")
    roster = await bob.fetch_roster()
    assert set(roster) == {new_jid} and roster[new_jid]["subscription"] == "both"
    await close_all(old, new, bob)


async def test_keep_old_contact_without_notice(fed):
    """``old_contact = "keep"``: the notice still rewrites the subscription
    to the new item, and the old item stays, with its name and groups and no
    subscription (the old server forgets its notified contacts when the
    transfer is done). ``notify_contacts = false``: no message. The
    notice message would follow the answer to the old server's notice, which
    comes before the transfer's answer (E): once E is in, a ping from the
    contact's server to the contact proves none is on its way."""
    old_jid = account(fed["old.test"], "old.test", "kim")
    new_jid = account(fed["new.test"], "new.test", "kim")
    kay_jid = account(fed["keep.test"], "keep.test", "kay")
    old = await online(fed["old.test"], old_jid)
    new = await online(fed["new.test"], new_jid)
    allow_transfers(new)
    kay = await online(fed["keep.test"], kay_jid)
    await befriend(old, old_jid, kay, kay_jid, "both")
    kay.update_roster(old_jid, name="Kim", groups=["Work"])
    await round_trip(kay)                   # the roster set has been handled
    error, answer = await transfer(old, new_jid)
    assert error is None and answer.find(f"{{{XFER}}}query") is None, "no contact failed"
    moved = await wait_item(kay, new_jid, "both")
    assert (moved.get("name"), moved["groups"]) == ("Kim", ["Work"])
    kept = await wait_item(kay, old_jid, "none")
    assert (kept.get("name"), kept["groups"]) == ("Kim", ["Work"])
    await round_trip(kay)
    assert kay.messages.empty(), kay.messages.get_nowait()
    assert set(await kay.fetch_roster()) == {old_jid, new_jid}
    await close_all(old, new, kay)


@pytest.mark.hostile
async def test_refusals(fed):
    old_jid = account(fed["old.test"], "old.test", "hal")
    new_jid = account(fed["new.test"], "new.test", "hal")
    old = await online(fed["old.test"], old_jid)
    # §2.4 on A: someone else's account, no new account, the same account, a malformed JID
    for payload, condition in [
        (f"<oldaccount>other@old.test</oldaccount><newaccount>{new_jid}</newaccount>",
         "forbidden"),
        ("<oldaccount>x</oldaccount>", "jid-malformed"),
        ("", "bad-request"),
        (f"<newaccount>{old_jid}</newaccount>", "not-acceptable"),
        ("<newaccount>a@b/c</newaccount>", "jid-malformed"),
    ]:
        error, _ = await ask(old, "set", f"<query xmlns='{XFER}'>{payload}</query>",
                             to="old.test")
        assert error == condition, (payload, error)
    # the new account says no → forbidden, nothing moved
    new = await online(fed["new.test"], new_jid)
    allow_transfers(new, allowed=False)
    error, _ = await transfer(old, new_jid)
    assert error == "forbidden"
    # … an authorisation given by another account does not count either
    other_jid = account(fed["new.test"], "new.test", "ivy")
    other = await online(fed["new.test"], other_jid)
    await ask(other, "set", f"<query xmlns='{XFER}'><oldaccount>{old_jid}</oldaccount>"
                            "<allowed/></query>")
    await new.close()
    error, _ = await transfer(old, new_jid)
    assert error == "recipient-unavailable"
    await close_all(old, other)


@pytest.mark.hostile
async def test_notice_from_a_user_or_another_domain_is_forbidden(fed, tmp_path):
    bob_jid = account(fed["c.test"], "c.test", "bob")
    old_jid = account(fed["old.test"], "old.test", "jay")
    bob = await online(fed["c.test"], bob_jid)
    old = await online(fed["old.test"], old_jid)
    await befriend(bob, bob_jid, old, old_jid, "both")
    notice = (f"<query xmlns='{XFER}'><oldaccount>{old_jid}</oldaccount>"
              f"<newaccount>mallory@evil.test</newaccount><rosteritem jid='{bob_jid}'/></query>")
    # a user of the old domain does not qualify (§2.4)
    error, _ = await ask(old, "set", notice, to="c.test")
    assert error == "forbidden"
    # nor does another (authenticated) domain
    async with FakeAuthority(fed["c.test"].evil_route, tmp_path, receiving=True) as evil:
        raw = await RawServerClient.connect(fed["c.test"].s2s_port)
        await raw.secure_s2s("evil.test", "c.test")
        raw.send("<db:result from='evil.test' to='c.test'>k</db:result>")
        assert (await raw.expect("result", timeout=15)).get("type") == "valid"
        raw.send(f"<iq type='set' id='n1' from='evil.test' to='c.test'>{notice}</iq>")
        await answer_to(evil, "n1")                 # c.test has decided on the notice
        await raw.close()
    assert (await bob.fetch_roster())[old_jid]["subscription"] == "both"
    assert "mallory@evil.test" not in await bob.fetch_roster()
    await close_all(bob, old)


@pytest.mark.hostile
async def test_roster_handover_without_authorisation_is_forbidden(fed, tmp_path):
    new_jid = account(fed["new.test"], "new.test", "kim")
    new = await online(fed["new.test"], new_jid)
    async with FakeAuthority(fed["new.test"].evil_route, tmp_path, receiving=True) as evil:
        raw = await RawServerClient.connect(fed["new.test"].s2s_port)
        await raw.secure_s2s("evil.test", "new.test")
        raw.send("<db:result from='evil.test' to='new.test'>k</db:result>")
        assert (await raw.expect("result", timeout=15)).get("type") == "valid"
        raw.send(f"<iq type='set' id='d1' from='evil.test' to='new.test'><query xmlns='{XFER}'>"
                 f"<oldaccount>kim@evil.test</oldaccount><newaccount>{new_jid}</newaccount>"
                 "<item jid='spam@evil.test' subscription='both'/></query></iq>")
        await answer_to(evil, "d1")                 # new.test has decided on the hand-over
        await raw.close()
    assert "spam@evil.test" not in await new.fetch_roster()
    await new.close()


async def answer_to(authority, iq_id: str, timeout: float = 15):
    """The answer evil.test gets (over the server's own stream to it) to its
    IQ *iq_id*: the server has handled that IQ to the end."""
    async def answer():
        while True:
            stanza = await authority.stanzas.get()
            if stanza.tag.endswith("}iq") and stanza.get("id") == iq_id:
                return stanza
    return await asyncio.wait_for(answer(), timeout)


async def close_all(*clients):
    for client in clients:
        await client.close()


@pytest.mark.hostile
async def test_old_server_killed_mid_transfer_resumes_and_completes(fed):
    old_srv = fed["old.test"]
    old_jid = account(old_srv, "old.test", "lou")
    new_jid = account(fed["new.test"], "new.test", "lou")
    bob_jid = account(fed["c.test"], "c.test", "bob")
    sam_jid = account(fed["slow.test"], "slow.test", "sam")
    async with Proxy(old_srv.proxy_route, fed["slow.test"].s2s_port) as proxy:
        old = await online(old_srv, old_jid)
        new = await online(fed["new.test"], new_jid)
        bob = await online(fed["c.test"], bob_jid)
        sam = await online(fed["slow.test"], sam_jid)
        await befriend(old, old_jid, bob, bob_jid, "both")
        await befriend(old, old_jid, sam, sam_jid, "both")
        error, _ = await ask(new, "set", f"<query xmlns='{XFER}'><oldaccount>{old_jid}"
                                         "</oldaccount><allowed/></query>")
        assert error is None
        proxy.mode = "silent"                      # slow.test stops answering: NOTIFYING waits
        a = old.make_iq_set(ito="old.test")
        a.xml.append(ET.fromstring(f"<query xmlns='{XFER}'><newaccount>{new_jid}</newaccount>"
                                   "</query>"))
        a.send()
        # in NOTIFYING: bob's notice answered, sam's held by the silent proxy
        # (the server's own progress: nothing on the wire shows it)
        await asyncio.to_thread(old_srv.wait_for_log,
                                f"transfer {old_jid}: notice for {bob_jid}: ok", 15)
        assert "notifying" in old_srv.log() or "notice for" in old_srv.log()
        old_srv.proc.kill()                        # kill -9 in the middle
        old_srv.proc.wait()
        old_srv.stop()
        old_srv.start()
        # the job resumes and completes; bob moves exactly once, sam is bridged
        await wait_gone(bob, old_jid, timeout=40)
        await wait_item(bob, new_jid, "both", timeout=40)
        roster = await new.fetch_roster()
        deadline = asyncio.get_running_loop().time() + 40
        while sam_jid not in roster and asyncio.get_running_loop().time() < deadline:
            await new.roster_pushed(deadline)          # the hand-over comes with pushes
            roster = await new.fetch_roster()
        assert set(roster) == {bob_jid, sam_jid}
        assert list(await bob.fetch_roster()).count(new_jid) == 1
        assert "resuming in state" in old_srv.log()
        await close_all(new, bob, sam)


@pytest.mark.hostile
async def test_failed_hand_over_is_retried_when_the_user_asks_again(fed):
    """D cannot reach the new server → FAILED_PARTIAL; asking again finishes the job."""
    old_srv, new_srv = fed["old.test"], fed["new.test"]
    old_jid = account(old_srv, "old.test", "mia")
    new_jid = account(new_srv, "new.test", "mia")
    bob_jid = account(fed["c.test"], "c.test", "bob")
    sam_jid = account(fed["slow.test"], "slow.test", "sam")
    async with Proxy(old_srv.proxy_route, fed["slow.test"].s2s_port) as proxy:
        old = await online(old_srv, old_jid)
        new = await online(new_srv, new_jid)
        bob = await online(fed["c.test"], bob_jid)
        sam = await online(fed["slow.test"], sam_jid)
        await befriend(old, old_jid, bob, bob_jid, "both")
        await befriend(old, old_jid, sam, sam_jid, "both")
        error, _ = await ask(new, "set", f"<query xmlns='{XFER}'><oldaccount>{old_jid}"
                                         "</oldaccount><allowed/></query>")
        assert error is None
        await new.close()
        proxy.mode = "silent"                        # NOTIFYING waits on slow.test …
        pending = asyncio.ensure_future(transfer(old, new_jid, timeout=90))
        # bob's notice answered (c.test asked new.test about it), sam's held:
        # the server's own progress, shown only in its log
        await asyncio.to_thread(old_srv.wait_for_log,
                                f"transfer {old_jid}: notice for {bob_jid}: ok", 15)
        new_srv.stop()                               # … while the new server goes away
        error, _ = await pending
        assert error in ("remote-server-not-found", "remote-server-timeout")
        await wait_item(bob, new_jid, "both", timeout=20)    # bob's notice went through
        new_srv.start()
        error, answer = await transfer(old, new_jid, timeout=60)
        assert error is None, ET.tostring(answer)
        new = await online(new_srv, new_jid)
        assert set(await new.fetch_roster()) == {bob_jid, sam_jid}
        await close_all(old, new, bob, sam)
