"""The load generator: many light XMPP clients in one asyncio loop.

Each client is a raw asyncio stream, xferd's sans-IO ``StreamParser`` and
``ScramClient``, and nothing else: no dispatcher, no plugin layer, so that what
is measured is the server. It speaks only standard XMPP (RFC 6120/6121,
XEP-0199), the same bytes to xferd and to Prosody:

    connect → <stream> → STARTTLS → <stream> → SASL SCRAM-SHA-1 → <stream>
    → bind → <presence/> → XEP-0199 ping (its answer ends the login: by then the
    server has processed the initial presence too)

Message latency is measured inside this one process: the sender writes
``time.perf_counter_ns()`` into the body and the receiving client, in the same
loop, subtracts it from the clock when the stanza is parsed.

The scenarios' own load (message exchange, roster fetch, idle hold) lives in
the scenario modules; this one only logs clients in.

Memory: asyncio's TLS transport (``asyncio.sslproto.SSLProtocol``, Python 3.11)
allocates and zero-fills a 256 KiB receive buffer per connection, i.e. 2.5 GB
for 10,000 idle sessions. The generator lowers that buffer to
``TLS_READ_BUFFER`` for its own connections (a TLS record carries at most
16 KiB, so nothing is lost but a little per-read overhead on bulk data).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import ssl
import time
from dataclasses import dataclass, field

from server.xmpp.sasl import ScramClient
from server.xmpp.stream import Element, StreamOpened, StreamParser, stream_header

STREAMS = "http://etherx.jabber.org/streams"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
CLIENT = "jabber:client"
MESSAGE_TAG = f"{{{CLIENT}}}message"
BODY_TAG = f"{{{CLIENT}}}body"
MECHANISM = "SCRAM-SHA-1"
TLS_READ_BUFFER = 32 * 1024
#: the parser's stanza size bound (xferd's default is 256 KiB, for what clients send);
#: a 5,000-item roster answer is larger than that
MAX_STANZA = 16 * 1024 * 1024

asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER     # this process only


class LoginError(Exception):
    pass


def client_context(cafile) -> ssl.SSLContext:
    """TLS that trusts exactly the server's self-signed certificate."""
    return ssl.create_default_context(cafile=str(cafile))


