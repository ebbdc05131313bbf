"""Test harness: real xferd processes on free loopback ports, real clients.

``XferdProcess`` runs ``python -m server serve`` in a temporary directory with
a generated config, waits until it accepts connections, and offers the CLI
(``adduser`` …) against the same config. ``login`` connects a slixmpp client;
``RawClient`` speaks bytes for the tests that must send what no well-behaved
client would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import slixmpp
from lxml import etree

REPO = Path(__file__).resolve().parent.parent
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self.c2s_port = free_port()
        self.direct_tls_port = free_port()
        self.s2s_port = free_port()
        sections = {
            "server": {"data_dir": "data", "log_level": "debug"},
            # many clients from 127.0.0.1 (test_limits.py sets its own limits)
            "c2s": {"port": self.c2s_port, "direct_tls_port": self.direct_tls_port,
                    "max_connections_per_ip": 1000},
            "s2s": {"port": self.s2s_port, "connect_timeout": 5, "dialback_timeout": 10},
            # the tests log in many times from one address
            "auth": {"scram_iterations": 4096, "max_failures_per_ip": 1000},
        }
        for section, values in self.overrides.items():
            sections.setdefault(section, {}).update(values)
        for domain in self.domains:
            sections.setdefault(f'hosts."{domain}"', {}).setdefault("registration", True)
        self.sections = sections
        self.config = self.workdir / "xferd.toml"
        for domain, (host, port) in self.routes.items():
            self.add_route(domain, host, port)
        write_config(self.config, sections)
        self.log_path = self.workdir / "xferd.log"
        self.proc: subprocess.Popen | None = None

    def add_route(self, domain: str, host: str, port: int) -> None:
        """A static s2s route to *domain* (takes effect at the next start)."""
        self.routes[domain] = (host, port)
        self.sections[f's2s.routes."{domain}"'] = {"host": host, "port": port}
        write_config(self.config, self.sections)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def cert(self, domain: str = "localhost") -> Path:
        return self.data_dir / "certs" / f"{domain}.crt"

    def start(self, timeout: float = 20) -> "XferdProcess":
        args = [sys.executable, "-m", "server", "serve", "-c", str(self.config)]
        if self.trace:
            args.append("--trace")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xferd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.c2s_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"xferd did not start listening:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, sig, timeout)
        self._log.close()
        return self.proc.returncode

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
        done = self.cli("adduser", jid, input=password + "\n")
        assert done.returncode == 0, done.stderr


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10) -> None:
    """Ask a server to stop with *sig*; kill it if it has not within *timeout*."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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

    async def quiet(self, seconds: float = 0.3) -> list:
        """Presences that arrive within *seconds* (to check nothing unexpected came)."""
        await asyncio.sleep(seconds)
        got = []
        while not self.presences.empty():
            got.append(self.presences.get_nowait())
        return got

    async def close(self) -> None:
        if not self.gone.done():
            self.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self.gone), 5)
            except asyncio.TimeoutError:
                pass


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
