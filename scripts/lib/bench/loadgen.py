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
"""

from __future__ import annotations

import asyncio
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

    # -- negotiation ----------------------------------------------------------

    async def _next(self):
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise LoginError(f"{self.user}: connection closed during login")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def _element(self):
        event = await self._next()
        if not isinstance(event, Element):
            raise LoginError(f"{self.user}: expected an element, got {event!r}")
        return event.element

    async def _open_stream(self):
        self.parser = StreamParser(CLIENT)
        self.pending.clear()
        self.writer.write(stream_header(to=self.domain).encode())
        if not isinstance(await self._next(), StreamOpened):
            raise LoginError(f"{self.user}: no stream header")
        features = await self._element()
        if features.tag != f"{{{STREAMS}}}features":
            raise LoginError(f"{self.user}: expected features, got {features.tag}")
        return features

    async def login(self, resource: str = "bench") -> None:
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
        self.writer.write(b"<presence/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        while True:                     # the server may send our own presence back first
            el = await self._element()
            if el.tag == f"{{{CLIENT}}}iq" and el.get("id") == "p":
                if el.get("type") != "result":
                    raise LoginError(f"{self.user}: ping answered {el.get('type')}")
                return

    # -- after login ----------------------------------------------------------

    def start_reading(self, on_message) -> None:
        """Feed every received ``<message/>`` to *on_message(element, now_ns)*."""
        async def run():
            for event in self.pending:
                if isinstance(event, Element) and event.element.tag == MESSAGE_TAG:
                    on_message(event.element, time.perf_counter_ns())
            self.pending.clear()
            feed, read = self.parser.feed, self.reader.read
            while data := await read(65536):
                now = time.perf_counter_ns()
                for event in feed(data):
                    if isinstance(event, Element) and event.element.tag == MESSAGE_TAG:
                        on_message(event.element, now)
        self.reading = asyncio.get_running_loop().create_task(run())

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


# -- scenarios -------------------------------------------------------------------------

@dataclass
class LoginResult:
    clients: list[BenchClient]
    latencies: list[float]          # seconds, one per successful login
    wall: float
    errors: list[str] = field(default_factory=list)


async def login_all(host: str, port: int, domain: str, users: list[str], password: str,
                    tls: ssl.SSLContext, *, concurrency: int = 20) -> LoginResult:
    """Log every user in, at most *concurrency* negotiations at a time."""
    gate = asyncio.Semaphore(concurrency)
    clients: list[BenchClient | None] = [None] * len(users)
    latencies: list[float] = []
    errors: list[str] = []

    async def one(i: int, user: str):
        async with gate:
            client = BenchClient(host, port, domain, user, password, tls)
            started = time.perf_counter()
            try:
                await asyncio.wait_for(client.login(), 30)
            except Exception as exc:                    # noqa: BLE001 — counted, reported
                errors.append(f"{user}: {type(exc).__name__}: {exc}")
                await client.close()
                return
            latencies.append(time.perf_counter() - started)
            clients[i] = client

    started = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    wall = time.perf_counter() - started
    return LoginResult([c for c in clients if c is not None], latencies, wall, errors)


@dataclass
class MessageResult:
    sent: int
    delivered: int
    latencies_ns: list[int]
    wall: float                     # first send to last delivery (or timeout)
    timed_out: bool


async def exchange(clients: list[BenchClient], per_sender: int, *, window: int = 10,
                   timeout: float = 60) -> MessageResult:
    """Client i sends *per_sender* messages to client i+1's full JID, *window* in flight.

    Closed loop: a sender's next message leaves only when one of its earlier ones
    has been delivered, so the offered load follows what the server can carry.
    """
    n = len(clients)
    total = n * per_sender
    windows = [asyncio.Semaphore(window) for _ in range(n)]
    latencies: list[int] = []
    done = asyncio.get_running_loop().create_future()
    sent = 0

    def received(element, now_ns: int) -> None:
        body = element.findtext(BODY_TAG)
        if not body:
            return
        sender, _, stamp = body.partition(" ")
        latencies.append(now_ns - int(stamp))
        windows[int(sender)].release()
        if len(latencies) == total and not done.done():
            done.set_result(None)

    for client in clients:
        client.start_reading(received)

    async def sender(i: int):
        nonlocal sent
        to = clients[(i + 1) % n].jid
        writer, gate = clients[i].writer, windows[i]
        for k in range(per_sender):
            await gate.acquire()
            writer.write(f"<message to='{to}' type='chat' id='m{k}'><body>{i} "
                         f"{time.perf_counter_ns()}</body></message>".encode())
            sent += 1
            if k % window == window - 1:
                await writer.drain()

    started = time.perf_counter()
    senders = [asyncio.create_task(sender(i)) for i in range(n)]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except asyncio.TimeoutError:
        timed_out = True
    wall = time.perf_counter() - started
    for task in senders:
        task.cancel()
    return MessageResult(sent, len(latencies), latencies, wall, timed_out)
