"""Inbound s2s streams: a remote server connects to us (RFC 6120, XEP-0220).

We are the *receiving* server for ``<db:result>`` (a peer claims a domain;
we ask that domain's authoritative server through our own outbound stream,
without blocking this one) and the *authoritative* server for
``<db:verify>`` (a peer checks a key one of our outbound streams sent).
A stream may authenticate several (remote, local) domain pairs
(piggybacking, XEP-0220 §2.4.1). Stanzas need ``from`` and ``to``
(``<improper-addressing/>``), a ``to`` we serve (``<host-unknown/>``) and a
``from`` domain authenticated on this stream for that ``to``
(``<invalid-from/>``): nothing from an unauthenticated peer reaches a user.

SASL EXTERNAL is not offered: peers authenticate with dialback, which every
XMPP server implements; certificate-based authentication may come later.

Limits: beyond ``s2s.max_connections_per_ip`` live inbound streams from one
address a new one gets ``<policy-violation/>`` before we parse it;
``s2s.negotiation_timeout`` counts from the connection (a peer trickling bytes
or silent is cut off with ``<connection-timeout/>`` all the same); stanza
rate per stream: ``s2s.stanza_rate`` (see ``server/io/net.py``).

Stanzas are handled in order per pair of accounts, not one at a time per
stream. One stream carries the traffic of every user of the peer domain, and
handled one by one, each stanza would wait for the storage writes of all
those before it (a migration sends thousands at once). Each (sender,
recipient) pair of bare JIDs gets a lane, drained by its own task, so a
pair's stanzas are handled and delivered in the order they came (RFC 6120
§10.1: a subscription request is stored before the message behind it is
delivered). Two pairs run side by side: what one pair's stanza changes —
the recipient's roster item, pending request or offline store for that
sender — is not what another pair's reads. At most ``MAX_IN_FLIGHT``
stanzas of a stream are in the lanes at once; beyond that we stop reading
from the peer, and TCP pushes back.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import secrets
from typing import TYPE_CHECKING

from server.io.net import StreamConnection
from server.xmpp.errors import StreamError
from server.xmpp.jid import JID, JIDError, nameprep
from server.xmpp.negotiation import TLS_NS, S2SPhase, classify_s2s, decide_s2s
from server.xmpp.stanza import E
from server.xmpp.stream import CLIENT_NS, DIALBACK_NS, OUR_VERSION, SERVER_NS, StreamOpened, \
    rehome, response_version, stream_header

from . import dialback

if TYPE_CHECKING:
    from .manager import S2S

log = logging.getLogger("xferd.s2s.in")
_numbers = itertools.count(1)

#: stanzas of one inbound stream being handled at once, across its lanes
MAX_IN_FLIGHT = 256


class InboundStream(StreamConnection):
    content_ns = SERVER_NS
    rehome_from = CLIENT_NS

    def __init__(self, s2s: "S2S", reader, writer):
        self.number = next(_numbers)
        peer = writer.get_extra_info("peername") or ("?", 0)
        config = s2s.server.config
        super().__init__(reader, writer, label=f"s2s-in#{self.number} {peer[0]}:{peer[1]}",
                         max_stanza_size=config.c2s.max_stanza_size,
                         max_depth=config.c2s.max_depth,
                         max_attributes=config.c2s.max_attributes,
                         max_elements=config.c2s.max_elements,
                         stanza_rate=config.s2s.stanza_rate, stanza_burst=config.s2s.stanza_burst)
        self.ip = str(peer[0])
        self.s2s = s2s
        self.secure = False
        self.phase: S2SPhase | None = None
        self.stream_id = ""
        self.local: str | None = None          # the domain named in the header's 'to'
        self.peer: str | None = None           # … and 'from', if given
        self._reply_version: str | None = "1.0"   # our header's (RFC 6120 §4.7.5)
        #: (remote domain, local domain) pairs authenticated on this stream
        self.authenticated: set[tuple[str, str]] = set()
        self._checks: set[asyncio.Task] = set()
        #: (sender, recipient) bare JIDs → stanzas waiting, the first one being handled
        self._lanes: dict[tuple[str, str], collections.deque] = {}
        self._drains: set[asyncio.Task] = set()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._failed = False

    def __repr__(self):
        return f"<s2s-in#{self.number} {self.peer or '?'}→{self.local or '?'}>"

    async def run(self) -> None:
        if not self.s2s.inbound_per_ip.open(self.ip):
            await self.refuse("policy-violation", "too many connections from your address")
            return
        self.s2s.inbound.add(self)
        # a deadline from the connection on, not an idle timer (slowloris)
        self._timeout = asyncio.get_running_loop().call_later(
            self.s2s.config.negotiation_timeout, self._negotiation_timeout)
        await super().run()

    def _negotiation_timeout(self) -> None:
        if not self.authenticated and not self.closing:
            self.stream_error("connection-timeout", "no domain authenticated in time")

    async def teardown(self) -> None:
        self._timeout.cancel()
        self.s2s.inbound_per_ip.close(self.ip)
        self.s2s.inbound.discard(self)
        for task in self._checks:
            task.cancel()
        if self.authenticated:
            log.info("%r: closed", self)

    # -- the stream ------------------------------------------------------------------------
    def send_header(self) -> None:
        self.stream_id = secrets.token_hex(16)
        self.send_raw(stream_header(content_ns=SERVER_NS, from_=self.local, to=self.peer,
                                    id=self.stream_id, version=self._reply_version,
                                    extra_ns={"db": DIALBACK_NS}))
        self.header_sent = True

    def on_header(self, opened: StreamOpened) -> None:
        to = (opened.to or "").lower()
        self.peer = opened.from_
        self._reply_version = response_version(opened.version)     # RFC 6120 §4.7.5
        if self.local is not None and to != self.local:
            raise StreamError("host-unknown", "the restarted stream names another host")
        self.local = to if to in self.s2s.server.hosts else None
        self.send_header()
        if self.local is None:
            raise StreamError("host-unknown", f"{opened.to!r} is not served here")
        if self._reply_version is None:
            raise StreamError("unsupported-version", "XMPP %d.%d is required" % OUR_VERSION)
        features = E("{http://etherx.jabber.org/streams}features")
        if not self.secure:
            starttls = E(f"{{{TLS_NS}}}starttls")
            if self.s2s.config.require_encryption:
                starttls.append(E(f"{{{TLS_NS}}}required"))
            features.append(starttls)
        if self.secure or not self.s2s.config.require_encryption:
            features.append(dialback.feature())
        self.phase = (S2SPhase.TLS if self.s2s.config.require_encryption and not self.secure
                      else S2SPhase.READY if self.authenticated else S2SPhase.AUTH)
        self.send(features)

    async def on_element(self, el) -> None:
        rehome(el, SERVER_NS, CLIENT_NS)
        rule = decide_s2s(self.phase, classify_s2s(el))
        self.phase = rule.then if not self.authenticated else S2SPhase.READY
        await getattr(self, f"on_{rule.action}")(el)

    async def on_starttls(self, el) -> None:
        await self.accept_starttls(self.s2s.server.tls.context)

    async def on_peer_stream_error(self, el) -> None:
        """The peer ended the stream with an error (RFC 6120 §4.9.1.1): close
        ours with ``</stream:stream>`` (§4.4), no error in answer."""
        log.info("%r: the peer ended the stream with %s", self,
                 [child.tag for child in el])
        self.close()

    # -- dialback: we are the receiving server ---------------------------------------------
    async def on_dialback_request(self, el) -> None:
        remote, local = _domain(el.get("from")), _domain(el.get("to"))
        if local is None or local not in self.s2s.server.hosts:
            self.send(dialback.result_answer(el.get("to") or "", el.get("from") or "",
                                             "error", "item-not-found"))
            return
        if remote is None or remote in self.s2s.server.hosts:
            raise StreamError("invalid-from", "cannot claim that domain")
        task = asyncio.create_task(self._check(remote, local, (el.text or "").strip()))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, remote: str, local: str, key: str) -> None:
        """Ask *remote*'s authoritative server whether *key* is right (§2.1.2)."""
        verdict = await self.s2s.verify(local=local, remote=remote,
                                        stream_id=self.stream_id, key=key)
        if self.closing:
            return
        if verdict == "valid":
            self.authenticated.add((remote, local))
            self.phase = S2SPhase.READY
            log.info("%r: %s authenticated by dialback", self, remote)
            self.send(dialback.result_answer(local, remote, "valid"))
        elif verdict == "invalid":
            log.warning("%r: dialback key for %s did not verify", self, remote)
            self.send(dialback.result_answer(local, remote, "invalid"))
            self.stream_error("not-authorized", f"the dialback key for {remote} is not valid")
        else:                                       # could not ask: error, not fatal (§2.5)
            self.send(dialback.result_answer(local, remote, "error", verdict))

    # -- dialback: we are the authoritative server ----------------------------------------------
    async def on_dialback_verify(self, el) -> None:
        receiving, ours = _domain(el.get("from")), _domain(el.get("to"))
        stream_id = el.get("id") or ""
        if ours is None or ours not in self.s2s.server.hosts or receiving is None:
            self.send(dialback.verify_answer(el.get("to") or "", el.get("from") or "",
                                             stream_id, "error", "item-not-found"))
            return
        valid = dialback.check(self.s2s.secret, receiving, ours, stream_id, el.text)
        self.send(dialback.verify_answer(ours, receiving, stream_id,
                                         "valid" if valid else "invalid"))

    # -- stanzas ---------------------------------------------------------------------------------
    async def on_stanza(self, el) -> None:
        sender, recipient = el.get("from"), el.get("to")
        if not sender or not recipient:
            raise StreamError("improper-addressing", "s2s stanzas need 'from' and 'to'")
        try:
            from_, to = JID.parse(sender), JID.parse(recipient)
        except JIDError:
            raise StreamError("improper-addressing", "malformed 'from' or 'to'") from None
        from_domain, to_domain = from_.domain, to.domain
        if to_domain not in self.s2s.server.hosts:
            raise StreamError("host-unknown", f"{recipient!r} is not served here")
        if (from_domain, to_domain) not in self.authenticated:
            raise StreamError("invalid-from", f"{sender!r} is not authenticated on this stream")
        key = (str(from_.bare), str(to.bare))
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(el)                     # after the ones before it, same pair
        else:
            self._lanes[key] = collections.deque((el,))
            task = asyncio.create_task(self._drain(key))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        self._in_flight += 1
        while self._in_flight >= MAX_IN_FLIGHT and not self.closing:
            self._room.clear()
            await self._room.wait()             # read no more until a lane moves on

    async def _drain(self, key: tuple[str, str]) -> None:
        """Route one pair's stanzas in the order they came. A stream that
        closes meanwhile does not drop them: they were received. One that
        failed (an internal error) handles nothing more, as before lanes."""
        lane = self._lanes[key]
        router = self.s2s.server.router
        try:
            while lane and not self._failed:
                try:
                    await router.route(lane[0], origin=self)
                except Exception:
                    log.exception("%r: internal error routing a stanza", self)
                    self._failed = True
                    self.stream_error("internal-server-error")
                finally:
                    lane.popleft()
                    self._in_flight -= 1
                    self._room.set()
        finally:
            self._in_flight -= len(lane)
            del self._lanes[key]


def _domain(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return nameprep(text)
    except JIDError:
        return None
