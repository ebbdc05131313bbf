"""Test harness: real xferd processes on loopback ports, real clients.

``XferdProcess`` runs ``python -m server serve`` in a temporary directory with
a generated config where every listener asks for port 0, waits for the ports
the server reports (``--ports-file``), and offers the CLI
(``adduser`` …) against the same config. ``login`` connects a slixmpp client;
``RawClient`` speaks bytes for the tests that must send what no well-behaved
client would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import slixmpp
from lxml import etree

REPO = Path(__file__).resolve().parent.parent
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"


_reserved: list[socket.socket] = []


def unused_port() -> int:
    """A loopback port where nothing listens and nothing will: the socket is
    bound (never listening) and kept for the whole test session, so connecting
    is refused and no other process can take the port meanwhile. For routes to
    servers that must be unreachable."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _reserved.append(sock)
    return sock.getsockname()[1]


def old_database(path, version: int, username: str):
    """A data file as an xferd of schema *version* left it (the first
    *version* migrations, each in its transaction as storage runs them) with
    the account *username*@localhost; the open ``sqlite3`` connection is
    returned for the caller to add rows, commit and close."""
    import sqlite3
    from storage.sqlite import MIGRATIONS
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    db.execute("INSERT INTO accounts (host, username, created_at) VALUES ('localhost', ?, 0)",
               (username,))
    return db


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict) -> None:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))


@dataclass
class XferdProcess:
    workdir: Path
    domains: tuple[str, ...] = ("localhost",)
    overrides: dict = field(default_factory=dict)
    trace: bool = False
    #: static s2s routes: domain → (host, port)
    routes: dict = field(default_factory=dict)

    def __post_init__(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        # every listener on port 0: the server reports what it got (--ports-file)
        self.c2s_port = self.direct_tls_port = self.s2s_port = None
        sections = {
            "server": {"data_dir": "data", "log_level": "debug"},
            # many clients from 127.0.0.1 (test_limits.py sets its own limits)
            "c2s": {"port": 0, "direct_tls_port": 0, "max_connections_per_ip": 1000},
            "s2s": {"port": 0, "connect_timeout": 5, "dialback_timeout": 10},
            # the tests log in many times from one address
            "auth": {"scram_iterations": 4096, "max_failures_per_ip": 1000},
        }
        for section, values in self.overrides.items():
            sections.setdefault(section, {}).update(values)
        for domain in self.domains:
            sections.setdefault(f'hosts."{domain}"', {}).setdefault("registration", True)
        self.sections = sections
        self.config = self.workdir / "xferd.toml"
        self.ports_file = self.workdir / "ports.json"
        for domain, (host, port) in self.routes.items():
            self.add_route(domain, host, port)
        write_config(self.config, sections)
        self.log_path = self.workdir / "xferd.log"
        self.proc: subprocess.Popen | None = None
        self._reloads = 0

    def add_route(self, domain: str, host: str, port: int) -> None:
        """A static s2s route to *domain*; on a running server it takes effect
        at once (config rewritten, SIGHUP, reload acknowledged)."""
        self.add_routes({domain: (host, port)})

    def add_routes(self, routes: dict) -> None:
        """Several routes (domain → (host, port)) with one reload."""
        for domain, (host, port) in routes.items():
            self.routes[domain] = (host, port)
            self.sections[f's2s.routes."{domain}"'] = {"host": host, "port": port}
        write_config(self.config, self.sections)
        if self.alive():
            self.reload()

    def reload(self, timeout: float = 10) -> None:
        """SIGHUP and wait until the server says it reloaded: the ports file's
        ``reloads`` count goes up (a file the server writes, polled — nothing
        on the wire shows a reload)."""
        self.proc.send_signal(signal.SIGHUP)
        self._reloads = self._await_status(lambda st: st["reloads"] > self._reloads,
                                           timeout, "reload")["reloads"]

    def _await_status(self, ready, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xferd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = json.loads(self.ports_file.read_text())
            except (FileNotFoundError, ValueError):
                status = None
            if status is not None and status["pid"] == self.proc.pid and ready(status):
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"xferd: no {what} reported in {self.ports_file}:\n"
                                   f"{self.log()[-3000:]}")
            # a poll with a deadline: a file the server writes gives no notification
            time.sleep(0.01)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def cert(self, domain: str = "localhost") -> Path:
        return self.data_dir / "certs" / f"{domain}.crt"

    def start(self, timeout: float = 20) -> "XferdProcess":
        args = [sys.executable, "-m", "server", "serve", "-c", str(self.config),
                "--ports-file", str(self.ports_file)]
        if self.trace:
            args.append("--trace")
        # a restart keeps its ports (pinned in the config by the first start),
        # like a real server, so that routes other servers have to it stay right
        self.ports_file.unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=_env())
        try:
            status = self._await_status(lambda st: True, timeout, "ports")
        except RuntimeError:
            self.stop()
            raise
        self._reloads = status["reloads"]
        ports = status["ports"]
        self.c2s_port = ports["c2s"]
        self.direct_tls_port = ports.get("c2s_direct_tls")
        self.s2s_port = ports.get("s2s")
        # the config now names the ports the server got: the CLI tools that
        # talk to the running server (import --outreach) read them there, and
        # a restart asks for them again
        self._pin_ports()
        return self

    def _pin_ports(self) -> None:
        self.sections["c2s"]["port"] = self.c2s_port
        if self.direct_tls_port:
            self.sections["c2s"]["direct_tls_port"] = self.direct_tls_port
        if self.s2s_port:
            self.sections["s2s"]["port"] = self.s2s_port
        write_config(self.config, self.sections)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        hang_up_orphans()
        stop_process(self.proc, sig, timeout)
        self._log.close()
        return self.proc.returncode

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        """Until *text* is in the server's log. Only for events the server
        shows nowhere on the wire (polls the file)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError(f"not in the log: {text!r}\n{self.log()[-3000:]}")
            # a poll with a deadline: the log file gives no notification
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``xferd COMMAND -c <this config> ARGS`` like a user would."""
        command, *rest = args
        return subprocess.run([sys.executable, "-m", "server", command, "-c", str(self.config),
                               *rest], cwd=self.workdir, input=input, capture_output=True,
                              text=True, timeout=60, env=_env())

    def adduser(self, jid: str, password: str) -> None:
        # --init: the fixtures create accounts before the server's first start
        done = self.cli("adduser", "--init", jid, input=password + "\n")
        assert done.returncode == 0, done.stderr


