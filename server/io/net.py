"""asyncio glue shared by every XML stream: c2s sessions and both s2s directions.

A :class:`StreamConnection` owns one socket: it reads bytes, feeds the
sans-IO parser, hands the events to its subclass (``on_header``,
``on_element``), writes serialised elements, upgrades to TLS, restarts the
stream, and ends it — politely, or with a stream error (RFC 6120 §4.9), header
first if none was sent yet. Subclasses say what the stream means.

Stanza rate limit (``c2s.stanza_rate``/``stanza_burst``, ``s2s.…``): every
top-level element takes a token from the connection's
:class:`~server.io.ratelimit.TokenBucket`; when the bucket is empty we stop
handling — and so stop reading — until the token is earned. This is
backpressure, as Prosody's mod_limits does it: the peer's bytes wait in
our bounded read buffer (the StreamReader ``limit``), then in the kernel, then
in the peer's own send buffer, so a flood costs us at most *rate* stanzas of
work per second and a bounded amount of memory, while a client that merely
bursts (a login, a roster sync) loses nothing and sees no error. We never end
a stream for its rate: on TCP there is no excess to punish, only to slow down.

Idle connections: once no byte has arrived for ``hibernate_after`` seconds,
the connection hibernates its parser (:meth:`StreamParser.hibernate
<server.xmpp.stream.StreamParser.hibernate>`): it drops lxml's ~11 KiB and
rebuilds it from the stream header on the next read, ~15 µs. After every read
that cost would be paid per read on a busy connection; after a second of quiet
it is paid at most once a second, and only by a connection that was idle.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from .ratelimit import TokenBucket
from .trace import Tracer
from ..xmpp.errors import StreamError
from ..xmpp.negotiation import TLS_NS
from ..xmpp.stanza import E, stream_error
from ..xmpp.stream import (DEFAULT_MAX_ATTRIBUTES, DEFAULT_MAX_ELEMENTS, STREAM_FOOTER,
                          Element, StreamClosed, StreamOpened, StreamParser, serialize)

log = logging.getLogger("xferd.net")

READ_SIZE = 64 * 1024
TLS_HANDSHAKE_TIMEOUT = 30.0


#: read size of asyncio's TLS layer (see small_tls_buffers)
TLS_READ_SIZE = 4 * 1024


def small_tls_buffers() -> None:
    """Make asyncio's TLS layer allocate a 4 KiB read buffer per connection.

    ``asyncio.sslproto.SSLProtocol`` (3.11+) gives every TLS connection a
    zero-filled ``max_size`` (256 KiB) buffer for the socket and reads up to
    as much plaintext at a time. Most stanzas are far smaller than 4 KiB and
    a bigger one just takes a few reads, while the buffer is memory every
    idle connection holds: 256 KiB made xferd's idle connection cost 299 KiB
    (Prosody's: 47 KiB); 16 KiB, 59 KiB; 4 KiB, 47 KiB (scripts/bench, idle).
    There is no public knob; the class attribute is what the stdlib reads,
    so we set it once, process-wide, before any connection exists. (OpenSSL
    itself already releases its record buffers while a connection is idle:
    SSL_MODE_RELEASE_BUFFERS is in its default mode.)
    """
    from asyncio import sslproto
    if getattr(sslproto.SSLProtocol, "max_size", 0) > TLS_READ_SIZE:
        sslproto.SSLProtocol.max_size = TLS_READ_SIZE


class StreamConnection:
    #: the stream's default namespace and how elements are written on it
    content_ns = "jabber:client"
    rehome_from: str | None = None

    #: bytes we let pile up for a peer that does not read before cutting it off
    max_output = 4 * 1024 * 1024

    #: seconds without input after which the parser hibernates; None: never
    hibernate_after: float | None = 1.0

    #: the object this connection's socket, parser and reading now serve
    #: (XEP-0198 resumption moves them into the resumed session); set, this
    #: object stops reading and leaves the socket open for its new owner, to
    #: which it hands the events it read but did not handle (:attr:`pending`)
    handed_over: "StreamConnection | None" = None
    pending: tuple | None = None

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 label: str, max_stanza_size: int, max_depth: int,
                 max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
                 max_elements: int = DEFAULT_MAX_ELEMENTS,
                 stanza_rate: float = 0.0, stanza_burst: int = 1):
        self.reader = reader
        self.writer = writer
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attributes = max_attributes
        self.max_elements = max_elements
        self.tracer = Tracer(label)
        self.parser = self.new_parser()
        self.header_sent = False
        self.closing = False
        #: stanzas per second this peer may make us handle (None: no limit)
        self.bucket = TokenBucket(stanza_rate, stanza_burst) if stanza_rate > 0 else None
        self._throttled = False             # logged once per connection
        self._tls_handshake = False         # a STARTTLS handshake is under way
        self._out: list[bytes] = []         # written at the end of this loop turn
        self._input_at = 0.0                # loop time of the last read
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- for subclasses ----------------------------------------------------------------
    def on_header(self, opened: StreamOpened) -> None:
        raise NotImplementedError

    async def on_element(self, element) -> None:
        raise NotImplementedError

    def send_header(self) -> None:
        """Send our ``<stream:stream>`` (subclasses know the addresses)."""
        raise NotImplementedError

    async def teardown(self) -> None:
        """Called once when the connection is over, whatever ended it."""

    # -- reading ---------------------------------------------------------------------------
    def new_parser(self) -> StreamParser:
        return StreamParser(self.content_ns, max_stanza_size=self.max_stanza_size,
                            max_depth=self.max_depth, max_attributes=self.max_attributes,
                            max_elements=self.max_elements)

    async def run(self) -> None:
        """Read until the stream ends; then tear down."""
        await self.serve()

    async def serve(self, pending: tuple | None = None) -> None:
        """The reading loop. *pending*: ``(parser, events)`` read on this
        connection but not handled yet by the object that handed the
        connection over to this one (see :attr:`handed_over`)."""
        loop = asyncio.get_running_loop()
        try:
            if pending is not None:
                await self._handle(*pending)
            while not self.closing:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                self._input_at = loop.time()
                if self._idle_timer is None and self.hibernate_after is not None:
                    self._idle_timer = loop.call_at(self._input_at + self.hibernate_after,
                                                    self._idle)
                await self._receive(data)
        except StreamError as exc:
            log.info("%r: stream error %s (%s)", self, exc.condition, exc.text)
            self.stream_error(exc.condition, exc.text)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("%r: connection lost: %s", self, exc)
        except Exception:
            log.exception("%r: internal error", self)
            self.stream_error("internal-server-error")
        finally:
            self.closing = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            await self.teardown()
            if self.handed_over is None:
                self.parser.release()   # frees its memory now, not at the next full GC
                await self._close_transport()

    def _idle(self) -> None:
        """The idle timer (see the module docstring). It is armed once per
        quiet period, not per read: when it fires early because more input
        came, it waits for the rest of the period from the last read."""
        self._idle_timer = None
        if self.closing:
            return
        loop = asyncio.get_running_loop()
        due = self._input_at + self.hibernate_after
        if loop.time() < due:
            self._idle_timer = loop.call_at(due, self._idle)
        else:
            # refused mid-stanza: the read that completes it arms the timer again
            self.parser.hibernate()

    async def _receive(self, data: bytes) -> None:
        parser = self.parser
        try:
            events = parser.feed(data)
        except StreamError as exc:
            # stanzas that arrived whole before the bad bytes are still served
            await self._handle(parser, exc.events)
            raise
        await self._handle(parser, events)

    async def _handle(self, parser: StreamParser, events: list) -> None:
        for i, event in enumerate(events):
            if isinstance(event, Element):
                await self._pace()
                if self.closing:
                    return
                self.tracer.element("recv", event.element)
                await self.on_element(event.element)
                if self.handed_over is not None:
                    self.pending = (parser, events[i + 1:])
                    return
            elif isinstance(event, StreamOpened):
                attrs = (("to", event.to), ("from", event.from_), ("id", event.id),
                         ("version", event.version))
                self.tracer.text("recv", "<stream:stream" + "".join(
                    f" {name}='{value}'" for name, value in attrs if value is not None) + ">")
                self.on_header(event)
            elif isinstance(event, StreamClosed):
                self.close()
                return
            if self.parser is not parser or self.closing:
                return      # stream restarted (or closed): the rest belonged to the old one

    async def _pace(self) -> None:
        """Wait for this element's token (see the module docstring): while we
        wait, nothing more is read from the peer."""
        if self.bucket is None:
            return
        delay = self.bucket.take()
        if delay:
            if not self._throttled:
                self._throttled = True
                log.info("%r: more than %g stanzas/s: slowing down its reading",
                         self, self.bucket.rate)
            await asyncio.sleep(delay)

    def restart(self) -> None:
        """RFC 6120 §4.3.3: a fresh stream on the same connection."""
        old, self.parser = self.parser, self.new_parser()
        old.release()
        self.header_sent = False

    # -- writing ------------------------------------------------------------------------------
    def send(self, element) -> None:
        """Queue *element* on this stream (no await: routing never blocks on a peer)."""
        if self.closing or self.writer.transport is None:
            return
        self.tracer.element("send", element,
                            (self.rehome_from, self.content_ns) if self.rehome_from else None)
        self._queue(serialize(element, stream_ns=self.content_ns,
                              rehome_from=self.rehome_from).encode())

    def _queue(self, data: bytes) -> None:
        """Everything sent in one turn of the event loop goes out as one write
        (see :meth:`flush`)."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(data)

    def flush(self) -> None:
        """Write what was queued: one TLS record and one system call for all
        the stanzas of a loop turn instead of one each (a presence broadcast,
        a burst of messages), which halves the reads a client makes per
        message. Called at the end of the turn, and before anything that
        must come after the queued bytes (closing, the TLS handshake)."""
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        if self._transport_gone():
            return
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > self.max_output:
            self._cut_off()

    def _cut_off(self) -> None:
        """A peer that does not read must not make us hold unbounded memory:
        drop the connection at once (a stream error would only queue behind)."""
        log.warning("%r: the peer is not reading (%d bytes queued): cutting it off",
                    self, self.writer.transport.get_write_buffer_size())
        self.closing = True
        self.writer.transport.abort()

    def send_raw(self, text: str) -> None:
        if not self._transport_gone():
            self.tracer.text("send", text)
            self._queue(text.encode())

    def stream_error(self, condition: str, text: str | None = None, detail=None) -> None:
        """Send ``<stream:error/>`` and close (RFC 6120 §4.9.1.1); *detail*:
        an application-specific condition element to add (§4.9.4)."""
        if self.closing:
            return
        if self._tls_handshake:
            # after <proceed/> the peer expects TLS records: XML written now
            # would be a protocol violation of its own. Just hang up.
            log.info("%r: %s during the TLS handshake: closing", self, condition)
            self.closing = True
            if self.writer.transport is not None:
                self.writer.transport.abort()
            return
        if not self.header_sent:
            self.send_header()           # §4.9.1.2: header first, even for errors
        error = stream_error(condition, text)
        if detail is not None:
            error.append(detail)
        self.send(error)
        self.close()

    def close(self) -> None:
        """End the stream politely and close the connection."""
        if self.closing:
            return
        self.send_raw(STREAM_FOOTER)
        self.closing = True
        self.flush()
        if not self._transport_gone():
            self.writer.close()

    def _transport_gone(self) -> bool:
        # after a failed TLS upgrade asyncio can leave the writer without a transport
        return self.writer.transport is None or self.writer.is_closing()

    async def refuse(self, condition: str, text: str) -> None:
        """Turn a new connection away before reading a byte of it: our header,
        the stream error and the footer at once, as RFC 6120 §4.9.1.2 has it
        for errors at stream setup, without waiting for the peer's header."""
        log.info("%r: refused: %s (%s)", self, condition, text)
        self.stream_error(condition, text)
        await self._close_transport()

    async def _close_transport(self) -> None:
        self.flush()
        if self.writer.transport is None:
            return
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Xferd.stop() already waited for this peer and gave up: waiting
            # again (a TLS close the peer never answers) held the stop for 5 s more
            self.writer.transport.abort()
            return
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (Exception, asyncio.CancelledError):
            if self.writer.transport is not None:
                self.writer.transport.abort()

    # -- TLS ---------------------------------------------------------------------------------
    secure = False

    async def accept_starttls(self, context: ssl.SSLContext) -> None:
        """The receiving side of STARTTLS (RFC 6120 §5.4.2): ``<proceed/>``,
        handshake, and a stream restart; the caller sets its phase after."""
        if self.secure:
            raise StreamError("policy-violation", "TLS is already in place")
        if self.unread_bytes():
            raise StreamError("policy-violation", "data after <starttls/>")
        self.send(E(f"{{{TLS_NS}}}proceed"))
        if await self.upgrade_tls(context):
            self.secure = True
            self.restart()

    def unread_bytes(self) -> int:
        """Bytes received but not yet parsed. StreamReader keeps them in
        ``_buffer`` and has no public accessor; STARTTLS must see none (data
        sent before the handshake would pass for encrypted: CVE-2011-0411)."""
        return len(getattr(self.reader, "_buffer", b""))

    async def upgrade_tls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> bool:
        """Switch to TLS in place (RFC 6120 §5.4.3.3); False if the handshake failed."""
        self.flush()                     # <proceed/> (or <starttls/>) before the handshake
        self._tls_handshake = True
        try:
            await self.writer.start_tls(context, server_hostname=server_hostname,
                                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            log.info("%r: TLS handshake failed: %s", self, exc)
            self.closing = True
            if not self._transport_gone():
                self.writer.close()
            return False
        finally:
            self._tls_handshake = False
        return not self.closing
