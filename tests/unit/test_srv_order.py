"""SRV connection order (server/xmpp/srv.py's srv_order, used by the
client and by s2s/resolve.py): RFC 2782 through dnspython's
``Rdataset.processing_order()``, with XEP-0368 §3 merging.

Within one priority the order is random (weighted), drawn from Python's
``random``; the statistical tests seed it and restore its state, and their
bounds are wide enough to hold for any seed with overwhelming probability.
"""

from __future__ import annotations

import random
from collections import Counter

import dns.rdata
import pytest

from server.xmpp.srv import srv_order


def srv(text: str):
    return dns.rdata.from_text("IN", "SRV", text)


@pytest.fixture
def seeded():
    state = random.getstate()
    random.seed(6120)
    yield
    random.setstate(state)


def firsts(record_sets, draws: int) -> Counter:
    return Counter(srv_order(record_sets)[0] for _ in range(draws))


def test_no_records_no_targets():
    assert srv_order([]) == []
    assert srv_order([([], True), ([], False)]) == []


def test_rfc2782_lower_priority_first_whatever_the_weight():
    records = [srv("20 100 5269 b.test."), srv("10 0 5270 a.test."), srv("30 0 5271 c.test.")]
    for _ in range(20):
        assert srv_order([(records, False)]) == [("a.test", 5270, False), ("b.test", 5269, False),
                                                 ("c.test", 5271, False)]


def test_xep0368_priority_beats_the_kind_of_service():
    """Rule 1: xmpps- and xmpp- records are one record set; a STARTTLS
    record with a lower priority comes before a direct-TLS one."""
    direct = [srv("20 10 5223 tls.test.")]
    starttls = [srv("10 10 5269 plain.test.")]
    for _ in range(20):
        assert srv_order([(direct, True), (starttls, False)]) == [
            ("plain.test", 5269, False), ("tls.test", 5223, True)]


def test_rfc2782_every_record_of_a_priority_is_present_once():
    records = [srv(f"10 {w} {5000 + w} t{w}.test.") for w in (0, 1, 5, 50)]
    for _ in range(50):
        order = srv_order([(records, False)])
        assert sorted(order) == sorted((f"t{w}.test", 5000 + w, False) for w in (0, 1, 5, 50))


def test_xep0368_weights_are_mixed_across_services(seeded):
    """Rule 1: 'all priorities and weights are mixed' — at one priority the
    direct-TLS record (weight 30) is first about 3 times in 4 against the
    STARTTLS one (weight 10), and the STARTTLS one is still first sometimes."""
    counts = firsts([([srv("5 30 5223 tls.test.")], True),
                     ([srv("5 10 5269 plain.test.")], False)], 2000)
    tls, plain = counts[("tls.test", 5223, True)], counts[("plain.test", 5269, False)]
    assert tls + plain == 2000
    assert 1350 <= tls <= 1650          # expected 1500, sd ≈ 19


def test_rfc2782_heavier_weight_is_first_in_proportion(seeded):
    records = [srv("10 60 1 a.test."), srv("10 30 2 b.test."), srv("10 10 3 c.test.")]
    counts = firsts([(records, False)], 3000)
    assert 1650 <= counts[("a.test", 1, False)] <= 1950     # expected 1800
    assert 750 <= counts[("b.test", 2, False)] <= 1050      # expected 900
    assert 180 <= counts[("c.test", 3, False)] <= 420       # expected 300


def test_rfc2782_weight_zero_has_a_very_small_chance_against_weighted(seeded):
    """'records with weight 0 should have a very small chance of being
    selected' while weighted records remain."""
    records = [srv("10 0 1 zero.test."), srv("10 100 2 heavy.test.")]
    counts = firsts([(records, False)], 2000)
    assert counts[("zero.test", 1, False)] <= 20            # dnspython: 0.1/100.1 ≈ 0.1 %


def test_rfc2782_all_weights_zero_are_in_random_order(seeded):
    """With only weight 0 at a priority every record is equally likely first."""
    records = [srv(f"10 0 {p} t{p}.test.") for p in (1, 2, 3)]
    counts = firsts([(records, False)], 3000)
    assert all(800 <= counts[(f"t{p}.test", p, False)] <= 1200 for p in (1, 2, 3))


def test_root_target_is_reported_as_empty():
    """RFC 2782: target '.' means the service is decidedly not available;
    callers see "" and stop (tested end to end in test_resolve.py)."""
    assert srv_order([([srv("0 0 0 .")], False)]) == [("", 0, False)]


def test_the_same_record_in_both_services_is_tried_both_ways():
    """A record listed under both services (an odd but possible set-up) is kept for each
    service, the earlier-listed service's flag first."""
    record = "10 10 5222 both.test."
    assert srv_order([([srv(record)], True), ([srv(record)], False)]) == [
        ("both.test", 5222, True), ("both.test", 5222, False)]