def federate(servers: dict, extra: dict | None = None) -> dict:
    """Start *servers* (domain → XferdProcess, not yet started) on ports of
    their own choosing, then give each a static route to every other one's
    s2s port, plus *extra* routes (its domain → {domain: (host, port)}), with
    one acknowledged reload each. Nothing is sent between them before that."""
    for proc in servers.values():
        proc.start()
    for name, proc in servers.items():
        routes = {domain: ("127.0.0.1", peer.s2s_port)
                  for domain, peer in servers.items() if peer is not proc}
        proc.add_routes({**routes, **(extra or {}).get(name, {})})
    return servers


@dataclass
class RouteTo:
    """Where a helper server of a test (a fake authority, a proxy) answers:
    *server*'s static route for *domain*. Until one listens, the route leads
    to an :func:`unused_port` (refused)."""
    server: XferdProcess
    domain: str

    def __post_init__(self):
        self.server.add_route(self.domain, "127.0.0.1", unused_port())


async def listen_for(route: RouteTo, handler) -> asyncio.base_events.Server:
    """Listen on a port of the system's choosing, then point *route* at it
    (a route reload on the running server, acknowledged)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.to_thread(route.server.add_route, route.domain, "127.0.0.1", port)
    return server


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10) -> None:
    """Ask a server to stop with *sig*; kill it if it has not within *timeout*."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: every slixmpp client ``login`` made (see hang_up_orphans)
