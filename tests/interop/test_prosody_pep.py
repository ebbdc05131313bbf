"""Where XEP-0163 leaves the choice open, xferd does what Prosody 0.12 does —
checked by running one scenario against both servers.

XEP-0163 §4.3.2 2: for a subscriber whose presence carries no XEP-0115
data, the service "MUST send at most one notification, addressed to the
bare JID … and MAY choose not to send any notification". Prosody's mod_pep
sends none (its notification table holds only resources whose caps it
learned), and neither do we (server/modules/pep.py). A contact whose
client announces ``NODE+notify`` gets the last item once the contact's
presence reaches the owner, and the next notification, on both servers.

Seen on the way, and not copied: when a local user's own caps become known,
Prosody 0.12 also enters that user's *bare* JID as a recipient in the PEP
services of its local contacts (mod_pep's "fiddle with other local users"),
so the contact's resources get each notification twice (bare and full JID)
and a sibling resource without caps gets it too. Hence one account per
client here.
"""

import pytest

from tests.harness import login, round_trip
from tests.integration.test_pep import (
    caps_login, collect_events, event_item, next_event, note, publish, share_presence)
from tests.prosody import PROSODY_DOMAIN, XFERD_DOMAIN

pytestmark = pytest.mark.interop

NODE = "http://jabber.org/protocol/mood"


@pytest.fixture(params=[PROSODY_DOMAIN, XFERD_DOMAIN])
def pep_server(request, prosody, xferd_fed, prosody_user, xferd_user):
    """(server, make_user) for each of the two servers in turn."""
    if request.param == PROSODY_DOMAIN:
        return prosody, prosody_user
    return xferd_fed, xferd_user


async def next_item(queue, item_id: str):
    """The next notification carrying *item_id* (Prosody may send one twice:
    see the module docstring)."""
    while True:
        node, got, _ = event_item(await next_event(queue, 20))
        if got == item_id:
            return node


async def test_a_contact_without_caps_gets_no_notification(pep_server):
    server, make_user = pep_server
    owner_jid, plain_jid, capsy_jid = (make_user("pepowner"), make_user("pepplain"),
                                       make_user("pepcapsy"))
    owner = await caps_login(server, f"{owner_jid}/desk", "pw")
    plain = await login(server, f"{plain_jid}/pc", "pw")        # no <c/> in its presence
    plain_events = collect_events(plain)
    capsy = await caps_login(server, f"{capsy_jid}/pc", "pw", [NODE])
    try:
        await publish(owner, NODE, note("calm"), "m1")
        for client in (owner, plain, capsy):
            client.send_presence()
        await share_presence(owner, plain)
        await share_presence(owner, capsy)
        assert await next_item(capsy.events, "m1") == NODE      # the last item, on both

        await publish(owner, NODE, note("cheerful"), "m2")
        assert await next_item(capsy.events, "m2") == NODE
        await round_trip(plain, via=owner)
        assert plain_events.empty(), plain_events.get_nowait()
    finally:
        for client in (owner, plain, capsy):
            await client.close()
