"""Interop harness: a real Prosody (Debian's 0.12 package) and the DNS it federates through.

Prosody has no static s2s routes, and its resolver (libunbound through
lua-unbound) ignores /etc/hosts and answers NXDOMAIN for every ``*.test`` name
unless told otherwise. So the interop tests run a tiny
authoritative DNS server on loopback, ``DNSResponder``, that serves the A and
``_xmpp-server._tcp`` SRV records of the test domains, and point both servers
at it: Prosody with ``unbound = { forward = "127.0.0.1@PORT", local-zone
"test. transparent" }``, xferd with ``[s2s] nameserver``. Every server listens
on 127.0.0.1 only; SRV records carry the ports.

``ProsodyProcess`` writes its own Lua config, data directory, log file and
self-signed certificate into a temporary directory, runs ``prosody -F
--config FILE`` in the foreground, and registers users with ``prosodyctl
--config FILE register USER HOST PASSWORD``. Nothing of the system's
/etc/prosody is read or written.
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

# one Prosody config (and Lua literal writer) for the tests and the benchmark (scripts/lib/bench)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "lib"))
from bench import prosody_server  # noqa: E402

from server.io.tls import generate_self_signed

lua = prosody_server.lua            # the interop tests take it from here

PROSODY = "prosody"
PROSODYCTL = "prosodyctl"

#: the interop tests' domains: ``.test`` (RFC 6761), so nothing real is ever asked
PROSODY_DOMAIN = "prosody.test"
XFERD_DOMAIN = "xferd.test"


def require_prosody() -> None:
    """Skip (or, under CI, fail) when Debian's prosody is not installed."""
    if shutil.which(PROSODY) and shutil.which(PROSODYCTL):
        return
    message = "prosody is not installed (apt-get install prosody prosody-modules lua-unbound)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# -- DNS ---------------------------------------------------------------------------------