_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def hang_up_orphans() -> None:
    """Hang up the clients a test left connected when its event loop is no
    longer running (the test is over). Nothing answers for them any more, so a
    server being stopped would wait its whole grace period for their streams
    to close; a TCP shutdown lets it see them go at once. Clients of a test
    still running (stop() called from inside it) are left alone."""
    for client in list(_clients):
        if client.gone.done() or client.loop.is_running():
            continue
        transport = getattr(client, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        _clients.discard(client)


def tool_report(stdout: str) -> dict[str, str]:
    """The per-contact lines of ``xferd migrate``/``transfer``'s report: jid → status."""
    lines = {}
    for line in stdout.splitlines():
        if line.startswith("  "):
            jid, _, status = line.strip().partition("  ")
            lines[jid] = status.strip()
    return lines


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XFERD_CONFIG", None)
    env["XFERD_CHECK_EVENTS"] = "1"         # every event's payload type is checked
    return env


# -- slixmpp ---------------------------------------------------------------------------

class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what happened to it."""

    def __init__(self, jid: str, password: str, *, mechanism: str | None = None):
        kwargs = {"sasl_mech": mechanism} if mechanism else {}
        super().__init__(jid, password, **kwargs)
        self.auth_failures: list[str] = []
        self.stream_errors: list[str] = []
        self.messages: asyncio.Queue = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        #: resolved when the connection ends (slixmpp's own future is replaced on reuse)
        self.gone = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", self._failed)
        self.add_event_handler("stream_error", self._stream_error)
        self.add_event_handler("disconnected", self._gone)
        self.add_event_handler("message", lambda msg: self.messages.put_nowait(msg))
        #: every presence stanza received, in order
        self.presences: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))
        #: every roster push received (RFC 6121 §2.1.6), in order
        self.roster_pushes: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("roster_update", lambda iq: self.roster_pushes.put_nowait(iq))
        # the tests decide every subscription answer themselves
        self.auto_authorize = None
        self.auto_subscribe = False
        self.register_plugin("xep_0199")

    def _started(self, _):
        if not self.started.done():
            self.started.set_result("session")

    def _failed(self, failure):
        self.auth_failures.append(failure["condition"])
        if not self.started.done():
            self.started.set_result("failed_auth")

    def _stream_error(self, error):
        self.stream_errors.append(error["condition"])

    def _gone(self, _):
        if not self.gone.done():
            self.gone.set_result(True)
        if not self.started.done():
            self.started.set_result("disconnected")

    async def ping_server(self, timeout: float = 5) -> float:
        return await self.plugin["xep_0199"].ping(self.boundjid.domain, timeout=timeout)

    async def fetch_roster(self) -> dict[str, dict]:
        """The roster as the server sends it: jid → attributes and groups."""
        iq = self.Iq(stype="get")
        iq.enable("roster")
        answer = await iq.send(timeout=10)
        query = answer.xml.find("{jabber:iq:roster}query")
        return {item.get("jid"): {**item.attrib,
                                  "groups": [g.text for g in item.findall("{jabber:iq:roster}group")]}
                for item in query.findall("{jabber:iq:roster}item")}

    async def next_presence(self, timeout: float = 5, *, type: str | None = "any",
                            sender: str | None = None):
        """Wait for the next presence (optionally of *type* / from *sender*)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{self.boundjid}: no presence type={type} from={sender}")
            p = await asyncio.wait_for(self.presences.get(), left)
            got_type = p["type"] if p["type"] not in ("available", "") else None
            if (type == "any" or got_type == type) and \
                    (sender is None or str(p["from"]) == sender or p["from"].bare == sender):
                return p

    async def quiet(self, *, via: "Client | None" = None) -> list:
        """The presences received up to a round trip (see :func:`round_trip`;
        *via*: the client whose stanzas could still be on their way), taken
        off the queue."""
        await round_trip(self, via=via)
        got = []
        while not self.presences.empty():
            got.append(self.presences.get_nowait())
        return got

    async def roster_pushed(self, deadline: float) -> None:
        """Wait for the next roster push, until the loop time *deadline* (then
        return all the same: the caller checks its condition one last time).
        For loops that re-read the roster until it shows a change."""
        left = deadline - asyncio.get_running_loop().time()
        if left > 0:
            try:
                await asyncio.wait_for(self.roster_pushes.get(), left)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        if not self.gone.done():
            self.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self.gone), 5)
            except asyncio.TimeoutError:
                pass


async def round_trip(client: Client, *, via: Client | None = None, timeout: float = 10) -> None:
    """Return once everything already on its way to *client* has arrived.

    XMPP delivers stanzas in order along one path (RFC 6120 §10.1: a server
    handles a stream's stanzas in the order sent, and an s2s or c2s stream is
    ordered), so a stanza that travels the same path as the one we wait for
    (or want to be sure is *not* coming) is a marker: once it is in, the
    other would have been too.

    - Without *via*: an IQ ping to our own server, answered on our stream.
      The pong proves that whatever the server had already queued for this
      client has arrived — enough when the server itself sends the stanza in
      question as part of handling something it had already handled (a
      roster push, a reply to our own earlier stanza, an answer to our probe).
    - With *via*: *via* pings this client's full JID. The ping leaves after
      every stanza *via* sent before, is handled by *via*'s server after them,
      crosses the same s2s stream if *client* is elsewhere, and reaches
      *client* after whatever they made the servers send to it; the pong
      coming back to *via* proves *client* has read it. Use it when the
      stanza that must (not) arrive results from what another client did.

    It cannot prove anything about work a server does later on its own
    (a timer, a background task): such tests wait for that work's own sign.
    """
    if via is None:
        await client.ping_server(timeout)
    else:
        await via.plugin["xep_0199"].ping(client.boundjid.full, timeout=timeout)


