"""``xferd migrate --history`` from a real ejabberd 23.01 with mod_mam.

Two ejabberd accounts chat (mod_mam, ``default: always``, archives every
message for both); the old one moves to xferd with ``xferd migrate
--history``, and a slixmpp MAM client on the new xferd account sees the same
conversation, in order, with the original timestamps, the old JID replaced by
the new one. ejabberd stamps in microseconds; xferd's MAM writes milliseconds
(server/xmpp/timestamps.py), so the times are compared as xferd writes them.
"""

import pytest

from server.xmpp import timestamps
from tests.ejabberd import EJABBERD_DOMAIN, EjabberdProcess, require_ejabberd
from tests.harness import login
from tests.interop.conftest import federating_xferd
from tests.interop.test_prosody_migrate import run_migrate
from tests.mam_client import MamClient, conversation, converse, replace_account
from tests.prosody import XFERD_DOMAIN

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

MESSAGES = 24
OLD, ELI = f"old@{EJABBERD_DOMAIN}", f"eli@{EJABBERD_DOMAIN}"


@pytest.fixture(scope="module")
def ejabberd_mam(dns, tmp_path_factory):
    require_ejabberd()
    proc = EjabberdProcess(tmp_path_factory.mktemp("ejabberd"), EJABBERD_DOMAIN,
                           dns_port=dns.port, modules={"mod_mam": {"default": "always"}})
    dns.add_a(EJABBERD_DOMAIN)
    dns.add_srv(EJABBERD_DOMAIN, proc.s2s_port, target="127.0.0.1")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def xferd(dns, ejabberd_mam, tmp_path_factory):
    proc = federating_xferd(dns, tmp_path_factory.mktemp("xferd"), srv_target="127.0.0.1")
    yield proc
    proc.stop()


async def test_ejabberd_history_moves_to_xferd(ejabberd_mam, xferd, tmp_path):
    history = await converse(ejabberd_mam, OLD, ELI, MESSAGES, lambda n: n % 2)
    assert [h[2] for h in history] == [f"{'old' if n % 2 else 'eli'} {n}"
                                       for n in range(MESSAGES)]

    new = f"new@{XFERD_DOMAIN}"
    xferd.adduser(new, "pw")
    servers = {XFERD_DOMAIN: (xferd.c2s_port, xferd.cert(XFERD_DOMAIN)),
               EJABBERD_DOMAIN: (ejabberd_mam.c2s_port, ejabberd_mam.cert())}
    code, out, err = await run_migrate(servers, OLD, new, tmp_path, "--history", "--wait", "0")
    assert code == 0, out + err
    assert f"history: {MESSAGES} messages copied ({MESSAGES} new here" in err, err
    client = await login(xferd, f"{new}/r", "pw", client_cls=MamClient)
    try:
        seen = await conversation(client)
    finally:
        await client.close()
    assert [s[:4] for s in seen] == [
        (replace_account(sender, OLD, new), replace_account(to, OLD, new), body,
         timestamps.parse(timestamps.format(stamp))) for sender, to, body, stamp, _ in history]
    assert ejabberd_mam.errors() == [], ejabberd_mam.errors()
