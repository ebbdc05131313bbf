"""``xferd migrate`` between xferd and a real Prosody 0.12, both ways round.

The tool runs as a user would run it (``python -m server migrate`` in a
subprocess, passwords in XFERD_OLD_PASSWORD / XFERD_NEW_PASSWORD, each
server's self-signed certificate as its CA file), speaking plain client XMPP
to both servers:

(a) old@prosody.test → new@xferd.test: the contact on xferd.test is moved by
    xferd's auto-moved, which verifies the statement the tool published in
    Prosody's PEP (``access_model=open`` through publish-options) — the
    report says ``auto-updated``; the contact on prosody.test gets the
    request with ``<moved/>`` (Prosody has no auto-moved) — ``waiting for
    manual approval`` — and, once it approves, a rerun says ``approved``;
(b) old@xferd.test → new@prosody.test: the contact on xferd.test is moved
    by xferd (the old account is local, so xferd reads its own statement);
    the new Prosody account gets the roster items, names and groups.

The vCard (XEP-0054) goes along both ways: tests/prosody.py loads Prosody's
mod_vcard for this.
"""

import asyncio
import json
import os
import sys

import pytest
from slixmpp.xmlstream import ET

from tests.harness import REPO, ask, login, tool_report
from tests.interop.test_prosody_federation import S2S_TIMEOUT, FedClient, wait_for_item
from tests.interop.test_prosody_moved import mutual
from tests.prosody import PROSODY_DOMAIN, XFERD_DOMAIN

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

MOVED = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
ROSTER = "jabber:iq:roster"
#: how long the tool watches for answers: long enough for a first s2s stream
#: (DNS, STARTTLS, dialback) and the statement check over it
WAIT = "12"


async def online(proc, jid, resource="r"):
    client = await login(proc, f"{jid}/{resource}", "pw", client_cls=FedClient)
    client.send_presence()
    await client.fetch_roster()
    return client


def endpoints(xferd_fed, prosody):
    """domain → (c2s port, CA file) for the tool's --*-port / --*-cafile."""
    return {XFERD_DOMAIN: (xferd_fed.c2s_port, xferd_fed.cert(XFERD_DOMAIN)),
            PROSODY_DOMAIN: (prosody.c2s_port, prosody.cert())}


async def run_migrate(servers, old, new, cwd, *args):
    """``xferd migrate OLD → NEW`` in a subprocess: (exit status, stdout, stderr)."""
    (old_port, old_ca), (new_port, new_ca) = (servers[old.partition("@")[2]],
                                              servers[new.partition("@")[2]])
    # the state file without --state: $XDG_STATE_HOME/xferd/, here the test's directory
    env = dict(os.environ, XFERD_OLD_PASSWORD="pw", XFERD_NEW_PASSWORD="pw",
               PYTHONPATH=str(REPO), XDG_STATE_HOME=str(cwd))
    env.pop("XFERD_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "migrate", "--from", old, "--to", new,
        "--old-host", "127.0.0.1", "--old-port", str(old_port),
        "--new-host", "127.0.0.1", "--new-port", str(new_port),
        "--old-cafile", str(old_ca), "--new-cafile", str(new_ca), *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 150)
    return proc.returncode, out.decode(), err.decode()


report = tool_report


async def set_item(client, jid, name, groups):
    groups_xml = "".join(f"<group>{g}</group>" for g in groups)
    error, answer = await ask(client, "set", f"<query xmlns='{ROSTER}'><item jid='{jid}' "
                                             f"name='{name}'>{groups_xml}</item></query>")
    assert error is None, ET.tostring(answer)


async def set_vcard(client, full_name):
    error, answer = await ask(client, "set", f"<vCard xmlns='vcard-temp'><FN>{full_name}</FN>"
                                             "<NICKNAME>mover</NICKNAME></vCard>")
    assert error is None, ET.tostring(answer)


async def vcard_name(client):
    error, answer = await ask(client, "get", "<vCard xmlns='vcard-temp'/>")
    assert error is None, ET.tostring(answer)
    return answer.findtext(".//{vcard-temp}FN")


async def statement_of(client, owner):
    error, answer = await ask(client, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{MOVED}'>"
                                             "<item id='current'/></items></pubsub>", to=owner)
    return error or answer.findtext(f".//{{{PUBSUB}}}item/{{{MOVED}}}moved/{{{MOVED}}}new-jid")


