"""The interop harness itself: our DNS responder, and Prosody started with our config.

These run without federation in xferd: they prove that Prosody listens only
where we told it, accepts our users over STARTTLS, and finds ``*.test``
domains through the responder (unbound forwarder + ``local-zone "test.
transparent"``), so a failure in the federation tests is not the harness.
"""

import asyncio
import re

import pytest
# the fixture is called ``dns``: dnspython goes by other names here
from dns import message as dns_message, query as dns_query, rcode as dns_rcode
from dns import resolver as dns_resolver

from tests.harness import Client, login

pytestmark = pytest.mark.interop


def resolver_for(responder) -> dns_resolver.Resolver:
    resolver = dns_resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = responder.port
    resolver.lifetime = 3
    return resolver


def test_dns_answers_srv_and_a(dns):
    dns.add_a("srv-check.test", "127.0.0.7")
    dns.add_srv("srv-check.test", 15269, target="srv-check.test", priority=5, weight=10)
    dns.add_srv("literal-check.test", 15270, target="127.0.0.1")
    resolver = resolver_for(dns)

    (srv,) = resolver.resolve("_xmpp-server._tcp.srv-check.test", "SRV")
    assert (srv.priority, srv.weight, srv.port, srv.target.to_text()) == \
        (5, 10, 15269, "srv-check.test.")
    (a,) = resolver.resolve("srv-check.test", "A")
    assert a.address == "127.0.0.7"
    (literal,) = resolver.resolve("_xmpp-server._tcp.literal-check.test", "SRV")
    assert literal.target.to_text() == "127.0.0.1."

    # a name we hold, a type we lack: NOERROR without answers; an unknown name: NXDOMAIN
    with pytest.raises(dns_resolver.NoAnswer):
        resolver.resolve("srv-check.test", "AAAA")
    with pytest.raises(dns_resolver.NXDOMAIN):
        resolver.resolve("_xmpp-server._tcp.nowhere.test", "SRV")
    # names are case-insensitive, and TCP answers like UDP
    query = dns_message.make_query("_XMPP-Server._tcp.SRV-check.test", "SRV")
    answer = dns_query.tcp(query, "127.0.0.1", port=dns.port, timeout=3)
    assert answer.rcode() == dns_rcode.NOERROR
    assert answer.answer[0][0].port == 15269


def test_prosody_listens_only_on_loopback_and_logs_no_errors(prosody):
    assert prosody.alive()
    log = prosody.log()
    activated = re.findall(r"Activated service '(\S+)' on (.+)", log)
    assert ("c2s", f"[127.0.0.1]:{prosody.c2s_port}") in activated
    assert ("s2s", f"[127.0.0.1]:{prosody.s2s_port}") in activated
    for service, where in activated:
        assert where == "no ports" or where.startswith("[127.0.0.1]:"), (service, where)
    assert prosody.errors() == []
    # the unbound option reached libunbound without complaint
    assert not [line for line in log.splitlines()
                if "unbound" in line.split("\t")[0] and "\tdebug\t" not in line]


async def test_client_logs_in_over_starttls_and_pings(prosody, prosody_user):
    bob = prosody_user("bob")
    client = await login(prosody, f"{bob}/harness", "pw")
    try:
        assert client.boundjid.bare == bob
        await client.ping_server()
        assert await client.fetch_roster() == {}
    finally:
        await client.close()


async def test_wrong_password_is_refused(prosody, prosody_user):
    bob = prosody_user("bob")
    client = await login(prosody, f"{bob}/harness", "not-the-password", expect="failed_auth")
    await client.close()


class ErrorRecorder(Client):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("message_error", self.errors.put_nowait)


@pytest.mark.parametrize("domain, target", [("probe-name.test", "probe-name.test"),
                                            ("probe-literal.test", "127.0.0.1")])
async def test_prosody_finds_test_domains_through_our_dns(prosody, dns, prosody_user,
                                                          domain, target):
    """Prosody asks the responder for the SRV record and dials the port it names
    (the SRV target a name with an A record, or an IP literal)."""
    headers: asyncio.Queue = asyncio.Queue()

    async def peer(reader, writer):
        data = b""
        while not re.search(rb"<stream:stream[^>]*>", data):
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
        headers.put_nowait(data.decode(errors="replace"))
        writer.close()

    listener = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    if target == domain:
        dns.add_a(domain)
    dns.add_srv(domain, port, target=target)
    bob = prosody_user("bob")
    client = await login(prosody, f"{bob}/harness", "pw", client_cls=ErrorRecorder)
    try:
        client.send_message(mto=f"someone@{domain}", mbody="hello probe")
        header = await asyncio.wait_for(headers.get(), 10)
        assert re.search(rf"""to=['"]{re.escape(domain)}['"]""", header), header
        assert re.search(r"""from=['"]prosody\.test['"]""", header), header
        assert (f"_xmpp-server._tcp.{domain}.", "SRV") in dns.queries
        # we hung up before any <stream:features/>: Prosody bounces the message
        error = await asyncio.wait_for(client.errors.get(), 30)
        assert error["error"]["condition"] in ("remote-server-not-found",
                                               "remote-server-timeout"), error
    finally:
        await client.close()
        listener.close()


async def test_prosody_bounces_unknown_domain(prosody, dns, prosody_user):
    """NXDOMAIN from our DNS reaches Prosody as such: remote-server-not-found."""
    bob = prosody_user("bob")
    client = await login(prosody, f"{bob}/harness", "pw", client_cls=ErrorRecorder)
    try:
        client.send_message(mto="nobody@nowhere-prosody.test", mbody="anyone?")
        error = await asyncio.wait_for(client.errors.get(), 30)
        assert error["error"]["condition"] == "remote-server-not-found", error
        assert ("_xmpp-server._tcp.nowhere-prosody.test.", "SRV") in dns.queries
    finally:
        await client.close()