class BenchClient:
    """One connection; ``login`` negotiates, then ``start_reading`` hands stanzas on."""

    def __init__(self, host: str, port: int, domain: str, user: str, password: str,
                 tls: ssl.SSLContext):
        self.host, self.port, self.domain = host, port, domain
        self.user, self.password, self.tls = user, password, tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser: StreamParser | None = None
        self.pending: list = []
        self.jid: str | None = None
        self.reading: asyncio.Task | None = None
        self.bytes_in = 0                    # plaintext bytes received (after TLS)
        self.reads = 0                       # reads that returned data, after login
        #: called as on_message(element, now_ns) for every <message/> once reading
        self.on_message = None

    # -- negotiation ----------------------------------------------------------

    async def _next(self):
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise LoginError(f"{self.user}: connection closed during login")
            self.bytes_in += len(data)
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def _element(self):
        event = await self._next()
        if not isinstance(event, Element):
            raise LoginError(f"{self.user}: expected an element, got {event!r}")
        return event.element

    async def _open_stream(self):
        self.parser = StreamParser(CLIENT, max_stanza_size=MAX_STANZA)
        self.pending.clear()
        self.writer.write(stream_header(to=self.domain).encode())
        if not isinstance(await self._next(), StreamOpened):
            raise LoginError(f"{self.user}: no stream header")
        features = await self._element()
        if features.tag == f"{{{STREAMS}}}error":
            conditions = [child.tag.rpartition("}")[2] for child in features]
            raise LoginError(f"{self.user}: stream error {' '.join(conditions)}")
        if features.tag != f"{{{STREAMS}}}features":
            raise LoginError(f"{self.user}: expected features, got {features.tag}")
        return features

    async def login(self, resource: str = "bench", *, presence: bool = True) -> None:
        """Negotiate a session; with *presence*, send initial presence and wait for a
        ping answer (by then the server has processed the presence too)."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        features = await self._open_stream()
        if features.find(f"{{{TLS}}}starttls") is None:
            raise LoginError("the server offers no STARTTLS")
        self.writer.write(f"<starttls xmlns='{TLS}'/>".encode())
        if (await self._element()).tag != f"{{{TLS}}}proceed":
            raise LoginError("STARTTLS refused")
        await self.writer.start_tls(self.tls, server_hostname=self.domain)
        features = await self._open_stream()

        offered = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        if MECHANISM not in offered:
            raise LoginError(f"{MECHANISM} not offered ({offered})")
        scram = ScramClient(MECHANISM, self.user, self.password)
        self.writer.write(f"<auth xmlns='{SASL}' mechanism='{MECHANISM}'>"
                          f"{_b64(scram.first())}</auth>".encode())
        answered = verified = False
        while True:
            el = await self._element()
            name = el.tag.rpartition("}")[2]
            if name == "challenge" and not answered:
                answered = True
                response = scram.final(base64.b64decode(el.text or ""))
                self.writer.write(f"<response xmlns='{SASL}'>{_b64(response)}</response>"
                                  .encode())
            elif name == "challenge":               # additional data sent as a challenge
                scram.verify(base64.b64decode(el.text or ""))
                verified = True
                self.writer.write(f"<response xmlns='{SASL}'/>".encode())
            elif name == "success":
                if el.text and el.text != "=":
                    scram.verify(base64.b64decode(el.text))
                    verified = True
                if not verified:
                    raise LoginError("the server did not prove it knows the password")
                break
            else:
                raise LoginError(f"{self.user}: SASL {name}")

        features = await self._open_stream()
        if features.find(f"{{{BIND}}}bind") is None:
            raise LoginError("no resource binding offered")
        self.writer.write(f"<iq type='set' id='b'><bind xmlns='{BIND}'><resource>{resource}"
                          f"</resource></bind></iq>".encode())
        answer = await self._element()
        self.jid = answer.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid")
        if answer.get("type") != "result" or not self.jid:
            raise LoginError(f"{self.user}: bind failed")
        if not presence:
            return
        self.writer.write(b"<presence/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        while True:                     # the server may send our own presence back first
            el = await self._element()
            if el.tag == f"{{{CLIENT}}}iq" and el.get("id") == "p":
                if el.get("type") != "result":
                    raise LoginError(f"{self.user}: ping answered {el.get('type')}")
                return

    # -- after login ----------------------------------------------------------

    async def request(self, xml: str, iq_id: str):
        """Send an IQ and return the answer with that id (before ``start_reading``)."""
        self.writer.write(xml.encode())
        while True:
            el = await self._element()
            if el.tag == f"{{{CLIENT}}}iq" and el.get("id") == iq_id:
                return el

    def start_reading(self) -> None:
        """From now on, hand every ``<message/>`` to ``self.on_message(element, now_ns)``."""
        if self.reading is not None:
            return

        def deliver(events, now):
            handler = self.on_message
            for event in events:
                if handler is not None and isinstance(event, Element) and \
                        event.element.tag == MESSAGE_TAG:
                    handler(event.element, now)

        async def run():
            deliver(self.pending, time.perf_counter_ns())
            self.pending.clear()
            feed, read = self.parser.feed, self.reader.read
            while data := await read(65536):
                self.bytes_in += len(data)
                self.reads += 1
                now = time.perf_counter_ns()            # before parsing, as received
                deliver(feed(data), now)
        self.reading = asyncio.get_running_loop().create_task(run())

    def hold_idle(self) -> None:
        """Keep only the connection: drop the parser and anything parsed, to stay cheap.

        What the server sends from now on waits in the stream's buffer (up to its
        limit, then in the kernel); an idle session gets next to nothing.
        """
        self.parser = None
        self.pending = []

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
        if self.writer is not None and not self.writer.is_closing():
            try:
                self.writer.write(b"</stream:stream>")
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (Exception, asyncio.CancelledError):
                pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") or "="


# -- many clients at once ---------------------------------------------------------------

@dataclass
class LoginResult:
    clients: list[BenchClient]
    latencies: list[float]          # seconds, one per successful login
    wall: float
    errors: list[str] = field(default_factory=list)


async def login_all(host: str, port: int, domain: str, users: list[str], password: str,
                    tls: ssl.SSLContext, *, concurrency: int = 20, presence: bool = True,
                    idle: bool = False, progress=None) -> LoginResult:
    """Log every user in, at most *concurrency* negotiations at a time.

    *idle*: keep each session with ``hold_idle`` (for the idle-connections count);
    *progress(done)* is called every 1000 logins.
    """
    gate = asyncio.Semaphore(concurrency)
    clients: list[BenchClient | None] = [None] * len(users)
    latencies: list[float] = []
    errors: list[str] = []

    async def one(i: int, user: str):
        async with gate:
            client = BenchClient(host, port, domain, user, password, tls)
            started = time.perf_counter()
            try:
                await asyncio.wait_for(client.login(presence=presence), 60)
            except Exception as exc:                    # noqa: BLE001 — counted, reported
                errors.append(f"{user}: {type(exc).__name__}: {exc}")
                await client.close()
                return
            latencies.append(time.perf_counter() - started)
            clients[i] = client
            if idle:
                client.hold_idle()
            if progress is not None and len(latencies) % 1000 == 0:
                progress(len(latencies))

    started = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    wall = time.perf_counter() - started
    return LoginResult([c for c in clients if c is not None], latencies, wall, errors)


