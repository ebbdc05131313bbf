"""``xferd migrate`` between xferd and a real ejabberd 23.01, both ways round.

The tool runs as a user would run it (``python -m server migrate`` in a
subprocess; see tests/interop/test_prosody_migrate.py), speaking plain
client XMPP to both servers. Each old account has two contacts, ``both``
with it: one on xferd.test, one on ejabberd.test.

(a) old@ejabberd.test → new@xferd.test: the statement goes into ejabberd's
    PEP (mod_pubsub's ``pep`` plugin, ``access_model=open`` through
    publish-options, XEP-0283 §4.1); the contact on xferd.test is moved by
    xferd's auto-moved after it read that statement over s2s
    (``auto-updated``); ejabberd has no auto-moved, so its own user is asked
    by the new account, ``<moved/>`` intact (``waiting for manual
    approval``), and once it approves, a rerun says ``approved``;
(b) old@xferd.test → new@ejabberd.test: the xferd contact is moved by xferd
    (the old account is local), and asks the new account in turn; ejabberd
    23.01 keeps no subscription pre-approvals (RFC 6121 §3.4), so that request
    reaches the tool, which approves it — the contact ends ``both``. The
    ejabberd contact is on the new account's own server and is asked the same
    way as in (a); the new ejabberd account gets the roster items with names
    and groups, and the vCard (XEP-0054, ejabberd's mod_vcard).
"""

import pytest

from tests.ejabberd import EJABBERD_DOMAIN
from tests.harness import tool_report
from tests.interop.test_prosody_federation import S2S_TIMEOUT, wait_for_item
from tests.interop.test_prosody_migrate import (MOVED, WAIT, online, run_migrate, set_item,
                                               set_vcard, statement_of, vcard_name)
from tests.interop.test_prosody_moved import mutual
from tests.prosody import XFERD_DOMAIN

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]


def endpoints(xferd_ej, ejabberd):
    """domain → (c2s port, CA file) for the tool's --*-port / --*-cafile."""
    return {XFERD_DOMAIN: (xferd_ej.c2s_port, xferd_ej.cert(XFERD_DOMAIN)),
            EJABBERD_DOMAIN: (ejabberd.c2s_port, ejabberd.cert())}


async def test_ejabberd_account_moves_to_xferd(xferd_ej, ejabberd, xferd_ej_user, ejabberd_user,
                                              tmp_path):
    old_jid, new_jid = ejabberd_user("old"), xferd_ej_user("new")
    x_jid, e_jid = xferd_ej_user("xena"), ejabberd_user("eli")
    old = await online(ejabberd, old_jid)
    x, e = await online(xferd_ej, x_jid), await online(ejabberd, e_jid)
    clients = [old, x, e]
    try:
        await mutual(old, old_jid, x, x_jid)
        await mutual(old, old_jid, e, e_jid)
        await set_item(old, x_jid, "Xena", ["Friends"])
        await set_item(old, e_jid, "Eli", ["Work", "Friends"])
        await set_vcard(old, "Olga Old")
        await old.close()

        servers = endpoints(xferd_ej, ejabberd)
        code, out, err = await run_migrate(servers, old_jid, new_jid, tmp_path, "--wait", WAIT)
        assert code == 0, (out, err)
        assert tool_report(out) == {x_jid: "auto-updated",
                                    e_jid: "waiting for manual approval"}, (out, err)
        assert "roster 2/2" in err and "vCard: copied" in err, err

        # xferd read the statement in ejabberd's PEP and moved X's roster item
        await wait_for_item(x, new_jid, "both")
        # the old item is gone ([moved] old_contact = "remove"): one entry, the new one
        assert old_jid not in await x.fetch_roster()
        assert "verified" in xferd_ej.log()
        assert await statement_of(x, old_jid) == new_jid      # open to anyone who asks

        # ejabberd has no auto-moved: E is asked, <moved/> intact
        request = await e.next_presence(type="subscribe", sender=new_jid, timeout=S2S_TIMEOUT)
        assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid
        # … and still lists only the old account as 'both'
        roster = await e.fetch_roster()
        assert roster[old_jid]["subscription"] == "both"

        # the new account: both contacts, names and groups, the vCard
        new = await online(xferd_ej, new_jid, "check")
        clients.append(new)
        items = await new.fetch_roster()
        assert set(items) == {x_jid, e_jid}
        assert (items[x_jid]["name"], items[x_jid]["groups"]) == ("Xena", ["Friends"])
        assert items[e_jid]["name"] == "Eli" and sorted(items[e_jid]["groups"]) == \
            ["Friends", "Work"]
        assert items[x_jid]["subscription"] == "both"
        assert (items[e_jid]["subscription"], items[e_jid].get("ask")) == ("none", "subscribe")
        assert await vcard_name(new) == "Olga Old"

        # E approves by hand; presence flows, and a rerun reports it
        e.send_presence(pto=new_jid, ptype="subscribed")
        await wait_for_item(new, e_jid, "to")
        await wait_for_item(e, new_jid, "from")
        await new.next_presence(type=None, sender=e_jid, timeout=S2S_TIMEOUT)
        code, out, err = await run_migrate(servers, old_jid, new_jid, tmp_path, "--wait", "0")
        assert code == 0, (out, err)
        assert tool_report(out) == {x_jid: "auto-updated", e_jid: "approved"}, out
        assert "sending 0 subscription stanza(s)" in err
    finally:
        for client in clients:
            await client.close()
    assert ejabberd.errors() == []


async def test_xferd_account_moves_to_ejabberd(xferd_ej, ejabberd, xferd_ej_user, ejabberd_user,
                                              tmp_path):
    old_jid, new_jid = xferd_ej_user("old"), ejabberd_user("new")
    x_jid, e_jid = xferd_ej_user("xavi"), ejabberd_user("eva")
    old = await online(xferd_ej, old_jid)
    x, e = await online(xferd_ej, x_jid), await online(ejabberd, e_jid)
    clients = [old, x, e]
    try:
        await mutual(old, old_jid, x, x_jid)
        await mutual(old, old_jid, e, e_jid)
        await set_item(old, x_jid, "Xavi", ["Friends"])
        await set_item(old, e_jid, "Eva", ["Work"])
        await set_vcard(old, "Oscar Old")
        await old.close()

        code, out, err = await run_migrate(endpoints(xferd_ej, ejabberd), old_jid, new_jid,
                                           tmp_path, "--wait", WAIT)
        assert code == 0, (out, err)
        assert tool_report(out) == {x_jid: "auto-updated",
                                    e_jid: "waiting for manual approval"}, (out, err)
        assert "vCard: copied" in err, err
        # ejabberd 23.01 keeps no pre-approvals (RFC 6121 §3.4 is optional; its
        # mod_roster has them from 26.03 on): X's request, sent back by xferd's
        # auto-moved, reached the tool, which approved it
        assert f"approved {x_jid}'s request" in err, err

        # xferd verified its own user's statement (the old account is local);
        # X shares presence with the new account and sees it
        await wait_for_item(x, new_jid, "both")
        assert old_jid not in await x.fetch_roster()       # old_contact = "remove"
        # the ejabberd contact, on the new account's own server: asked, <moved/> intact
        request = await e.next_presence(type="subscribe", sender=new_jid, timeout=S2S_TIMEOUT)
        assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid

        # the new ejabberd account: the items with names and groups, the vCard
        new = await online(ejabberd, new_jid, "check")
        clients.append(new)
        items = await new.fetch_roster()
        assert set(items) == {x_jid, e_jid}
        assert (items[x_jid]["name"], items[x_jid]["groups"]) == ("Xavi", ["Friends"])
        assert (items[e_jid]["name"], items[e_jid]["groups"]) == ("Eva", ["Work"])
        assert items[x_jid]["subscription"] == "both", items
        assert (items[e_jid]["subscription"], items[e_jid].get("ask")) == ("none", "subscribe")
        assert await vcard_name(new) == "Oscar Old"
        # presence flows from the xferd contact to the new ejabberd account
        x.send_presence(pstatus="xavi here")
        while (await new.next_presence(type=None, sender=x_jid,
                                       timeout=S2S_TIMEOUT))["status"] != "xavi here":
            pass
        # E approves: presence flows from E to the new account, on ejabberd alone
        e.send_presence(pto=new_jid, ptype="subscribed")
        await wait_for_item(new, e_jid, "to")
        e.send_presence(pstatus="eva here")
        while (await new.next_presence(type=None, sender=e_jid,
                                       timeout=S2S_TIMEOUT))["status"] != "eva here":
            pass
    finally:
        for client in clients:
            await client.close()
    assert ejabberd.errors() == []