async def test_prosody_account_moves_to_xferd(xferd_fed, prosody, xferd_user, prosody_user,
                                             tmp_path):
    old_jid, new_jid = prosody_user("old"), xferd_user("new")
    x_jid, p_jid = xferd_user("xena"), prosody_user("pat")
    old = await online(prosody, old_jid)
    x, p = await online(xferd_fed, x_jid), await online(prosody, p_jid)
    clients = [old, x, p]
    try:
        await mutual(old, old_jid, x, x_jid)
        await mutual(old, old_jid, p, p_jid)
        await set_item(old, x_jid, "Xena", ["Friends"])
        await set_item(old, p_jid, "Pat", ["Work", "Friends"])
        await set_vcard(old, "Olga Old")
        await old.close()

        servers = endpoints(xferd_fed, prosody)
        code, out, err = await run_migrate(servers, old_jid, new_jid, tmp_path, "--wait", WAIT)
        assert code == 0, (out, err)
        lines = report(out)
        assert lines == {x_jid: "auto-updated", p_jid: "waiting for manual approval"}, out
        assert "[9/9]" in err and "roster 2/2" in err and "vCard: copied" in err, err

        # xferd checked the statement in Prosody's PEP and moved X's roster item
        await wait_for_item(x, new_jid, "both")
        assert old_jid not in await x.fetch_roster()    # old one removed ([moved] old_contact)
        assert "verified" in xferd_fed.log()
        # … a statement anyone may read (X no longer shares presence with old)
        assert await statement_of(x, old_jid) == new_jid

        # Prosody has no auto-moved: P is asked, <moved/> intact
        request = await p.next_presence(type="subscribe", sender=new_jid, timeout=S2S_TIMEOUT)
        assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid

        # the new account: both contacts, names and groups, the vCard
        new = await online(xferd_fed, new_jid, "check")
        clients.append(new)
        items = await new.fetch_roster()
        assert set(items) == {x_jid, p_jid}
        assert (items[x_jid]["name"], items[x_jid]["groups"]) == ("Xena", ["Friends"])
        assert items[p_jid]["name"] == "Pat" and sorted(items[p_jid]["groups"]) == \
            ["Friends", "Work"]
        assert items[x_jid]["subscription"] == "both"
        assert (items[p_jid]["subscription"], items[p_jid].get("ask")) == ("none", "subscribe")
        assert await vcard_name(new) == "Olga Old"

        # P approves by hand; presence flows, and a rerun reports it, sending nothing again
        p.send_presence(pto=new_jid, ptype="subscribed")
        await wait_for_item(new, p_jid, "to")
        await new.next_presence(type=None, sender=p_jid, timeout=S2S_TIMEOUT)
        await p.quiet(via=new)                 # drop what came so far from xferd's side
        code, out, err = await run_migrate(servers, old_jid, new_jid, tmp_path, "--wait", "0")
        assert code == 0, (out, err)
        assert report(out) == {x_jid: "auto-updated", p_jid: "approved"}, out
        assert "sending 0 subscription stanza(s)" in err
        # the tool's stanzas leave xferd for Prosody before a ping from the new account
        assert not [pr for pr in await p.quiet(via=new) if pr["type"] == "subscribe"]
        state = json.loads((tmp_path / "xferd" / f"xferd-migrate-{old_jid}-{new_jid}.json").read_text())
        assert state["contacts"][p_jid]["sent"] == ["subscribed", "subscribe"]
    finally:
        for client in clients:
            await client.close()
    assert [line for line in prosody.errors() if "s2s" in line] == []


async def test_xferd_account_moves_to_prosody(xferd_fed, prosody, xferd_user, prosody_user,
                                             tmp_path):
    old_jid, new_jid = xferd_user("old"), prosody_user("new")
    x_jid, p_jid = xferd_user("xavi"), prosody_user("paz")
    old = await online(xferd_fed, old_jid)
    x, p = await online(xferd_fed, x_jid), await online(prosody, p_jid)
    clients = [old, x, p]
    try:
        await mutual(old, old_jid, x, x_jid)
        await mutual(old, old_jid, p, p_jid)
        await set_item(old, x_jid, "Xavi", ["Friends"])
        await set_item(old, p_jid, "Paz", ["Work"])
        await set_vcard(old, "Oscar Old")
        await old.close()

        code, out, err = await run_migrate(endpoints(xferd_fed, prosody), old_jid, new_jid,
                                           tmp_path, "--wait", WAIT)
        assert code == 0, (out, err)
        lines = report(out)
        assert lines == {x_jid: "auto-updated", p_jid: "waiting for manual approval"}, out
        assert "vCard: copied" in err, err

        # xferd verified its own user's statement (the old account is local)
        await wait_for_item(x, new_jid, "both")
        assert old_jid not in await x.fetch_roster()
        # the Prosody contact is on the new account's own server: asked, <moved/> intact
        request = await p.next_presence(type="subscribe", sender=new_jid, timeout=S2S_TIMEOUT)
        assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid

        # the new Prosody account: the items with names and groups, the vCard
        new = await online(prosody, new_jid, "check")
        clients.append(new)
        items = await new.fetch_roster()
        assert set(items) == {x_jid, p_jid}
        assert (items[x_jid]["name"], items[x_jid]["groups"]) == ("Xavi", ["Friends"])
        assert (items[p_jid]["name"], items[p_jid]["groups"]) == ("Paz", ["Work"])
        assert items[x_jid]["subscription"] == "both", items
        assert (items[p_jid]["subscription"], items[p_jid].get("ask")) == ("none", "subscribe")
        assert await vcard_name(new) == "Oscar Old"
        # presence flows from the xferd contact to the new Prosody account
        x.send_presence(pstatus="xavi here")
        while (await new.next_presence(type=None, sender=x_jid,
                                       timeout=S2S_TIMEOUT))["status"] != "xavi here":
            pass
    finally:
        for client in clients:
            await client.close()
