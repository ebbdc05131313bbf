"""A tiny authoritative DNS server on loopback for Prosody's s2s (migration scenario only).

Prosody has no static s2s routes and its resolver (libunbound) ignores
/etc/hosts, so to make it federate with the xferd processes of the migration
scenario it is pointed (``unbound.forward``) at this responder, which answers
``_xmpp-server._tcp.DOMAIN`` SRV records carrying each server's loopback port.
UDP only, in a thread of its own so a busy event loop never delays an answer.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DNSResponder:
    def __init__(self):
        self.records: dict[dns.name.Name, list] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def add_srv(self, domain: str, port: int) -> None:
        """``_xmpp-server._tcp.DOMAIN SRV 0 0 PORT 127.0.0.1.`` and an A record for DOMAIN."""
        self._add(f"_xmpp-server._tcp.{domain}", dns.rdatatype.SRV, f"0 0 {port} 127.0.0.1.")
        self._add(domain, dns.rdatatype.A, "127.0.0.1")

    def _add(self, name: str, rdtype, text: str) -> None:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        self.records.setdefault(dns.name.from_text(name.lower()), []).append(rdata)

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = dns.name.from_text(question.name.to_text().lower())
        if not any(known.is_subdomain(name) for known in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        rdatas = [r for r in self.records.get(name, []) if r.rdtype == question.rdtype]
        if rdatas:
            response.answer.append(dns.rrset.from_rdata_list(question.name, 0, rdatas))
        return response.to_wire()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(data), peer)
            except Exception:                            # noqa: BLE001 — a bad query: no answer
                continue

    def start(self) -> "DNSResponder":
        self.thread = threading.Thread(target=self._serve, name="bench-dns", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(2)
        self.sock.close()
