"""XEP-0015 account transfer with a contact on a real Prosody 0.12 .

old@xferd.test moves to new@xferd.test (both on the one xferd: the old and
the new server are the same, which the transfer allows). The old account has
two contacts, each ``both``: one on xferd.test, one on prosody.test.

- The notice C to xferd.test succeeds: xferd rewrites the contact's item.
- The notice C to prosody.test fails — Prosody has no
  ``jabber:iq:accountxfer`` — so the answer E lists that contact as failed,
  and the roster hand-over D marks it ``notified='false'``: the new server
  merges it as ``none`` with a pending ``ask`` (and pre-approved, as the
  contact shared presence with the old account), and bridges it with
  XEP-0283: a ``subscribe`` carrying
  ``<moved xmlns='urn:xmpp:moved:1'><old-jid>OLD</old-jid></moved>``, which
  Prosody delivers to the contact untouched. The contact approves; presence
  flows; its own request to the new account is accepted at once.

Driven as tests/integration/test_accountxfer.py does, with slixmpp clients:
the new account pre-authorises the move (H), the old one asks its domain
(A) and waits for the answer (E).
"""

import asyncio
import os
import sys
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from tests.harness import REPO, ask, login, round_trip, tool_report
from tests.integration.test_accountxfer import transfer, wait_gone, wait_item
from tests.interop.test_prosody_federation import S2S_TIMEOUT, FedClient
from tests.interop.test_prosody_moved import mutual
from tests.prosody import XFERD_DOMAIN

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

XFER = "jabber:iq:accountxfer"
MOVED = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
#: what a server without XEP-0015 answers to the notice (server/xmpp/transfer.py)
NOT_IMPLEMENTED = ("service-unavailable", "feature-not-implemented")


async def online(proc, jid, resource="r"):
    client = await login(proc, f"{jid}/{resource}", "pw", client_cls=FedClient)
    client.send_presence()
    await client.fetch_roster()
    return client


async def preauthorise(new, old_jid):
    """H: the new account allows the move from *old_jid* in advance."""
    error, answer = await ask(new, "set", f"<query xmlns='{XFER}'><oldaccount>{old_jid}"
                                          "</oldaccount><allowed/></query>")
    assert error is None, ET.tostring(answer)


async def befriend_both(xferd_fed, prosody, old, old_jid, xferd_user, prosody_user):
    """A contact on each server, ``both`` with the old account, named and grouped."""
    x_jid, p_jid = xferd_user("xia"), prosody_user("pia")
    x, p = await online(xferd_fed, x_jid), await online(prosody, p_jid)
    await mutual(old, old_jid, x, x_jid)
    await mutual(old, old_jid, p, p_jid)
    old.update_roster(x_jid, name="Xia", groups=["Friends"])
    old.update_roster(p_jid, name="Pia", groups=["Work"])
    x.update_roster(old_jid, name="Ola", groups=["Pals"])     # X's own name for the account
    await round_trip(old)                       # the roster sets above have been handled
    await round_trip(x)
    return x_jid, p_jid, x, p


def failed_contacts(answer) -> dict[str, str]:
    """E's ``<rosteritem status='failed'/>`` list: jid → condition."""
    return {el.get("jid"): el.get("condition")
            for el in answer.findall(f"{{{XFER}}}query/{{{XFER}}}rosteritem")
            if el.get("status") == "failed"}


async def check_contacts_after(xferd_fed, old_jid, new_jid, x_jid, p_jid, new, x, p):
    """What every party sees after the transfer; returns the new account's client."""
    # the xferd contact was notified: its item now names the new JID, subscription kept
    await wait_gone(x, old_jid)
    item = await wait_item(x, new_jid, "both")
    assert (item.get("name"), item["groups"]) == ("Ola", ["Pals"])
    # the Prosody contact: the bridged request, <moved/> intact through Prosody
    request = await p.next_presence(type="subscribe", sender=new_jid, timeout=S2S_TIMEOUT)
    assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid
    # … whose claim the contact can check: the old server published the statement, open
    error, answer = await ask(p, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{MOVED}'>"
                                        "<item id='current'/></items></pubsub>", to=old_jid)
    assert error is None, ET.tostring(answer)
    assert answer.findtext(f".//{{{MOVED}}}new-jid") == new_jid
    # Prosody knew nothing of the move: its user still lists the old account
    assert (await p.fetch_roster())[old_jid]["subscription"] == "both"

    if new is None:
        new = await online(xferd_fed, new_jid, "check")
    # the new account: the notified contact 'both', the un-notified one 'none' + ask
    # (§2.3 merge), names and groups kept
    roster = await new.fetch_roster()
    assert set(roster) == {x_jid, p_jid}, roster
    assert (roster[x_jid]["subscription"], roster[x_jid].get("ask")) == ("both", None)
    assert (roster[x_jid].get("name"), roster[x_jid]["groups"]) == ("Xia", ["Friends"])
    assert (roster[p_jid]["subscription"], roster[p_jid].get("ask")) == ("none", "subscribe")
    assert roster[p_jid].get("approved") == "true"       # pre-approved (RFC 6121 §3.4)
    assert (roster[p_jid].get("name"), roster[p_jid]["groups"]) == ("Pia", ["Work"])

    # the Prosody contact approves: presence flows from it to the new account
    await new.quiet(via=p)                      # drop what came so far from Prosody's side
    p.send_presence(pto=new_jid, ptype="subscribed")
    await new.next_presence(type="subscribed", sender=p_jid, timeout=S2S_TIMEOUT)
    await new.next_presence(type=None, sender=p_jid, timeout=S2S_TIMEOUT)
    await wait_item(new, p_jid, "to")
    p.send_presence(pstatus="pia here")
    while (await new.next_presence(type=None, sender=p_jid,
                                   timeout=S2S_TIMEOUT))["status"] != "pia here":
        pass
    # it shared presence with the old account, so the new one pre-approved it (§2.3):
    # when it subscribes in turn, xferd accepts at once — nobody is asked
    p.send_presence(pto=new_jid, ptype="subscribe")
    await p.next_presence(type="subscribed", sender=new_jid, timeout=S2S_TIMEOUT)
    await wait_item(new, p_jid, "both")
    await wait_item(p, new_jid, "both")
    # a request from P would have come over Prosody's stream before P's ping
    assert not [pr for pr in await new.quiet(via=p) if pr["type"] == "subscribe"]
    # … and sees the new account's presence
    new.send_presence(pstatus="moved in")
    while (await p.next_presence(type=None, sender=new_jid,
                                 timeout=S2S_TIMEOUT))["status"] != "moved in":
        pass
    return new


