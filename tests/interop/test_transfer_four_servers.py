"""The XEP-0015 end-to-end scenario in one piece: three xferd domains and one
Prosody domain on loopback, all finding each other through the test DNS
responder (SRV records), and one XEP-0015 transfer across them.

alice@one.test moves to alice@two.test. Her contacts: on one.test (both),
two.test (to), three.test (from, and one pending request), prosody.test
(both), plus a transport and a contact behind it. Afterwards every contact on
an xferd domain shows the new JID with the same name, groups and subscription;
the Prosody contact gets the bridged request with <moved/>; the new roster is
the old one minus the transport items; the report (E) lists only the Prosody
contact as failed; presence flows without anybody approving anything.
"""

import asyncio

import pytest

from tests.harness import XferdProcess, login, round_trip
from tests.integration.test_accountxfer import befriend, transfer, wait_gone, wait_item
from tests.interop.test_prosody_federation import S2S_TIMEOUT, FedClient
from tests.interop.test_prosody_moved import mutual

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

MOVED = "urn:xmpp:moved:1"
XFER = "jabber:iq:accountxfer"
DOMAINS = ("one.test", "two.test", "three.test")


@pytest.fixture(scope="module")
def xferds(dns, prosody, tmp_path_factory):
    servers = {}
    for domain in DOMAINS:
        proc = XferdProcess(tmp_path_factory.mktemp(domain.split(".")[0]), domains=(domain,),
                            overrides={"s2s": {"nameserver": dns.address}})
        servers[domain] = proc
    for domain, proc in servers.items():
        proc.start()
        dns.add_a(domain)
        dns.add_srv(domain, proc.s2s_port, target=domain)
    yield servers
    for proc in servers.values():
        proc.stop()


async def online(proc, jid):
    client = await login(proc, f"{jid}/r", "pw", client_cls=FedClient)
    client.send_presence()
    await client.fetch_roster()
    return client


async def test_transfer_across_three_xferd_domains_and_prosody(xferds, prosody):
    one, two, three = (xferds[d] for d in DOMAINS)
    for proc, jid in ((one, "alice@one.test"), (two, "alice@two.test"), (one, "olga@one.test"),
                      (two, "tom@two.test"), (three, "fred@three.test"),
                      (three, "pat@three.test")):
        proc.adduser(jid, "pw")
    prosody.adduser("pia@prosody.test", "pw")
    old, new = await online(one, "alice@one.test"), await online(two, "alice@two.test")
    contacts = {"olga@one.test": (one, "both"), "tom@two.test": (two, "to"),
                "fred@three.test": (three, "from"), "pat@three.test": (three, "pending")}
    clients = {}
    for jid, (proc, how) in contacts.items():
        clients[jid] = await online(proc, jid)
        await befriend(old, "alice@one.test", clients[jid], jid, how)
        old.update_roster(jid, name=jid.split("@")[0].title(), groups=["Friends"])
    pia = await online(prosody, "pia@prosody.test")
    await mutual(old, "alice@one.test", pia, "pia@prosody.test")
    old.update_roster("pia@prosody.test", name="Pia", groups=["Work"])
    old.update_roster("icq.gateway.test", name="ICQ")
    old.update_roster("42@icq.gateway.test", name="behind the gateway")
    await round_trip(old)                       # the roster sets above have been handled
    before = await old.fetch_roster()
    views = {jid: (await clients[jid].fetch_roster())["alice@one.test"]
             for jid, (_, how) in contacts.items() if how != "pending"}
    # the new account allows the move in advance (H), the old one asks (A)
    from tests.harness import ask
    error, _ = await ask(new, "set", f"<query xmlns='{XFER}'><oldaccount>alice@one.test"
                                     "</oldaccount><allowed/></query>")
    assert error is None
    error, answer = await transfer(old, "alice@two.test", timeout=120)
    assert error is None
    failed = {el.get("jid"): el.get("condition")
              for el in answer.findall(f"{{{XFER}}}query/{{{XFER}}}rosteritem")}
    assert set(failed) == {"pia@prosody.test"}
    assert failed["pia@prosody.test"] in ("service-unavailable", "feature-not-implemented")

    # every xferd contact: new JID, same name, groups and subscription, old JID gone
    for jid, view in views.items():
        await wait_gone(clients[jid], "alice@one.test", timeout=S2S_TIMEOUT)
        item = await wait_item(clients[jid], "alice@two.test", view["subscription"],
                               timeout=S2S_TIMEOUT)
        assert (item.get("name"), item["groups"]) == (view.get("name"), view["groups"]), jid
    # the Prosody contact: the bridged request, <moved/> intact
    request = await pia.next_presence(type="subscribe", sender="alice@two.test",
                                      timeout=S2S_TIMEOUT)
    assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == "alice@one.test"
    # the new roster is the old one without the transport and its contact
    after = await new.fetch_roster()
    assert set(after) == set(before) - {"icq.gateway.test", "42@icq.gateway.test"}
    for jid in after:
        assert (after[jid].get("name"), after[jid]["groups"]) == \
            (before[jid].get("name"), before[jid]["groups"]), jid
    # presence flows to a 'both' contact without anybody approving anything
    new.send_presence(pstatus="settled in")
    while (await clients["olga@one.test"].next_presence(
            type=None, sender="alice@two.test", timeout=S2S_TIMEOUT))["status"] != "settled in":
        pass
    for jid, client in clients.items():
        # requests come from the new account's server: a ping from it follows them
        asked = [p for p in await client.quiet(via=new) if p["type"] == "subscribe"]
        assert bool(asked) == (contacts[jid][1] == "pending"), jid
    for client in (old, new, pia, *clients.values()):
        await client.close()
