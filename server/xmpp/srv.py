"""SRV records in connection order (RFC 2782, XEP-0368 §3), shared by the
client resolver (``server/client/resolve.py``) and federation
(``s2s/resolve.py``). Pure: it orders records it is given; the lookups are
the resolvers' own."""

from __future__ import annotations

from collections.abc import Iterable

import dns.rdataclass
import dns.rdataset
import dns.rdatatype


def srv_order(record_sets: Iterable[tuple[Iterable, bool]]) -> list[tuple[str, int, bool]]:
    """``(target, port, direct_tls)`` in connection order for SRV records of
    several services, given as ``(records, direct_tls)`` pairs.

    All records go into one ``Rdataset`` whose ``processing_order()``
    (dnspython) is RFC 2782's: ascending priority, weighted random order
    within a priority (weight 0 counts as a tiny weight). That merges the
    direct-TLS and STARTTLS services as XEP-0368 §3 rule 1 asks. The same
    record in two services (one port speaking both) is tried with the
    earlier pair's flag first. Targets lose their final dot: the root
    target ``.`` becomes ``""``.
    """
    merged = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.SRV)
    flags: dict = {}
    for records, direct in record_sets:
        for rr in records:
            merged.add(rr)
            flags.setdefault(rr, []).append(direct)
    return [(str(rr.target).rstrip("."), rr.port, direct)
            for rr in merged.processing_order() for direct in flags[rr]]
