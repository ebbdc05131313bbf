"""RFC 6121 requirements a client can see, checked with real clients."""

import base64

import pytest

from tests.harness import SASL, RawClient
from tests.integration.test_subscriptions import REACH, pair, wait_for_views


@pytest.mark.parametrize("state", ["T", "T+PI", "B"])
async def test_unsubscribe_brings_unavailable_presence_from_the_contact(server, new_user, state):
    """RFC 6121 §3.3.3: when the contact's server receives the user's
    unsubscribe and the user's bare JID is in the contact's roster with
    subscription 'from' or 'both', it MUST deliver it, push the roster and
    "Generate an outbound presence stanza of type "unavailable" from each of
    the contact's available resources to the user." Without it the user's
    client keeps showing the contact online, although no presence of the
    contact will ever come again.

    U is in *state* towards C (U receives C's presence: To, To + Pending In,
    Both); C is available; U sends unsubscribe."""
    u_jid, c_jid, u, c = await pair(server, new_user)
    for who, what, reached in REACH[state]:
        sender, to = (u, c_jid) if who == "U" else (c, u_jid)
        sender.send_presence(pto=to, ptype=what)
        await wait_for_views(u, c, u_jid, c_jid, reached)
    await u.quiet(via=c)                                 # forget the set-up traffic

    u.send_presence(pto=c_jid, ptype="unsubscribe")
    gone = await u.next_presence(type="unavailable", sender=c_jid)
    assert str(gone["from"]) == f"{c_jid}/res"
    assert gone["to"].bare == u_jid
    await u.close()
    await c.close()


async def test_unsubscribe_without_a_subscription_sends_no_unavailable(server, new_user):
    """RFC 6121 §3.3.3 (and App. A.3.2): when the contact has no subscription
    from the user, the unsubscribe changes nothing and no presence follows."""
    u_jid, c_jid, u, c = await pair(server, new_user)
    await u.quiet(via=c)
    u.send_presence(pto=c_jid, ptype="unsubscribe")
    await wait_for_views(u, c, u_jid, c_jid, "N")
    got = [p for p in await u.quiet(via=c) if p["from"].bare == c_jid]
    assert not got, [str(p) for p in got]
    await u.close()
    await c.close()


async def test_pre_approval_support_is_advertised(server):
    """RFC 6121 §3.4: "If a server supports subscription pre-approvals, then
    it MUST advertise the following stream feature during stream
    negotiation. <sub xmlns='urn:xmpp:features:pre-approval'/>". xferd keeps
    pre-approvals (App. A.2.2 rows) but did not say so; clients that look
    for the feature before pre-approving (Smack, QXmpp, aioxmpp) never did."""
    raw = await RawClient.connect(server.c2s_port)
    await raw.secure(server.cert())
    token = base64.b64encode(b"\0alice\0alice-pass").decode()
    raw.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    await raw.expect("success")
    features = await raw.open_stream()
    assert features.find("{urn:xmpp:features:pre-approval}sub") is not None, \
        [child.tag for child in features]
    await raw.close()


async def test_presence_of_an_unknown_type_is_refused_not_passed_on(server, new_user):
    """RFC 6121 §4.7.1: "If included, the 'type' attribute MUST have one of
    the following values" (error, probe, subscribe, subscribed, unavailable,
    unsubscribe, unsubscribed). A presence with another type is answered
    with ``<bad-request/>`` (RFC 6120 §8.3.3.1), as Prosody answers it; until
    now it was silently dropped and the client never learnt why."""
    me = new_user("pt")
    raw = await RawClient.connect(server.c2s_port)
    await raw.login_plain(server.cert("localhost"), me.split("@")[0], "pw", resource="wire")
    raw.send("<presence/>")
    await raw.expect("presence")                        # our own presence, echoed
    raw.send("<presence type='available' id='p1'><status>online?</status></presence>")
    error = await raw.expect("presence")
    assert (error.get("type"), error.get("id")) == ("error", "p1")
    assert error.find("{jabber:client}error/"
                      "{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    await raw.close()
