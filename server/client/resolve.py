"""Where a client connects for a domain (RFC 6120 §3.2.1, XEP-0368 §3).

SRV ``_xmpps-client._tcp.D`` (TLS from the first byte) and
``_xmpp-client._tcp.D`` (STARTTLS) are merged into one record set and
ordered as RFC 2782 says (:func:`srv_order`): lower priority first; within
one priority a weighted random order, so each record comes first in
proportion to its weight and weight 0 almost never before a weighted one.
XEP-0368 §3 rule 1 mixes both services' priorities and weights that way —
neither kind is preferred as such. A lone target ``.`` means no service; no
record at all means D on 5222.

``srv_order`` (``server/xmpp/srv.py``) is shared with ``s2s/resolve.py``
(the same rules for ``_xmpps-server``/``_xmpp-server``).
"""

from __future__ import annotations

import logging

import dns.asyncresolver
import dns.exception
import dns.resolver

from ..xmpp.srv import srv_order

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
