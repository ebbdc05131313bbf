"""Where a client connects for a domain (RFC 6120 §3.2.1, XEP-0368 §3).

SRV ``_xmpps-client._tcp.D`` (TLS from the first byte) and
``_xmpp-client._tcp.D`` (STARTTLS) merged by priority, heavier weight first
(the same deterministic simplification of RFC 2782 as ``s2s/resolve.py``);
a lone target ``.`` means no service; no record at all means D on 5222.
"""

from __future__ import annotations

import logging

import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger("xferd.client")

STARTTLS_PORT = 5222
DIRECT_TLS_PORT = 5223      # customary; XEP-0368 names none


async def client_targets(domain: str) -> list[tuple[str, int, bool]]:
    """``(host, port, direct_tls)`` to try in order; [] if the domain offers no service."""
    try:
        resolver = dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        return [(domain, STARTTLS_PORT, False)]
    resolver.lifetime = 5.0
    records = []
    for service, direct in (("_xmpps-client._tcp.", True), ("_xmpp-client._tcp.", False)):
        try:
            answers = await resolver.resolve(service + domain, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.Timeout):
            continue
        for rr in answers:
            records.append((rr.priority, -rr.weight, str(rr.target).rstrip("."), rr.port, direct))
    if not records:
        return [(domain, STARTTLS_PORT, False)]
    if len(records) == 1 and records[0][2] == "":
        log.info("%s says it offers no client service (SRV target '.')", domain)
        return []
    return [(host, port, direct) for _, _, host, port, direct in sorted(records) if host]