async def test_transfer_with_a_prosody_contact(xferd_fed, prosody, xferd_user, prosody_user):
    old_jid, new_jid = xferd_user("old"), xferd_user("new")
    old, new = await online(xferd_fed, old_jid), await online(xferd_fed, new_jid)
    clients = [old, new]
    try:
        x_jid, p_jid, x, p = await befriend_both(xferd_fed, prosody, old, old_jid,
                                                 xferd_user, prosody_user)
        clients += [x, p]
        await preauthorise(new, old_jid)

        error, answer = await transfer(old, new_jid)           # A … E
        assert error is None, ET.tostring(answer)
        failed = failed_contacts(answer)
        assert set(failed) == {p_jid}, ET.tostring(answer)
        assert failed[p_jid] in NOT_IMPLEMENTED, ET.tostring(answer)
        log = xferd_fed.log()
        assert f"notice for {p_jid}: {failed[p_jid]}" in log
        assert f"notice for {x_jid}: ok" in log
        assert "1 bridged with XEP-0283" in log

        await check_contacts_after(xferd_fed, old_jid, new_jid, x_jid, p_jid, new, x, p)
        # the old account refuses logins now
        await old.close()
        refused = await login(xferd_fed, f"{old_jid}/again", "pw", expect="failed_auth")
        assert refused.auth_failures == ["account-disabled"]
        await refused.close()
    finally:
        for client in clients:
            await client.close()
    assert [line for line in prosody.errors() if "s2s" in line] == []


async def test_transfer_tool_with_a_prosody_contact(xferd_fed, prosody, xferd_user,
                                                    prosody_user, tmp_path):
    """The same move, run with ``xferd transfer`` in a subprocess as a user would."""
    old_jid, new_jid = xferd_user("old"), xferd_user("new")
    old = await online(xferd_fed, old_jid)
    clients = [old]
    try:
        x_jid, p_jid, x, p = await befriend_both(xferd_fed, prosody, old, old_jid,
                                                 xferd_user, prosody_user)
        clients += [x, p]
        await old.close()
        code, out, err = await run_transfer_tool(xferd_fed, tmp_path, "--old", old_jid,
                                                 "--new", new_jid, "--timeout", "120",
                                                 "--wait", "4")
        assert code == 0, (out, err)                # waiting for approval is no failure
        # xferd's contact was updated (XEP-0015); Prosody's, asked the XEP-0283
        # way, must approve — Prosody 0.12 has no auto-moved (the words are those
        # of `xferd migrate`)
        assert report(out) == {x_jid: "updated", p_jid: "waiting for manual approval"}, \
            (out, err)
        assert f"{new_jid} has 2 roster item(s)" in out
        progress = err.partition("[4/5]")[2]        # each contact logged as its notice ends
        assert p_jid in progress and x_jid in progress, err
        assert "[5/5] waiting up to 4 s for answers from 1 contact(s)" in err
        new = await check_contacts_after(xferd_fed, old_jid, new_jid, x_jid, p_jid, None, x, p)
        clients.append(new)
        # afterwards the old account cannot log in; `status` says where it went
        code, out, err = await run_transfer_tool(xferd_fed, tmp_path, "status", "--old",
                                                 old_jid)
        assert code == 0, (out, err)
        assert f"{old_jid} has moved to {new_jid}" in out
    finally:
        for client in clients:
            await client.close()


report = tool_report


async def run_transfer_tool(xferd_fed, cwd: Path, *args: str):
    """``xferd transfer ARGS`` in a subprocess: (exit status, stdout, stderr)."""
    env = dict(os.environ, XFERD_OLD_PASSWORD="pw", XFERD_NEW_PASSWORD="pw",
               PYTHONPATH=str(REPO))
    env.pop("XFERD_CONFIG", None)
    cafile = str(xferd_fed.cert(XFERD_DOMAIN))
    port = str(xferd_fed.c2s_port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "transfer", *args,
        "--old-host", "127.0.0.1", "--old-port", port, "--old-cafile", cafile,
        *(("--new-host", "127.0.0.1", "--new-port", port, "--new-cafile", cafile)
          if "--new" in args else ()),
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 150)
    return proc.returncode, out.decode(), err.decode()
