"""XEP-0015 account transfer with a contact on a real ejabberd 23.01 (the XEP-0283 bridge).

old@xferd.test moves to new@xferd.test with ``xferd transfer``, run as a
user would run it (see tests/interop/test_prosody_transfer.py, whose steps
and checks this reuses). The old account has two contacts, each ``both``:
one on xferd.test, one on ejabberd.test.

- The notice C to xferd.test succeeds: xferd rewrites the contact's item.
- ejabberd has no ``jabber:iq:accountxfer``: it answers the notice with an
  error, so the roster hand-over D marks that contact ``notified='false'``
  and the new server bridges it with XEP-0283 — a ``subscribe`` with
  ``<moved><old-jid>OLD</old-jid></moved>``, which ejabberd delivers to its
  online user intact (offline, it would drop ``<moved/>``: see
  test_ejabberd_moved.py). The contact checks the statement, approves,
  presence flows; its own request to the new account is accepted at once
  (the new account pre-approved it, RFC 6121 §3.4).
"""

import pytest

from tests.harness import tool_report
from tests.interop.test_prosody_transfer import (NOT_IMPLEMENTED, befriend_both,
                                                check_contacts_after, online, run_transfer_tool)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]


async def test_transfer_tool_with_an_ejabberd_contact(xferd_ej, ejabberd, xferd_ej_user,
                                                      ejabberd_user, tmp_path):
    old_jid, new_jid = xferd_ej_user("old"), xferd_ej_user("new")
    old = await online(xferd_ej, old_jid)
    clients = [old]
    try:
        x_jid, e_jid, x, e = await befriend_both(xferd_ej, ejabberd, old, old_jid,
                                                 xferd_ej_user, ejabberd_user)
        clients += [x, e]
        await old.close()
        code, out, err = await run_transfer_tool(xferd_ej, tmp_path, "--old", old_jid,
                                                 "--new", new_jid, "--timeout", "120")
        assert code == 0, (out, err)                # a fallback is no failure
        from server.tools.outcomes import WAITING
        from server.tools.transfer import UPDATED
        report = tool_report(out)
        assert set(report) == {x_jid, e_jid}, (out, err)
        assert report[x_jid] == UPDATED, (out, err)
        # the ejabberd contact was bridged by XEP-0283 and, as ejabberd 23.01 updates no
        # roster by itself, its user still has to approve (done below)
        assert report[e_jid].startswith(WAITING), out
        assert f"{new_jid} has 2 roster item(s)" in out
        # what ejabberd answered to the notice, as the old server logged it
        log = xferd_ej.log()
        assert any(f"notice for {e_jid}: {condition}" in log for condition in NOT_IMPLEMENTED), \
            [line for line in log.splitlines() if "notice for" in line]
        assert f"notice for {x_jid}: ok" in log

        # both contacts, both servers' rosters, the approval and presence after it
        new = await check_contacts_after(xferd_ej, old_jid, new_jid, x_jid, e_jid, None, x, e)
        clients.append(new)
    finally:
        for client in clients:
            await client.close()
    assert ejabberd.errors() == []
