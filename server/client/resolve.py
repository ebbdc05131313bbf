"""Where a client connects for a domain (RFC 6120 §3.2.1, XEP-0368 §3).

SRV ``_xmpps-client._tcp.D`` (TLS from the first byte) and
``_xmpp-client._tcp.D`` (STARTTLS) are merged into one record set and
ordered as RFC 2782 says (:func:`srv_order`): lower priority first; within
one priority a weighted random order, so each record comes first in
proportion to its weight and weight 0 almost never before a weighted one.
XEP-0368 §3 rule 1 mixes both services' priorities and weights that way —
neither kind is preferred as such. A lone target ``.`` means no service; no
record at all means D on 5222.

:func:`srv_order` is shared with ``s2s/resolve.py`` (the same rules for
``_xmpps-server``/``_xmpp-server``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver

log = logging.getLogger("xferd.client")

STARTTLS_PORT = 5222
DIRECT_TLS_PORT = 5223      # customary; XEP-0368 names none


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


async def client_targets(domain: str) -> list[tuple[str, int, bool]]:
    """``(host, port, direct_tls)`` to try in order; [] if the domain offers no service."""
    try:
        resolver = dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return [(domain, STARTTLS_PORT, False)]
    resolver.lifetime = 5.0
    record_sets = []
    for service, direct in (("_xmpps-client._tcp.", True), ("_xmpp-client._tcp.", False)):
        try:
            answers = await resolver.resolve(service + domain, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.Timeout):
            continue
        record_sets.append((answers, direct))
    ordered = srv_order(record_sets)
    if not ordered:
        return [(domain, STARTTLS_PORT, False)]
    if len(ordered) == 1 and ordered[0][0] == "":
        log.info("%s says it offers no client service (SRV target '.')", domain)
        return []
    return [(host, port, direct) for host, port, direct in ordered if host]
