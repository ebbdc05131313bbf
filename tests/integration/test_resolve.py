"""s2s/resolve.py against a real DNS server on loopback (tests/prosody.py's
responder): RFC 6120 §3.2 SRV order, XEP-0368 direct TLS records, the
'.' target, the fallback to port 5269, and static routes winning.

The order within one priority is RFC 2782's weighted *random* choice
(dnspython's processing_order, drawing from Python's ``random``), so the
tests assert what RFC 2782 guarantees — priority order, every target
present — plus a seeded statistical check that the heavier record comes
first more often. tests/unit/test_srv_order.py checks the rules in detail."""

import random

import pytest

from s2s.resolve import Resolver, Target
from server.config import RouteConfig, S2SConfig
from tests.prosody import DNSResponder


@pytest.fixture(scope="module")
def dns():
    responder = DNSResponder().start()
    responder.add_a("xmpp1.srv.test", "127.0.0.11")
    responder.add_a("xmpp2.srv.test", "127.0.0.12")
    responder.add_a("tls.srv.test", "127.0.0.13")
    responder.add_srv("srv.test", 5270, "xmpp2.srv.test", priority=20, weight=0)
    responder.add_srv("srv.test", 5269, "xmpp1.srv.test", priority=10, weight=5)
    responder.add_srv("srv.test", 5223, "tls.srv.test", service="_xmpps-server._tcp",
                      priority=10, weight=50)
    responder.add_srv("none.test", 0, ".")
    responder.add_a("plain.test", "127.0.0.14")
    yield responder
    responder.stop()


def resolver(dns, **routes) -> Resolver:
    return Resolver(S2SConfig(nameserver=dns.address, routes=routes))


async def test_srv_records_in_priority_order_xmpps_and_xmpp_mixed(dns):
    """RFC 2782: priority 10 before 20; XEP-0368 §3: the direct-TLS record
    and the STARTTLS one share priority 10 and are ordered together, by
    weight at random — so either may come first, but both come before 20."""
    targets = await resolver(dns).targets("srv.test")
    assert len(targets) == 3
    assert set(targets[:2]) == {Target("127.0.0.13", 5223, True),      # prio 10, weight 50
                                Target("127.0.0.11", 5269, False)}     # prio 10, weight 5
    assert targets[2] == Target("127.0.0.12", 5270, False)             # prio 20


async def test_heavier_weight_comes_first_more_often(dns):
    """RFC 2782: within a priority, a record is picked first with probability
    weight/total — here 50/55 for the direct-TLS record. Seeded, so the
    count is the same on every run; the bound holds for any seed with
    overwhelming probability (expected 36 of 40, binomial sd ≈ 1.8)."""
    state = random.getstate()
    random.seed(2782)
    try:
        r = resolver(dns)
        firsts = [(await r.targets("srv.test"))[0] for _ in range(40)]
    finally:
        random.setstate(state)
    heavy = firsts.count(Target("127.0.0.13", 5223, True))
    light = firsts.count(Target("127.0.0.11", 5269, False))
    assert heavy + light == 40 and heavy >= 28


async def test_dot_target_means_no_service(dns):
    assert await resolver(dns).targets("none.test") == []


async def test_no_srv_falls_back_to_the_domain_on_5269(dns):
    assert await resolver(dns).targets("plain.test") == [Target("127.0.0.14", 5269, False)]


async def test_unknown_domain_has_no_targets(dns):
    assert await resolver(dns).targets("nowhere.test") == []


async def test_static_route_wins_over_dns(dns):
    r = resolver(dns, **{"srv.test": RouteConfig(host="127.0.0.2", port=7000, tls="direct")})
    assert await r.targets("srv.test") == [Target("127.0.0.2", 7000, True)]