class DNSResponder:
    """An authoritative DNS server on 127.0.0.1 (UDP and TCP, one free port).

    It knows only the records added with ``add_a`` and ``add_srv``: a name it
    holds (or one above a name it holds) gets NOERROR with whatever records of
    the asked type it has, any other name NXDOMAIN. TTLs are 0 so a resolver
    never answers from a stale cache when a test changes a record.
    """

    TTL = 0

    def __init__(self):
        self.records: dict[dns.name.Name, list[dns.rdata.Rdata]] = {}
        self.queries: list[tuple[str, str]] = []        # (name, type) as asked, for debugging
        self._lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []

    # records

    def add_a(self, name: str, address: str = "127.0.0.1") -> None:
        self._add(name, dns.rdatatype.A, address)

    def add_srv(self, domain: str, port: int, target: str = "127.0.0.1", *,
                service: str = "_xmpp-server._tcp", priority: int = 0,
                weight: int = 0) -> None:
        """``SERVICE.DOMAIN SRV priority weight port target``.

        *target* may be an IP literal (Prosody and dnspython take the four
        labels ``127.0.0.1.`` as an address) or a name with an A record.
        """
        self._add(f"{service}.{domain}", dns.rdatatype.SRV,
                  f"{priority} {weight} {port} {target.rstrip('.')}.")

    def _add(self, name: str, rdtype: dns.rdatatype.RdataType, text: str) -> None:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        with self._lock:
            self.records.setdefault(dns.name.from_text(name.lower()), []).append(rdata)

    # answering

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = dns.name.from_text(question.name.to_text().lower())
        self.queries.append((name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        with self._lock:
            known = [n for n in self.records if n.is_subdomain(name)]
            rdatas = [r for r in self.records.get(name, []) if r.rdtype == question.rdtype]
        if not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif rdatas:
            response.answer.append(dns.rrset.from_rdata_list(question.name, self.TTL, rdatas))
        return response.to_wire()

    # serving

    @property
    def port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def address(self) -> str:
        """``host:port``, the form xferd's ``s2s.nameserver`` takes."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> "DNSResponder":
        responder = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                sock.sendto(responder.answer(data), self.client_address)

        class TCPHandler(socketserver.StreamRequestHandler):
            def handle(self):
                while header := self.rfile.read(2):
                    (length,) = struct.unpack("!H", header)
                    reply = responder.answer(self.rfile.read(length))
                    self.wfile.write(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):     # the free UDP port must be free for TCP too
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), UDPHandler)
            try:
                tcp = socketserver.ThreadingTCPServer(("127.0.0.1", udp.server_address[1]),
                                                      TCPHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        for server in (udp, tcp):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name=f"dns-{server.socket_type}",
                             daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()


# -- Prosody -----------------------------------------------------------------------------

#: the benchmark's modules (see there) plus dialback: every interop Prosody federates

def free_port() -> int:
    """A port that was free a moment ago. Prosody cannot report the port it
    got for port 0, so its listeners still take their chances this way (xferd's
    do not: see XferdProcess); the window between release and Prosody's bind
    is short, and Prosody's start-up fails loudly if it is lost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MODULES = prosody_server.MODULES + ["dialback"]


class PeerFiles:
    """What a peer server under test wrote: its log (``log_path``) and what it
    printed (``workdir / OUTPUT``), "" until it wrote anything."""

    OUTPUT = ""
    log_path: Path
    workdir: Path

    def log(self) -> str:
        return _read(self.log_path)

    def output(self) -> str:
        return _read(self.workdir / self.OUTPUT)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class ProsodyProcess(PeerFiles):
    """A Prosody serving *domain* on free loopback ports, with its own config and data."""

    OUTPUT = "prosody.out"

    def __init__(self, workdir: Path, domain: str = PROSODY_DOMAIN, *,
                 dns_port: int | None = None, settings: dict | None = None,
                 sql: bool = False, modules: tuple[str, ...] = ()):
        self.workdir = workdir
        #: loaded besides MODULES, e.g. ("mam",): Prosody's mod_mam archiving every
        #: one-to-one message, kept for ever (archive_expires_after "never")
        self.modules = MODULES + [m for m in modules if m not in MODULES]
        self.domain = domain
        self.dns_port = dns_port
        self.c2s_port = free_port()
        self.s2s_port = free_port()
        self.config = workdir / "prosody.cfg.lua"
        self.log_path = workdir / "prosody.log"
        self.data_dir = workdir / "data"
        #: with *sql*: Prosody's SQL storage in this SQLite file (needs lua-dbi-sqlite3)
        self.database = self.data_dir / "prosody.sqlite" if sql else None
        self.settings = settings or {}
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o750, exist_ok=True)
        generate_self_signed(domain, self.cert(), self.key())
        self.config.write_text(self.config_text())

    def cert(self, domain: str | None = None) -> Path:
        """Prosody's certificate: a client trusts it as its CA (``login()`` asks this)."""
        return self.workdir / "certs" / f"{domain or self.domain}.crt"

    def key(self) -> Path:
        return self.workdir / "certs" / f"{self.domain}.key"

    def config_text(self) -> str:
        # debug: read beside xferd's trace when an interop test fails
        settings = prosody_server.settings(
            self.workdir, data_dir=self.data_dir, log_path=self.log_path, log_level="debug",
            c2s_port=self.c2s_port, s2s_port=self.s2s_port, modules=self.modules,
            s2s_timeout=20, dns_port=self.dns_port)
        if "mam" in self.modules:
            settings.update(archive_expires_after="never", default_archive_policy=True)
        if self.database is not None:
            settings.update(storage="sql", sql={"driver": "SQLite3", "database": self.database})
        settings.update(self.settings)
        return prosody_server.config_text(
            settings, {self.domain: {"certificate": self.cert(), "key": self.key()}},
            "Written by tests/prosody.py for one test run; not a deployment example.")

    def start(self, timeout: float = 20) -> "ProsodyProcess":
        self._log = open(self.workdir / self.OUTPUT, "ab")
        self.proc = subprocess.Popen([PROSODY, "-F", "--config", str(self.config)],
                                     cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self._env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.proc.returncode}:\n"
                                   f"{self.output()}\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.c2s_port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.s2s_port), timeout=0.5).close()
                return self
            except OSError:
                # a poll with a deadline: Prosody says nowhere when it listens
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prosody did not start listening:\n{self.output()}\n{self.log()}")

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        from tests.harness import stop_process
        stop_process(self.proc, timeout=timeout)
        self._log.close()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def prosodyctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PROSODYCTL, "--config", str(self.config), *args],
                              cwd=self.workdir, capture_output=True, text=True, timeout=60,
                              env=self._env())

    def adduser(self, jid: str, password: str) -> None:
        """Register *jid* (works whether or not Prosody is running: it writes the data files)."""
        user, _, host = jid.partition("@")
        done = self.prosodyctl("register", user, host, password)
        assert done.returncode == 0, f"prosodyctl register {jid}: {done.stdout}{done.stderr}"

    def errors(self) -> list[str]:
        """Log lines at level error (Prosody writes ``TIME SOURCE LEVEL MESSAGE``)."""
        return [line for line in self.log().splitlines() if "\terror\t" in line]

    def _env(self) -> dict:
        return prosody_server.environment(self.data_dir)
