"""Where to connect for a remote domain (RFC 6120 §3.2, XEP-0368 §3).

1. A static route from the config (``[s2s.routes]``) wins: test set-ups and
   local domains need no DNS at all.
2. Else SRV: ``_xmpps-server._tcp.D`` (TLS from the first byte) and
   ``_xmpp-server._tcp.D`` (STARTTLS), merged into one record set as
   XEP-0368 §3 rule 1 says (priorities and weights mixed, neither kind
   preferred) and put in RFC 2782 order by dnspython's
   ``processing_order()``: lower priority first, within one priority a
   weighted random order (``server.xmpp.srv.srv_order``, shared with
   the client). A single target of ``.`` means the domain offers no service.
3. No SRV record at all: the domain itself on port 5269.

Names are turned into addresses with the same resolver (dnspython), so a
configured ``nameserver`` answers for everything — how the tests make
``*.test`` domains resolvable without touching the machine.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from server.xmpp.srv import srv_order

log = logging.getLogger("xferd.s2s.resolve")

DEFAULT_PORT = 5269


@dataclass(frozen=True)
class Target:
    host: str           # an address, ready to connect to
    port: int
    direct_tls: bool    # XEP-0368: TLS at once, no STARTTLS
    plain: bool = False  # a route with tls = "none"


class Resolver:
    def __init__(self, s2s_config):
        self.config = s2s_config
        if s2s_config.nameserver:
            host, _, port = s2s_config.nameserver.rpartition(":")
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [host]
            self._dns.port = int(port)
        else:
            try:
                self._dns = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._dns = dns.asyncresolver.Resolver(configure=False)
                self._dns.nameservers = ["127.0.0.1"]
        self._dns.lifetime = 5.0

    async def targets(self, domain: str) -> list[Target]:
        """Addresses to try, in order; [] if the domain has no XMPP service."""
        route = self.config.routes.get(domain)
        if route is not None:
            return [Target(await self._address(route.host), route.port,
                           route.tls == "direct", route.tls == "none")]
        record_sets = []
        for service, direct in (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False)):
            record_sets.append((await self._query(service + domain, "SRV"), direct))
        ordered = srv_order(record_sets)
        if not ordered:
            names = [(domain, DEFAULT_PORT, False)]
        elif len(ordered) == 1 and ordered[0][0] == "":
            log.info("%s says it offers no XMPP service (SRV target '.')", domain)
            return []
        else:
            names = [(target, port, direct) for target, port, direct in ordered if target]
        targets = []
        for name, port, direct in names:
            try:
                targets.append(Target(await self._address(name), port, direct))
            except LookupError as exc:
                log.info("s2s: cannot resolve %s: %s", name, exc)
        return targets

    async def _query(self, name: str, rdtype: str):
        try:
            return list(await self._dns.resolve(name, rdtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.Timeout:
            log.info("s2s: DNS timeout for %s %s", name, rdtype)
            return []

    async def _address(self, name: str) -> str:
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name)
            return name
        except ValueError:
            pass
        if not self.config.nameserver:
            return name                      # the system resolver will do at connect time
        for rdtype in ("A", "AAAA"):
            answers = await self._query(name, rdtype)
            if answers:
                return answers[0].address
        raise LookupError(f"no address for {name}")
