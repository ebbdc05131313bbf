"""Outbound s2s: one route per (local domain, remote domain) pair.

A :class:`Route` holds the stanzas for the remote domain while it connects
(resolve → TCP or direct TLS → STARTTLS → dialback), sends them in order once
the peer says ``valid``, and bounces them — never drops them — when the
domain cannot be reached: ``<remote-server-not-found/>`` when no connection
could be made or the peer refused us, ``<remote-server-timeout/>`` when it
took too long (RFC 6120 §8.3.3.16–17). An idle route closes its stream; the
next stanza opens a new one.

Bounds: at most ``s2s.max_queue`` stanzas wait per route; one more bounces at
once with ``<resource-constraint/>`` (type wait, §8.3.3.18), so a domain that
accepts TCP and never answers costs a bounded amount of memory until the
negotiation deadline bounces the rest. A route with no stream, no queue and
no question pending leaves the route table, which therefore grows with the
domains in use, not with every domain a user ever wrote to.

The same stream carries our ``<db:verify>`` questions when we, as receiving
server, check a key the remote domain sent us (XEP-0220 §2.1.2); those may
be asked as soon as TLS is up, before our own dialback has finished.

Piggybacking (several local domains on one stream) is not used outbound:
each pair gets its own stream, which every server accepts.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import ssl
from typing import TYPE_CHECKING

from server.io.net import StreamConnection
from server.xmpp.errors import STREAMS_NS, StanzaError
from server.xmpp.negotiation import TLS_NS
from server.xmpp.stanza import E, error_reply
from server.xmpp.stream import CLIENT_NS, DIALBACK_NS, SERVER_NS, StreamOpened, stream_header

from . import dialback

if TYPE_CHECKING:
    from .manager import S2S

log = logging.getLogger("xferd.s2s.out")
_numbers = itertools.count(1)


class OutboundStream(StreamConnection):
    """The protocol side of one outbound connection."""

    content_ns = SERVER_NS
    rehome_from = CLIENT_NS

    def __init__(self, route: "Route", reader, writer, *, secure: bool):
        self.number = next(_numbers)
        config = route.s2s.server.config
        super().__init__(reader, writer,
                         label=f"s2s-out#{self.number} {route.local}→{route.remote}",
                         max_stanza_size=config.c2s.max_stanza_size,
                         max_depth=config.c2s.max_depth,
                         max_attributes=config.c2s.max_attributes,
                         max_elements=config.c2s.max_elements,
                         stanza_rate=config.s2s.stanza_rate, stanza_burst=config.s2s.stanza_burst)
        self.route = route
        self.secure = secure
        self.stream_id: str | None = None
        self.negotiated = False

    def __repr__(self):
        return f"<s2s-out#{self.number} {self.route.local}→{self.route.remote}>"

    def send_header(self) -> None:
        self.send_raw(stream_header(content_ns=SERVER_NS, from_=self.route.local,
                                    to=self.route.remote, extra_ns={"db": DIALBACK_NS}))
        self.header_sent = True

    def on_header(self, opened: StreamOpened) -> None:
        self.stream_id = opened.id
        if not opened.id:
            self.route.fail("remote-server-not-found", "the peer's stream has no id")

    async def on_element(self, el) -> None:
        tag = el.tag
        if tag == f"{{{STREAMS_NS}}}features":
            await self._features(el)
        elif tag == f"{{{TLS_NS}}}proceed":
            if await self.upgrade_tls(self.route.s2s.client_tls,
                                      server_hostname=self.route.remote):
                self.secure = True
                self.restart()
                self.send_header()
        elif tag == f"{{{TLS_NS}}}failure":
            self.route.fail("remote-server-not-found", "the peer could not start TLS")
        elif tag == dialback.RESULT and el.get("type"):
            self.route.dialback_answered(el.get("type"), dialback.error_condition(el))
        elif tag == dialback.VERIFY and el.get("type"):
            self.route.verify_answered(el.get("id"), el.get("type"),
                                       dialback.error_condition(el))
        elif tag == f"{{{STREAMS_NS}}}error":
            condition = next((c.tag.partition("}")[2] for c in el
                              if c.tag.partition("}")[2] != "text"), "undefined-condition")
            log.info("%r: the peer ended the stream: %s", self, condition)
            self.route.fail("remote-server-not-found", f"stream error from the peer: {condition}")
        else:
            log.debug("%r: ignoring %s on an outbound stream", self, tag)

    async def _features(self, features) -> None:
        starttls = features.find(f"{{{TLS_NS}}}starttls")
        if not self.secure and starttls is not None:
            self.send(E(f"{{{TLS_NS}}}starttls"))
            return
        if not self.secure and self.route.s2s.config.require_encryption \
                and not self.route.plain:
            self.route.fail("remote-server-not-found", "the peer does not offer TLS")
            return
        self.negotiated = True
        self.route.stream_negotiated(self)

    async def teardown(self) -> None:
        self.route.stream_closed(self)


class Route:
    """Stanzas from one local domain to one remote domain, and their stream."""

    def __init__(self, s2s: "S2S", local: str, remote: str):
        self.s2s = s2s
        self.local = local
        self.remote = remote
        self.queue: collections.deque = collections.deque()
        self.stream: OutboundStream | None = None
        self.state = "idle"          # idle → connecting → authenticating → ready
        self.plain = False           # a configured route with tls = "none"
        self._connecting: asyncio.Task | None = None
        self._verifies: dict[str, asyncio.Future] = {}
        self._unsent_verifies: list[tuple[str, str]] = []
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self):
        return f"<route {self.local}→{self.remote} {self.state}>"

    # -- what the rest of the server asks --------------------------------------------------------
    def send(self, stanza) -> None:
        if self.state == "ready" and self.stream is not None and not self.stream.closing:
            self.stream.send(stanza)
            self._idle_timer()
            return
        if len(self.queue) >= self.s2s.config.max_queue:
            self._bounce(stanza, "resource-constraint", "too many stanzas waiting for "
                         f"{self.remote}")
            return
        self.queue.append(stanza)
        self._connect()

    async def verify(self, stream_id: str, key: str) -> str:
        """Ask the remote (authoritative) server about *key*: 'valid', 'invalid'
        or the condition that kept us from asking."""
        future = asyncio.get_running_loop().create_future()
        self._verifies[stream_id] = future
        if self.stream is not None and self.stream.negotiated:
            self.stream.send(dialback.verify_request(self.local, self.remote, stream_id, key))
        else:
            self._unsent_verifies.append((stream_id, key))
            self._connect()
        try:
            return await asyncio.wait_for(future, self.s2s.config.dialback_timeout)
        except asyncio.TimeoutError:
            return "remote-server-timeout"
        finally:
            self._verifies.pop(stream_id, None)
            self._forget_if_unused()

    # -- connecting --------------------------------------------------------------------------------
    def _connect(self) -> None:
        if self._connecting is None and self.state == "idle":
            self.state = "connecting"
            self._connecting = asyncio.create_task(self._open())

    async def _open(self) -> None:
        config = self.s2s.config
        try:
            targets = await self.s2s.resolver.targets(self.remote)
            if not targets:
                self.fail("remote-server-not-found", f"{self.remote} has no XMPP service")
                return
            timed_out = False
            for target in targets:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(
                        target.host, target.port,
                        ssl=self.s2s.client_tls if target.direct_tls else None,
                        server_hostname=self.remote if target.direct_tls else None,
                        limit=2 ** 20), config.connect_timeout)
                except asyncio.TimeoutError:
                    timed_out = True
                    continue
                except (OSError, ssl.SSLError) as exc:
                    log.info("s2s: %s:%s for %s: %s", target.host, target.port, self.remote, exc)
                    continue
                self.plain = target.plain
                self._start_stream(reader, writer, secure=target.direct_tls)
                return
            self.fail("remote-server-timeout" if timed_out else "remote-server-not-found",
                      f"cannot connect to {self.remote}")
        finally:
            self._connecting = None
            self._forget_if_unused()

    def _start_stream(self, reader, writer, *, secure: bool) -> None:
        stream = OutboundStream(self, reader, writer, secure=secure)
        self.stream = stream
        log.info("%r: connected to %s", stream, writer.get_extra_info("peername"))
        self.s2s.track(asyncio.create_task(stream.run()))
        stream.send_header()
        self._timer = asyncio.get_running_loop().call_later(
            self.s2s.config.connect_timeout + self.s2s.config.dialback_timeout,
            self._negotiation_timeout, stream)

    def _negotiation_timeout(self, stream) -> None:
        if self.stream is stream and self.state != "ready":
            self.fail("remote-server-timeout", f"{self.remote} did not authenticate us in time")

    # -- called by the stream -------------------------------------------------------------------------
    def stream_negotiated(self, stream: OutboundStream) -> None:
        """TLS is up (or not needed): ask our questions, then authenticate."""
        for stream_id, key in self._unsent_verifies:
            stream.send(dialback.verify_request(self.local, self.remote, stream_id, key))
        self._unsent_verifies.clear()
        self.state = "authenticating"
        stream.send(dialback.result_request(
            self.local, self.remote,
            dialback.key(self.s2s.secret, self.remote, self.local, stream.stream_id or "")))

    def dialback_answered(self, kind: str, condition: str | None) -> None:
        if kind == "valid":
            self.state = "ready"
            log.info("%r: authenticated by dialback; sending %d queued stanza(s)",
                     self.stream, len(self.queue))
            self._cancel_timer()
            while self.queue:
                self.stream.send(self.queue.popleft())
            self._idle_timer()
        else:
            self.fail(condition or "remote-server-not-found",
                      f"{self.remote} refused our dialback ({kind})")

    def verify_answered(self, stream_id: str | None, kind: str, condition: str | None) -> None:
        future = self._verifies.get(stream_id or "")
        if future is not None and not future.done():
            future.set_result(kind if kind in ("valid", "invalid")
                              else condition or "remote-server-not-found")

    def stream_closed(self, stream: OutboundStream) -> None:
        if stream is not self.stream:
            return
        self.stream = None
        if self.state != "ready" or self.queue:
            self.fail("remote-server-not-found", f"the stream to {self.remote} closed")
        self.state = "idle"
        self._cancel_timer()
        self._forget_if_unused()

    # -- failure --------------------------------------------------------------------------------------
    def fail(self, condition: str, text: str) -> None:
        """Give up on this attempt: bounce what waits, answer pending questions."""
        log.info("%r: %s (%s)", self, text, condition)
        self.state = "idle"
        self._cancel_timer()
        while self.queue:
            self._bounce(self.queue.popleft(), condition, text)
        for stream_id, future in list(self._verifies.items()):
            if not future.done():
                future.set_result(condition)
        self._unsent_verifies.clear()
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()
        self._forget_if_unused()

    def _forget_if_unused(self) -> None:
        if (self.state == "idle" and self.stream is None and self._connecting is None
                and not self.queue and not self._verifies and not self._unsent_verifies):
            self.s2s.forget(self)

    def _bounce(self, stanza, condition: str, text: str) -> None:
        if stanza.get("type") in ("error", "result"):
            return
        reply = error_reply(stanza, StanzaError(condition, text))
        self.s2s.track(asyncio.create_task(self.s2s.server.router.route(reply)))

    # -- timers -------------------------------------------------------------------------------------------
    def _idle_timer(self) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(
            self.s2s.config.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.stream is not None and not self.queue:
            log.info("%r: idle, closing", self.stream)
            self.state = "idle"
            stream, self.stream = self.stream, None
            stream.close()
            self._forget_if_unused()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