async def nothing_more(client: Client, *, via: Client | None = None,
                       messages: bool = True, presences: bool = True) -> None:
    """Assert that no message / presence came to *client* up to a round trip
    (see :func:`round_trip` for what *via* proves)."""
    await round_trip(client, via=via)
    if messages:
        assert client.messages.empty(), client.messages.get_nowait()
    if presences:
        assert client.presences.empty(), client.presences.get_nowait()


async def ask(client, itype: str, payload: str, to: str | None = None):
    """Send an IQ of *itype* carrying *payload* (XML text).

    Returns (None, answer XML) on a result, (error condition, error XML) on an error.
    """
    iq = client.make_iq(ito=to, itype=itype)
    iq.xml.append(slixmpp.xmlstream.ET.fromstring(payload))
    try:
        answer = await iq.send(timeout=10)
    except slixmpp.exceptions.IqError as exc:
        return exc.iq["error"]["condition"], exc.iq.xml
    return None, answer.xml


async def login(server: XferdProcess, jid: str, password: str, *,
                mechanism: str | None = None, direct_tls: bool = False,
                expect: str = "session", timeout: float = 10,
                client_cls=Client) -> Client:
    """Connect a slixmpp client; assert it ends in *expect* (session, failed_auth …)."""
    client = client_cls(jid, password, mechanism=mechanism)
    _clients.add(client)
    client.ca_certs = server.cert(slixmpp.JID(jid).domain)
    client.enable_plaintext = False
    if direct_tls:
        client.enable_starttls = False
        client.connect("127.0.0.1", server.direct_tls_port)
    else:
        client.enable_direct_tls = False
        client.connect("127.0.0.1", server.c2s_port)
    outcome = await asyncio.wait_for(client.started, timeout)
    assert outcome == expect, (outcome, client.auth_failures, client.stream_errors)
    return client


# -- raw bytes ---------------------------------------------------------------------------

def header(to: str = "localhost", ns: str = "jabber:client") -> bytes:
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns}' xmlns:stream='{STREAMS}' "
            f"to='{to}' version='1.0'>").encode()


class RawClient:
    """A byte-level client. ``elements`` are the top-level children received."""

    def __init__(self):
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._parser = None
        self.received = b""
        self.elements: list = []
        self.root = None
        self.closed = False

    @classmethod
    async def connect(cls, port: int, *, tls_cert: Path | None = None) -> "RawClient":
        self = cls()
        ctx = _client_context(tls_cert) if tls_cert else None
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None)
        self._new_stream()
        return self

    def _new_stream(self):
        self._parser = etree.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.root = None

    def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def _read_some(self, timeout: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.received += data
        self._parser.feed(data)
        for event, el in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self.root = el
            else:
                self._depth -= 1
                if self._depth == 1:
                    self.elements.append(el)
        return True

    async def expect(self, localname: str, timeout: float = 10):
        """Wait for the next top-level element named *localname* and return it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, el in enumerate(self.elements):
                if etree.QName(el).localname == localname:
                    del self.elements[:i + 1]
                    return el
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self.closed or not await self._read_some(left):
                raise AssertionError(f"no <{localname}/>; received: {self.received[-2000:]!r}")

    async def stream_error(self, timeout: float = 10) -> str:
        """Wait for ``<stream:error/>`` and return its condition."""
        err = await self.expect("error", timeout)
        assert err.tag == f"{{{STREAMS}}}error", err.tag
        conditions = [etree.QName(c).localname for c in err
                      if etree.QName(c).namespace == STREAM_ERRORS and
                      etree.QName(c).localname != "text"]
        return conditions[0]

    async def wait_closed(self, timeout: float = 10) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.closed:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await self._read_some(left)
        return True

    async def open_stream(self, to: str = "localhost"):
        """Send a header and return the features element."""
        self._new_stream()
        self.send(header(to))
        return await self.expect("features")

    async def starttls(self, cert: Path) -> None:
        self.send(f"<starttls xmlns='{TLS}'/>")
        await self.expect("proceed")
        await self.writer.start_tls(_client_context(cert), server_hostname="localhost")
        self._new_stream()

    async def secure(self, cert: Path):
        """Header, STARTTLS, header again: returns the features offered for auth."""
        await self.open_stream()
        await self.starttls(cert)
        return await self.open_stream()

    async def login_plain(self, cert: Path, user: str, password: str, resource: str = "raw"):
        """STARTTLS, SASL PLAIN, bind: leaves a session ready for stanzas."""
        await self.secure(cert)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        await self.expect("success")
        await self.open_stream()
        self.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        await self.expect("iq")

    async def close(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (Exception, asyncio.CancelledError):
                pass


def _client_context(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx
