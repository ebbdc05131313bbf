"""XEP-0283 with a real Prosody 0.12, both ways round (XEP-0283 §4):

(a) a user moves between two Prosody accounts — statement in Prosody's PEP,
    notice sent through Prosody — and the contact on xferd is updated by
    xferd's auto-moved after verifying the statement over s2s (one entry
    left; the old Prosody account loses both subscriptions);
(b) a user moves between two xferd accounts with a contact on Prosody, which
    has no auto-moved (mod_auto_moved is not in Debian's prosody-modules):
    the contact receives the request with <moved/> intact, approves, and
    presence flows.
"""

import pytest
from slixmpp.xmlstream import ET

from tests.harness import ask, login
from tests.interop.test_prosody_federation import S2S_TIMEOUT, FedClient, wait_for_item

pytestmark = pytest.mark.interop

MOVED = "urn:xmpp:moved:1"
PUBSUB = "http://jabber.org/protocol/pubsub"


async def online(proc, jid):
    client = await login(proc, f"{jid}/r", "pw", client_cls=FedClient)
    client.send_presence()
    await client.fetch_roster()
    return client


async def mutual(x, x_jid, y, y_jid):
    """x and y subscribe to each other: both end with 'both'."""
    for asker, asker_jid, other, other_jid in ((x, x_jid, y, y_jid), (y, y_jid, x, x_jid)):
        asker.send_presence(pto=other_jid, ptype="subscribe")
        await other.next_presence(type="subscribe", sender=asker_jid, timeout=S2S_TIMEOUT)
        other.send_presence(pto=asker_jid, ptype="subscribed")
        await asker.next_presence(type="subscribed", sender=other_jid, timeout=S2S_TIMEOUT)
    await wait_for_item(x, y_jid, "both")
    await wait_for_item(y, x_jid, "both")


async def publish_statement(old, new_jid):
    error, answer = await ask(old, "set", (
        f"<pubsub xmlns='{PUBSUB}'><publish node='{MOVED}'><item id='current'>"
        f"<moved xmlns='{MOVED}'><new-jid>{new_jid}</new-jid></moved></item></publish>"
        f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
        f"<field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
        f"</pubsub>"))
    assert error is None, ET.tostring(answer)


def notice(new, to, old_jid):
    presence = new.make_presence(pto=to, ptype="subscribe")
    presence.append(ET.fromstring(f"<moved xmlns='{MOVED}'><old-jid>{old_jid}</old-jid></moved>"))
    presence.send()


async def test_prosody_user_moves_and_the_xferd_contact_follows(xferd_fed, prosody,
                                                                xferd_user, prosody_user):
    old_jid, new_jid, r_jid = prosody_user("old"), prosody_user("new"), xferd_user("r")
    old, new = await online(prosody, old_jid), await online(prosody, new_jid)
    r = await online(xferd_fed, r_jid)
    try:
        await mutual(r, r_jid, old, old_jid)
        await publish_statement(old, new_jid)
        notice(new, r_jid, old_jid)
        # xferd asked Prosody's PEP, found the statement, and moved R's roster:
        # R shares presence with new and asks to see new's (R was 'both' with old)
        await new.next_presence(type="subscribed", sender=r_jid, timeout=S2S_TIMEOUT)
        await new.next_presence(type="subscribe", sender=r_jid, timeout=S2S_TIMEOUT)
        new.send_presence(pto=r_jid, ptype="subscribed")
        await wait_for_item(r, new_jid, "both")
        # one entry: the old item went as a roster remove takes it ([moved]
        # old_contact = "remove"), and Prosody's old account lost both
        # subscriptions (unsubscribed and unsubscribe, RFC 6121 §2.5.2)
        assert old_jid not in await r.fetch_roster()
        await wait_for_item(old, r_jid, "none")
        await wait_for_item(new, r_jid, "both")
        # a request from new would come over Prosody's stream before new's ping
        assert not [p for p in await r.quiet(via=new)
                    if p["type"] == "subscribe" and p["from"].bare == new_jid], \
            "R was not asked: the move was verified"
        assert "moved: " in xferd_fed.log() and "verified" in xferd_fed.log()
    finally:
        for client in (old, new, r):
            await client.close()


async def test_xferd_user_moves_and_the_prosody_contact_approves(xferd_fed, prosody,
                                                                 xferd_user, prosody_user):
    old_jid, new_jid, c_jid = xferd_user("old"), xferd_user("new"), prosody_user("c")
    old, new = await online(xferd_fed, old_jid), await online(xferd_fed, new_jid)
    c = await online(prosody, c_jid)
    try:
        await mutual(c, c_jid, old, old_jid)
        await publish_statement(old, new_jid)
        notice(new, c_jid, old_jid)
        # Prosody has no auto-moved: the contact sees the request, <moved/> intact
        request = await c.next_presence(type="subscribe", sender=new_jid, timeout=S2S_TIMEOUT)
        assert request.xml.findtext(f"{{{MOVED}}}moved/{{{MOVED}}}old-jid") == old_jid
        # and can check the statement on xferd before approving (it is open)
        error, answer = await ask(c, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{MOVED}'>"
                                            "<item id='current'/></items></pubsub>", to=old_jid)
        assert error is None
        assert answer.find(f".//{{{MOVED}}}new-jid").text == new_jid
        c.send_presence(pto=new_jid, ptype="subscribed")
        # after the approval, presence flows from the contact to the new account
        await new.next_presence(type="subscribed", sender=c_jid, timeout=S2S_TIMEOUT)
        await new.next_presence(type=None, sender=c_jid, timeout=S2S_TIMEOUT)   # sent on approval
        await wait_for_item(new, c_jid, "to")
        c.send_presence(pstatus="still here")
        while (seen := await new.next_presence(type=None, sender=c_jid,
                                               timeout=S2S_TIMEOUT))["status"] != "still here":
            pass                                     # repeats of the presence sent on approval
        assert str(seen["from"]) == f"{c_jid}/r"
    finally:
        for client in (old, new, c):
            await client.close()
